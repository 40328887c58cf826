"""The node's log lines: one per record, with the `extra=` fields a call site attaches.

Call sites log a constant message with their data in `extra=` (STYLE.md); the text
format renders that data after the message as `key=value` pairs, the JSON format writes
one object per line (time, level, logger, message and every field) for a log shipper.
`configure` sets the root logger once, from `[log] level` and `[log] format`.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal

# What every LogRecord carries: anything else on a record came from `extra=`.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}

LogFormat = Literal["text", "json"]


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a call site passed in `extra=`, in the order it passed them."""
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


def _value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return json.dumps(text) if not text or any(c in text for c in ' ="\n') else text


class TextFormatter(logging.Formatter):
    """`2026-12-06 17:40:43 INFO node.x: message key=value key2="two words"`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = fields_of(record)
        if extra:
            pairs = " ".join(f"{k}={_value(v)}" for k, v in extra.items())
            head, sep, rest = line.partition("\n")  # a traceback stays below the fields
            line = f"{head} {pairs}{sep}{rest}"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry |= fields_of(record)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class _NodeHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler `configure` installs (and replaces when called again); it writes to
    whatever `sys.stderr` is when a record comes, not when it was made."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass  # always the current sys.stderr


def configure(level: str | int, fmt: LogFormat = "text") -> None:
    """Log to stderr at `level` in `fmt`. An earlier call's handler is replaced; handlers
    others attached to the root logger (a test harness's) are left alone."""
    handler = _NodeHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in root.handlers[:]:
        if isinstance(old, _NodeHandler):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
