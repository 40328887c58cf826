"""Directives as values: what a governance source tells a node to do with a campaign.

Every source (the EVM `CampaignController`, an SNS) is read through `DirectiveSource`:
one `read()` per poll returns the new directives it has seen and, where the source has
blocks, its head height, so the watcher can count confirmations. Epochs are per source
and per campaign (the controller bumps a campaign's epoch on every directive; an SNS
proposal id grows the same way), so they order one source's directives for a campaign
and are never compared across sources.

Campaign ids on chain are `bytes32`: a node's campaign id (`c-…`, ASCII) left-aligned and
zero-padded (`campaign_key` / `campaign_of_key`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

# The kinds and the all-campaigns name are the log schema's: the node records what it applied.
from attestation.schema import ALL_CAMPAIGNS as ALL_CAMPAIGNS
from attestation.schema import DirectiveKind as DirectiveKind


class CampaignState(StrEnum):
    """What a source wants a campaign to be; the node obeys the most restrictive."""

    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


# Higher is more restrictive: when signals disagree, the highest wins.
RESTRICTIVENESS = {
    DirectiveKind.STOP: 3,
    DirectiveKind.PAUSE: 2,
    DirectiveKind.FORK: 1,
    DirectiveKind.RESUME: 0,
}
STATE_RANK = {CampaignState.RUNNING: 0, CampaignState.PAUSED: 1, CampaignState.STOPPED: 2}
# Restrictive directives apply from the first sighting; the others wait for confirmations.
IMMEDIATE = frozenset({DirectiveKind.PAUSE, DirectiveKind.STOP})


@dataclass(frozen=True)
class Directive:
    """One directive of one source for one campaign (or `ALL_CAMPAIGNS`).

    `campaign_id` is the node's campaign id or name. `height` is the block it was issued
    in (None for a source whose answers are final, such as a certified SNS read). A
    fork's `campaign_id` is the child's name; it names the parent, the size of the
    node's log it starts from (None: its latest) with the log's root at that size, and
    the SHA-256 of the child's config.
    """

    kind: DirectiveKind
    campaign_id: str
    epoch: int
    source: str
    height: int | None = None
    ref: str = ""  # transaction hash or proposal id, for the record
    config_hash: bytes | None = None
    parent_id: str | None = None
    from_position: int | None = None
    checkpoint_root: bytes | None = None
    pause_parent: bool = False
    config_uri: str = ""

    def __post_init__(self) -> None:
        if self.epoch < 1:
            raise ValueError(f"directive epoch must be at least 1, got {self.epoch}")
        if not self.campaign_id:
            raise ValueError("a directive names a campaign (or ALL_CAMPAIGNS)")
        if self.kind is DirectiveKind.FORK:
            if self.parent_id is None or self.parent_id == self.campaign_id:
                raise ValueError("a fork names its parent campaign, other than the child")
            if self.config_hash is None or len(self.config_hash) != 32:
                raise ValueError("a fork names its new config's 32-byte SHA-256")
            if self.from_position is not None and self.from_position < 0:
                raise ValueError("a fork's log position cannot be negative")
            if self.checkpoint_root is not None and len(self.checkpoint_root) != 32:
                raise ValueError("a fork's checkpoint root is a 32-byte Merkle root")

    @property
    def state(self) -> CampaignState:
        """The state this directive puts its campaign in once final. A fork's child starts
        paused (the controller starts it so): it runs after a resume, which governance may
        put in the fork's own proposal."""
        return {
            DirectiveKind.PAUSE: CampaignState.PAUSED,
            DirectiveKind.STOP: CampaignState.STOPPED,
            DirectiveKind.RESUME: CampaignState.RUNNING,
            DirectiveKind.FORK: CampaignState.PAUSED,
        }[self.kind]


@dataclass(frozen=True)
class Reading:
    """One poll of one source: new directives, its head height, whether this node may act
    (`revoked`: revoked, or suspended with its TEE measurement), each watched campaign's
    status as the source holds it, and why a campaign is held that no directive says
    (`held`: not registered, another config; the campaign is paused meanwhile)."""

    directives: tuple[Directive, ...] = ()
    head: int | None = None
    revoked: bool = False
    states: dict[str, CampaignState] = field(default_factory=dict)
    held: dict[str, str] = field(default_factory=dict)
    standing_ref: str = ""  # the transaction that last changed `revoked`, when known
    finalized: int | None = None  # the newest final block, where the source tells it


class DirectiveSource(Protocol):
    """What the watcher polls. `read` raises SourceError when fresh state is unreadable;
    `still_issued` says whether a directive read before is still the source's (a chain
    reorganisation can remove one), and may raise SourceError too."""

    @property
    def name(self) -> str: ...

    def read(self) -> Reading: ...

    def still_issued(self, directive: Directive) -> bool: ...


def most_restrictive(kinds: Iterable[DirectiveKind]) -> DirectiveKind | None:
    """The signal that wins when sources disagree (stop > pause > fork > resume)."""
    return max(kinds, key=RESTRICTIVENESS.__getitem__, default=None)


def strictest(states: Iterable[CampaignState]) -> CampaignState:
    """The most restrictive of `states` (running when there are none)."""
    return max(states, key=STATE_RANK.__getitem__, default=CampaignState.RUNNING)


def campaign_key(campaign_id: str) -> bytes:
    """The controller's bytes32 id of a node campaign id."""
    raw = campaign_id.encode("ascii")
    if not raw or len(raw) > 32 or b"\x00" in raw:
        raise ValueError(f"campaign id {campaign_id!r} does not fit a bytes32 key")
    return raw.ljust(32, b"\x00")


def campaign_of_key(key: bytes) -> str:
    """The node campaign id a bytes32 key names (ValueError if it names none)."""
    if len(key) != 32:
        raise ValueError(f"a campaign key is 32 bytes, got {len(key)}")
    raw = key.rstrip(b"\x00")
    if not raw or b"\x00" in raw:
        raise ValueError(f"campaign key 0x{key.hex()} is not a padded ASCII id")
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        raise ValueError(f"campaign key 0x{key.hex()} is not a padded ASCII id") from None


class QueueSource:
    """Directives handed in by this process (the operator's own, a benchmark's): final
    answers with no blocks, read once each. Thread-safe."""

    def __init__(self, name: str = "local") -> None:
        import threading

        self._name = name
        self._lock = threading.Lock()
        self._queued: list[Directive] = []
        self._epochs: dict[str, int] = {}

    @property
    def name(self) -> str:
        return self._name

    def issue(self, kind: DirectiveKind, campaign_id: str, **fields: object) -> Directive:
        """Queue a directive with the campaign's next epoch of this source."""
        with self._lock:
            epoch = self._epochs.get(campaign_id, 0) + 1
            self._epochs[campaign_id] = epoch
            directive = Directive(kind, campaign_id, epoch, self._name, **fields)  # type: ignore[arg-type]
            self._queued.append(directive)
            return directive

    def read(self) -> Reading:
        with self._lock:
            out, self._queued = tuple(self._queued), []
        return Reading(out)

    def still_issued(self, directive: Directive) -> bool:
        return True  # what this process was told stays told
