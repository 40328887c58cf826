"""Bound and clean text that came out of a sandbox before anything else reads it.

Everything a candidate's run reports (its result's messages, its output tail) was written
by untrusted code and goes on into LLM prompts (the Engineer's repair rounds), the store
and signed records. `scrub` makes such text safe to pass on: control characters and
terminal escapes removed, absolute paths outside the roots the jail showed replaced (with
the source lines a traceback would quote from them), long lines and the whole cut to a
budget. `error_lines` keeps only what reads as an error from free-form output: traceback
blocks and lines that name an error, so prints of data stay behind.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import PurePosixPath

TEXT_CHARS = 4000  # what a scrubbed text keeps, from its end (where a traceback ends)
LINE_CHARS = 1000
HIDDEN_PATH = "<path>"

_ESCAPE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")
_CONTROL = re.compile(r"[^\t\n\x20-\x7e\u00a0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_BIDI = re.compile(r"[\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
# An absolute path: a slash that starts a token (not a/b, 1/2 or a URL's //), then
# name characters and further slashes.
_PATH = re.compile(r"(?<![\w.~/:-])/(?:[\w.@+-]+/?)+")
_FRAME = re.compile(r'^\s*File "([^"]*)", line \d+')
_ERROR_WORDS = re.compile(
    r"error|exception|traceback|warning|killed|abort|fatal|assert|segmentation fault|"
    r"out of memory|cannot allocate|bad_alloc|no space left|\bnan\b|core dumped",
    re.IGNORECASE,
)
_CHAINED = ("During handling of the above exception", "The above exception was the direct")


def _printable(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _ESCAPE.sub("", text)
    return _BIDI.sub("", _CONTROL.sub("", text))


def _known(path: str, roots: tuple[PurePosixPath, ...]) -> bool:
    candidate = PurePosixPath(path)
    if ".." in candidate.parts:
        return False
    return any(candidate == root or root in candidate.parents for root in roots)


def _line(line: str, roots: tuple[PurePosixPath, ...]) -> str:
    line = _PATH.sub(lambda m: m.group(0) if _known(m.group(0), roots) else HIDDEN_PATH, line)
    if len(line) > LINE_CHARS:
        line = line[:LINE_CHARS] + " ..."
    return line


def scrub(text: str, roots: Iterable[str], limit: int = TEXT_CHARS) -> str:
    """`text` printable, with paths outside `roots` replaced, at most about `limit` chars.

    A traceback frame in a file outside the roots keeps its line number but loses its
    file name and the source line quoted under it (a crafted frame could quote any file).
    """
    known = tuple(PurePosixPath(r) for r in roots)
    out: list[str] = []
    hide_source = False
    for raw in _printable(text).split("\n"):
        frame = _FRAME.match(raw)
        if frame is not None:
            hide_source = not _known(frame.group(1), known)
        elif hide_source and raw.startswith("    "):
            continue  # the quoted source line (and its ^^^ markers) of a hidden frame
        else:
            hide_source = False
        out.append(_line(raw, known))
    cleaned = "\n".join(out).strip("\n")
    if len(cleaned) > limit:
        cleaned = "..." + cleaned[-limit:]
    return cleaned


def error_lines(text: str, max_block_lines: int = 40) -> str:
    """Traceback blocks and lines naming an error from `text`; the rest counted, not kept."""
    kept: list[str] = []
    dropped = 0
    block = 0  # lines left in the traceback block being copied
    message = False  # past the frames: the exception's own (maybe multi-line) message
    for line in _printable(text).split("\n"):
        if line.startswith("Traceback (most recent call last)") or line.startswith(_CHAINED):
            block, message = max_block_lines, False
        if block > 0:
            if not line.strip():
                block = 0 if message else block
                if block == 0:
                    continue
            elif not line.startswith(" ") and not line.startswith("Traceback"):
                message = True
            kept.append(line)
            block -= 1
            continue
        if _ERROR_WORDS.search(line):
            kept.append(line)
        elif line.strip():
            dropped += 1
    if dropped:
        kept.append(f"[{dropped} other output line(s) left out]")
    return "\n".join(kept)
