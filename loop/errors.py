"""The research loop's exception root; each error's docstring says what the caller should do.

A candidate that crashes, times out or scores badly is an outcome (a `FailureClass` in
an `EvalResult`), not an exception; these are for a broken host, bad operator input and
the LLM endpoint. The classes live beside the code that raises them and derive from
`LoopError`. `loop` sits below `node` and cannot import `node.errors`; the CLI catches
`LoopError` beside `AsiNodeError`. Nothing here imports torch: the sandbox's init
imports this module.
"""

from __future__ import annotations


class LoopError(Exception):
    """Root of every error the research loop raises on purpose; the message is for a person.

    Catch it at the outermost layer (the CLI) to show the message; the subclasses say
    whether to fix the host, the input or the settings, or to record it and go on.
    """
