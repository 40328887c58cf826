"""What this node keeps of each peer it follows, under `<home>/peers/`.

Per peer (a directory named by the hash of its URL): `status.json`, the follower's view
(state, reason, backoff, the records still to import), written whole by rename; and
`state/`, the auditor's kept state of the peer's log (`node.tlog.audit_state.StateDir`),
written only after an audit passed. Files rather than tables: this is the auditor's
state, kept as `asi-node audit --state` keeps it, and forgetting a peer is removing its
directory.
"""

from __future__ import annotations

import hashlib
import shutil
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from node.errors import AsiNodeError
from node.files import write_file
from node.tlog.audit_state import StateDir

PEERS_DIR = "peers"
STATUS_FILE = "status.json"
STATE_DIR = "state"


class PeerStateError(AsiNodeError):
    """A peer's status file cannot be read.

    Run `asi-node network forget URL` to follow that peer again from scratch.
    """


class PeerState(StrEnum):
    NEW = "new"  # never synced
    OK = "ok"  # its log passed the audit at the last sync
    QUARANTINED = "quarantined"  # the last sync failed a check: nothing of it was imported
    FLAGGED = "flagged"  # it rewrote its history: refused until an operator forgets it
    UNREACHABLE = "unreachable"  # retried after `retry_at`


class PendingImport(BaseModel):
    """A verified experiment record of a peer, still to import (at most so many a sync)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    leaf_index: int
    leaf_hash: str  # hex RFC 6962 leaf hash of the entry (SHA-256 of 0x00 || envelope)
    experiment_id: str
    campaign_id: str  # the peer's campaign
    config_hash: str
    code_digest: str
    name: str
    motivation: str
    fitness: float | None


class PeerStatus(BaseModel):
    """The follower's view of one peer."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str
    state: PeerState = PeerState.NEW
    reason: str = ""
    origin: str | None = None  # the log followed (its checkpoints' origin line)
    key_fingerprint: str | None = None  # its key, as first seen (trust on first use)
    size: int = 0  # the kept checkpoint's size
    failures: int = 0  # unreachable in a row
    retry_at: datetime | None = None
    last_sync_at: datetime | None = None
    imported: int = 0
    dropped: int = 0  # verified records not imported: over max_pending_imports
    pending: tuple[PendingImport, ...] = ()


def peer_url(url: str) -> str:
    return url.strip().rstrip("/")


class PeerBook:
    """The peers' directories under a node home."""

    def __init__(self, home: Path) -> None:
        self.path = Path(home) / PEERS_DIR

    def _dir(self, url: str) -> Path:
        return self.path / hashlib.sha256(peer_url(url).encode()).hexdigest()[:24]

    def status(self, url: str) -> PeerStatus:
        """The kept status of the peer at `url` (state NEW if none is kept)."""
        path = self._dir(url) / STATUS_FILE
        try:
            return PeerStatus.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            return PeerStatus(url=peer_url(url))
        except (OSError, ValidationError) as exc:
            raise PeerStateError(
                f"the status of peer {url} in {path} cannot be read ({exc}); "
                f"`asi-node network forget {url}` follows it again from scratch"
            ) from None

    def save(self, status: PeerStatus) -> None:
        path = self._dir(status.url) / STATUS_FILE
        write_file(path, status.model_dump_json(indent=2).encode(), mkdir=True)

    def states(self, url: str) -> StateDir:
        """The kept audit state of the peer's log (the directory is made if absent)."""
        path = self._dir(url) / STATE_DIR
        path.mkdir(parents=True, exist_ok=True)
        return StateDir.open(path)

    def known(self) -> list[PeerStatus]:
        """Every peer with a kept status, by URL."""
        if not self.path.is_dir():
            return []
        found = [self.status_at(d) for d in self.path.iterdir() if (d / STATUS_FILE).exists()]
        return sorted(found, key=lambda s: s.url)

    def status_at(self, directory: Path) -> PeerStatus:
        try:
            return PeerStatus.model_validate_json((directory / STATUS_FILE).read_bytes())
        except (OSError, ValidationError) as exc:
            raise PeerStateError(f"{directory / STATUS_FILE} cannot be read ({exc})") from None

    def forget(self, url: str) -> bool:
        """Remove what is kept of the peer (a flag included); False if nothing was."""
        directory = self._dir(url)
        if not directory.exists():
            return False
        shutil.rmtree(directory)
        return True
