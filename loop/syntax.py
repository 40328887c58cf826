"""Python source to a syntax tree, one thread at a time.

CPython 3.11 keeps the recursion depth of its C-to-Python AST conversion in
interpreter-wide state, so two threads parsing at once (two campaigns under one daemon)
can fail with "AST constructor recursion depth mismatch" (CPython gh-106905, fixed in
3.12). Every `ast.parse` of the loop goes through `parse`, which holds one lock, and so
does `class_source` (`inspect.getsource` parses the whole module to find a class).
"""

from __future__ import annotations

import ast
import inspect
import threading

_lock = threading.Lock()


def parse(source: str, filename: str = "<unknown>") -> ast.Module:
    """`ast.parse(source, filename)`, never concurrently with another `parse`."""
    with _lock:
        return ast.parse(source, filename=filename)


def class_source(cls: type) -> str:
    """`inspect.getsource(cls)`, never concurrently with a `parse`."""
    with _lock:
        return inspect.getsource(cls)
