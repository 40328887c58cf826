"""Parsing from many threads at once: the loop's one `ast.parse` is serialised."""

from __future__ import annotations

import gc
import re
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from loop import syntax

REPO = Path(__file__).resolve().parents[2]
SOURCE = (REPO / "kernels" / "baselines.py").read_text()


class _Finalised:
    """Garbage whose finalizer lets another thread run, as the daemon's threads do."""

    def __del__(self) -> None:
        time.sleep(0)


@pytest.fixture
def thread_switches_inside_parsing() -> Iterator[None]:
    interval, thresholds = sys.getswitchinterval(), gc.get_threshold()
    sys.setswitchinterval(1e-6)
    gc.set_threshold(50, 2, 2)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)
        gc.set_threshold(*thresholds)


def test_four_threads_parsing_at_once_never_break_the_ast_conversion(
    thread_switches_inside_parsing: None,
) -> None:
    # Under these conditions CPython 3.11's own ast.parse fails within a few rounds with
    # "AST constructor recursion depth mismatch"; through syntax.parse it never does.
    errors: list[BaseException] = []

    def parse_with_garbage() -> None:
        for _ in range(30):
            garbage = []
            for _ in range(50):
                item = _Finalised()
                item.cycle = item  # type: ignore[attr-defined]
                garbage.append(item)
            del garbage
            try:
                syntax.parse(SOURCE)
            except BaseException as exc:
                errors.append(exc)
                return

    threads = [threading.Thread(target=parse_with_garbage) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_node_and_loop_parse_source_only_through_syntax_parse() -> None:
    direct = [
        f"{path.relative_to(REPO)}:{n}"
        for package in ("loop", "node", "governance", "attestation", "kernels")
        for path in (REPO / package).rglob("*.py")
        if path.name != "syntax.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\bast\.parse\(", line)
    ]
    assert direct == []
