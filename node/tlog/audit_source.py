"""Where `asi-node audit` reads a log from: a bundle file, a node's bundle over HTTP (both
streamed), or, from a kept state, only a node's entries and proofs after it."""

from __future__ import annotations

import base64
import itertools
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

from attestation.audit import LogState
from attestation.bundle import BundleHead, ConsistencyItem, EntryText
from attestation.errors import FormatError, VerificationError
from node.errors import AsiNodeError

if TYPE_CHECKING:
    from node.tlog.log import LogView

MAX_BUNDLE_BYTES = 2 << 30
PAGE = 1000  # the most entries `/log/entries` serves per call


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


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


def fetch_json(base: str, path: str, timeout_s: float = 60.0) -> Any:
    """The JSON a node's API answers at `path` (AuditSourceError if it cannot be read)."""
    return _json(base, path, timeout_s)


def latest_origin(url: str, timeout_s: float = 60.0) -> str:
    """The origin line of the node's log (its latest checkpoint names it)."""
    answer = _json(url, "/log/checkpoint", timeout_s)
    if not isinstance(answer, dict) or not isinstance(answer.get("origin"), str):
        raise AuditSourceError(f"{url}/log/checkpoint did not answer a checkpoint")
    return str(answer["origin"])


class LogReader(Protocol):
    """What an incremental audit reads of a node's log: its checkpoints' notes, the
    consistency proof between two sizes, and its entries (a node over HTTP, or a node's
    own LogView in-process)."""

    name: str

    def checkpoint_notes(self) -> list[tuple[int, str]]: ...
    def consistency(self, first: int, second: int) -> ConsistencyItem: ...
    def entries(self, start: int, end: int) -> Iterator[EntryText]: ...


class HttpLog:
    """A node's log through its HTTP API (`/log/...`)."""

    def __init__(self, url: str, timeout_s: float = 60.0) -> None:
        self.name = url
        self.timeout_s = timeout_s

    def checkpoint_notes(self) -> list[tuple[int, str]]:
        answer = _json(self.name, "/log/checkpoints", self.timeout_s)
        try:
            return [(int(c["tree_size"]), str(c["note"])) for c in answer]
        except (TypeError, KeyError, ValueError):
            raise AuditSourceError(
                f"{self.name}/log/checkpoints did not answer checkpoints"
            ) from None

    def consistency(self, first: int, second: int) -> ConsistencyItem:
        proof = _json(
            self.name, "/log/proof/consistency", self.timeout_s, first=first, second=second
        )
        try:
            return ConsistencyItem.model_validate(proof)
        except ValueError:
            raise AuditSourceError(f"{self.name} answered a malformed consistency proof") from None

    def entries(self, start: int, end: int) -> Iterator[EntryText]:
        return _pages(self.name, start, end, self.timeout_s)


class ViewLog:
    """A node's own log, read in-process (the API's audit of its node's log)."""

    def __init__(self, view: LogView, name: str = "this node's log") -> None:
        self.view = view
        self.name = name

    def checkpoint_notes(self) -> list[tuple[int, str]]:
        return [(cp.tree_size, cp.note) for cp in self.view.checkpoints()]

    def consistency(self, first: int, second: int) -> ConsistencyItem:
        proof = self.view.consistency_proof(first, second)
        return ConsistencyItem(first=first, second=second, proof=[_b64(h) for h in proof])

    def entries(self, start: int, end: int) -> Iterator[EntryText]:
        for at in range(start, end, PAGE):
            for e in self.view.entries(at, min(at + PAGE, end)):
                yield e.index, _b64(e.envelope)


def increment(
    url: str, kept: LogState, timeout_s: float = 60.0
) -> tuple[BundleHead, Iterator[EntryText]]:
    """`increment_from` a node's log over HTTP."""
    return increment_from(HttpLog(url, timeout_s), kept)


def increment_from(
    log: LogReader, kept: LogState, upto: int | None = None
) -> tuple[BundleHead, Iterator[EntryText]]:
    """The log after `kept`, as the auditor's stream: the kept checkpoint and the newer
    ones (up to size `upto`, if given), a consistency proof between each two in turn (the
    first from the kept one), and the entries after the kept size, read a page at a time."""
    notes = [(n, note) for n, note in log.checkpoint_notes() if upto is None or n <= upto]
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
    sizes = [size, *(n for n, _ in newer)]
    consistency = [
        log.consistency(first, second)
        for first, second in itertools.pairwise(sizes)
        if first != 0 and first != second
    ]
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
    return head, log.entries(size, end)


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
