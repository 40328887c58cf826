"""Where `asi-node audit` reads a log from: a bundle file, a node's bundle over HTTP (both
streamed), or, from a kept state, only a node's entries and proofs after it."""

from __future__ import annotations

import itertools
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from attestation.audit import LogState
from attestation.bundle import BundleHead, ConsistencyItem, EntryText
from attestation.errors import FormatError, VerificationError
from node.errors import AsiNodeError

MAX_BUNDLE_BYTES = 2 << 30
PAGE = 1000  # the most entries `/log/entries` serves per call


class AuditSourceError(AsiNodeError):
    """The bundle could not be read (no such file, node unreachable, HTTP error).

    Check the path or URL; nothing was verified.
    """


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def read_source(source: str, timeout_s: float = 60.0) -> bytes:
    """The whole bundle (or file) in memory: for the checks that need every entry."""
    with open_source(source, timeout_s) as stream:
        try:
            return bytes(stream.read(MAX_BUNDLE_BYTES))
        except (OSError, TimeoutError) as exc:
            raise AuditSourceError(f"cannot read {source}: {exc}") from None


def open_source(source: str, timeout_s: float = 60.0, lines: bool = False) -> IO[bytes]:
    """A stream of the bundle at `source`: a file, or a node's `/log/bundle` (with
    `lines`, the line-delimited version a streaming audit reads as it arrives)."""
    if is_url(source):
        url = source.rstrip("/") + "/log/bundle" + ("?format=lines" if lines else "")
        return _get(url, timeout_s)
    path = Path(source)
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise AuditSourceError(f"no bundle at {path}") from None
    except OSError as exc:
        raise AuditSourceError(f"cannot read {path}: {exc.strerror}") from None


def _get(url: str, timeout_s: float) -> IO[bytes]:
    try:
        resp: IO[bytes] = urllib.request.urlopen(url, timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        raise AuditSourceError(f"{url} answered HTTP {exc.code}: {exc.reason}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise AuditSourceError(f"cannot fetch {url}: {reason}") from None
    return resp


def _json(base: str, path: str, timeout_s: float, **params: int) -> Any:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    url = base.rstrip("/") + path + query
    with _get(url, timeout_s) as resp:
        try:
            return json.loads(resp.read(MAX_BUNDLE_BYTES))
        except (OSError, TimeoutError) as exc:
            raise AuditSourceError(f"cannot read {url}: {exc}") from None
        except ValueError:
            raise AuditSourceError(f"{url} did not answer JSON") from None


def latest_origin(url: str, timeout_s: float = 60.0) -> str:
    """The origin line of the node's log (its latest checkpoint names it)."""
    answer = _json(url, "/log/checkpoint", timeout_s)
    if not isinstance(answer, dict) or not isinstance(answer.get("origin"), str):
        raise AuditSourceError(f"{url}/log/checkpoint did not answer a checkpoint")
    return str(answer["origin"])


def increment(
    url: str, kept: LogState, timeout_s: float = 60.0
) -> tuple[BundleHead, Iterator[EntryText]]:
    """The node's log after `kept`, as the auditor's stream: the kept checkpoint and the
    node's newer ones, a consistency proof between each two in turn (the first from the
    kept one), and the entries after the kept size, fetched a page at a time."""
    answer = _json(url, "/log/checkpoints", timeout_s)
    try:
        notes = [(int(c["tree_size"]), str(c["note"])) for c in answer]
    except (TypeError, KeyError, ValueError):
        raise AuditSourceError(f"{url}/log/checkpoints did not answer checkpoints") from None
    size, root = kept.checkpoint.size, kept.checkpoint.root_hash
    if not notes or max(n for n, _ in notes) < size:
        latest = max((n for n, _ in notes), default=0)
        raise VerificationError(
            "checkpoint signatures",
            f"the node's latest checkpoint has size {latest}, below the kept checkpoint "
            f"(size {size}, root {root.hex()}): the log was truncated or rolled back",
        )
    newer = sorted((n, note) for n, note in notes if n > size)
    checkpoints = [kept.note, *(note for _, note in newer)]
    consistency = []
    sizes = [size, *(n for n, _ in newer)]
    for first, second in itertools.pairwise(sizes):
        if first == 0 or first == second:
            continue
        proof = _json(url, "/log/proof/consistency", timeout_s, first=first, second=second)
        try:
            consistency.append(ConsistencyItem.model_validate(proof))
        except ValueError:
            raise AuditSourceError(f"{url} answered a malformed consistency proof") from None
    end = sizes[-1]
    head = BundleHead(
        3,
        kept.schema_version,
        kept.checkpoint.origin,
        kept.public_key,
        tuple(checkpoints),
        tuple(consistency),
        None,
        end - size,
    )
    return head, _pages(url, size, end, timeout_s)


def _pages(url: str, start: int, end: int, timeout_s: float) -> Iterator[EntryText]:
    for at in range(start, end, PAGE):
        page = _json(url, "/log/entries", timeout_s, start=at, end=min(at + PAGE, end))
        if not isinstance(page, list):
            raise FormatError(f"{url}/log/entries did not answer a list of entries")
        for e in page:
            if not (isinstance(e, dict) and type(e.get("index")) is int
                    and isinstance(e.get("envelope"), str)):  # fmt: skip
                raise FormatError(f"{url}/log/entries answered a malformed entry")
            yield e["index"], e["envelope"]
