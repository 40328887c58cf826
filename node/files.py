"""Output files written whole or not at all."""

from __future__ import annotations

import contextlib
from pathlib import Path

from node.errors import ConfigError


def write_file(path: Path, data: bytes, *, mkdir: bool = False) -> None:
    """Write an output file whole or not at all (a temporary file beside it, renamed);
    ConfigError names the path when it cannot be written."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        if mkdir:
            path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        tmp.replace(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
