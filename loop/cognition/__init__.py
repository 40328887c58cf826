"""The cognition base: paper knowledge for the Researcher, with BM25 retrieval.

- `entries.json`: the shipped entries (source, design insight, symptoms, guidance).
- `bm25`: tokeniser, Okapi BM25 and a cosine text similarity.
- `base`: entries, the user's own file, the index.
"""

from loop.cognition.base import (
    CognitionBase,
    CognitionError,
    Entry,
    append_user_entry,
    entry_from,
    read_user_entries,
    shipped_entries,
)
from loop.cognition.bm25 import BM25, similarity, tokens

__all__ = [
    "BM25",
    "CognitionBase",
    "CognitionError",
    "Entry",
    "append_user_entry",
    "entry_from",
    "read_user_entries",
    "shipped_entries",
    "similarity",
    "tokens",
]
