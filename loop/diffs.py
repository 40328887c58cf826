"""Apply a unified diff to a text: how an LLM may answer with a change to its parent's code.

Hunks are located by their context and removed lines (the line numbers in the header are
a hint only: models get them wrong), in order, each after the previous one.
"""

from __future__ import annotations

import re

from loop.errors import LoopError

_HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+\d+(?:,\d+)? @@")


class DiffError(LoopError):
    """The diff is malformed or does not match the text it is applied to.

    The message names the hunk; the researcher records the proposal as failed and asks
    the model again. Applying the same diff again fails the same way.
    """


def apply_unified_diff(original: str, diff: str) -> str:
    """The text after applying `diff`. Raises DiffError naming the hunk that failed."""
    lines = original.splitlines()
    hunks = _hunks(diff)
    if not hunks:
        raise DiffError("no hunks (lines starting with @@) in the diff")
    out: list[str] = []
    pos = 0
    for number, hunk in enumerate(hunks, 1):
        old = [text for tag, text in hunk if tag in " -"]
        new = [text for tag, text in hunk if tag in " +"]
        at = _find(lines, old, pos)
        if at is None:
            first = old[0] if old else ""
            raise DiffError(f"hunk {number} does not match the parent code (near {first!r})")
        out += lines[pos:at] + new
        pos = at + len(old)
    out += lines[pos:]
    return "\n".join(out) + "\n"


def _hunks(diff: str) -> list[list[tuple[str, str]]]:
    hunks: list[list[tuple[str, str]]] = []
    current: list[tuple[str, str]] | None = None
    for line in diff.splitlines():
        if _HUNK.match(line):
            current = []
            hunks.append(current)
        elif line.startswith(("---", "+++")) and (current is None or not current):
            continue
        elif current is not None:
            if line.startswith(("+", "-", " ")):
                current.append((line[0], line[1:]))
            elif line == "":
                current.append((" ", ""))
            elif line.startswith("\\"):
                continue  # "\ No newline at end of file"
            else:
                raise DiffError(f"unexpected line in a hunk: {line[:60]!r}")
    return hunks


def _find(lines: list[str], old: list[str], start: int) -> int | None:
    if not old:
        return start
    for at in range(start, len(lines) - len(old) + 1):
        if lines[at : at + len(old)] == old:
            return at
    stripped = [s.rstrip() for s in old]
    for at in range(start, len(lines) - len(old) + 1):
        if [s.rstrip() for s in lines[at : at + len(old)]] == stripped:
            return at
    return None
