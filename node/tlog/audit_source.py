"""Where `asi-node audit` reads a bundle from: a file or a node's HTTP API."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

from node.errors import AsiNodeError

MAX_BUNDLE_BYTES = 2 << 30


class AuditSourceError(AsiNodeError):
    """The bundle could not be read (no such file, node unreachable, HTTP error).

    Check the path or URL; nothing was verified.
    """


def read_source(source: str, timeout_s: float = 60.0) -> bytes:
    if source.startswith(("http://", "https://")):
        url = source.rstrip("/") + "/log/bundle"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as resp:
                return bytes(resp.read(MAX_BUNDLE_BYTES))
        except urllib.error.HTTPError as exc:
            raise AuditSourceError(f"{url} answered HTTP {exc.code}: {exc.reason}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise AuditSourceError(f"cannot fetch {url}: {reason}") from None
    path = Path(source)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise AuditSourceError(f"no bundle at {path}") from None
    except OSError as exc:
        raise AuditSourceError(f"cannot read {path}: {exc.strerror}") from None
