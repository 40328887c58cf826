"""The cognition base: design knowledge from papers, retrieved for the Researcher.

Entries ship with the project (`entries.json`); an operator adds more to a JSON-lines
file of their own (`asi-node cognition add`). Retrieval is BM25 over each entry's text.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from loop.cognition.bm25 import BM25
from loop.errors import LoopError

SHIPPED = "entries.json"
FIELDS = ("source", "title", "topic", "insight", "symptoms", "guidance")


class CognitionError(LoopError):
    """A cognition entry or file is malformed; the message names the entry and field.

    Fix that entry (or the user file) and load it again; nothing was added.
    """


@dataclass(frozen=True)
class Entry:
    """One piece of design knowledge: where it comes from and how to use it here."""

    source: str  # e.g. "arXiv:2406.06484"
    title: str
    topic: str  # linear attention, state space, gating, delta rule, convolution, routing
    insight: str  # the design idea
    symptoms: str  # what it addresses, in our metrics' words (acc_128x32, state_size, ...)
    guidance: str  # how to build it inside the Mixer interface

    def text(self) -> str:
        return " ".join(getattr(self, f) for f in FIELDS)

    def render(self) -> str:
        return (
            f"[{self.source}] {self.title} ({self.topic})\n"
            f"  insight: {self.insight}\n  addresses: {self.symptoms}\n"
            f"  how: {self.guidance}"
        )


def entry_from(data: object, where: str) -> Entry:
    if not isinstance(data, dict):
        raise CognitionError(f"{where}: expected an object with {', '.join(FIELDS)}")
    missing = [f for f in FIELDS if not isinstance(data.get(f), str) or not data[f].strip()]
    if missing:
        raise CognitionError(f"{where}: missing or empty field(s) {', '.join(missing)}")
    extra = sorted(set(data) - set(FIELDS))
    if extra:
        raise CognitionError(f"{where}: unknown field(s) {', '.join(extra)}")
    return Entry(**{f: data[f].strip() for f in FIELDS})


def shipped_entries() -> list[Entry]:
    raw = resources.files("loop.cognition").joinpath(SHIPPED).read_text(encoding="utf-8")
    return [entry_from(d, f"{SHIPPED} entry {i}") for i, d in enumerate(json.loads(raw))]


def read_user_entries(path: Path) -> list[Entry]:
    if not path.exists():
        return []
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CognitionError(f"{path}:{n}: not JSON: {exc.msg}") from None
            out.append(entry_from(data, f"{path}:{n}"))
    return out


def append_user_entry(path: Path, entry: Entry) -> None:
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(asdict(entry), ensure_ascii=False, sort_keys=True) + "\n")


class CognitionBase:
    """Entries plus a BM25 index over them."""

    def __init__(self, entries: Iterable[Entry]) -> None:
        self.entries: tuple[Entry, ...] = tuple(entries)
        self._index = BM25([e.text() for e in self.entries])

    @classmethod
    def load(cls, user_file: Path | None = None) -> CognitionBase:
        extra = read_user_entries(user_file) if user_file is not None else []
        return cls([*shipped_entries(), *extra])

    def search(self, query: str, k: int = 4) -> list[Entry]:
        return [self.entries[i] for i, _ in self._index.top(query, k)]

    def search_scored(self, query: str, k: int = 4) -> Sequence[tuple[Entry, float]]:
        return [(self.entries[i], s) for i, s in self._index.top(query, k)]
