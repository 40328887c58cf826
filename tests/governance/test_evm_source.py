"""The controller's events and status as directives (a fake reader stands in for web3)."""

from __future__ import annotations

import logging

import pytest
from gov_fakes import FakeClock

from attestation.canonical import HashRule, json_sha256
from governance.directives import ALL_CAMPAIGNS, CampaignState, DirectiveKind, campaign_key
from governance.errors import SourceError
from governance.evm_source import ControllerEvent, CrossCheckedReader, EvmSource
from governance.watcher import Watcher

NODE = "0x" + "ab" * 20


class FakeReader:
    def __init__(self) -> None:
        self.block = 0
        self.logs: list[ControllerEvent] = []
        self.status: dict[bytes, int] = {}
        self.hashes: dict[bytes, bytes] = {}
        self.inactive: set[str] = set()
        self.final: int | None = None
        self.ranges: list[tuple[int, int]] = []

    def head(self) -> int:
        return self.block

    def events(self, from_block: int, to_block: int) -> list[ControllerEvent]:
        self.ranges.append((from_block, to_block))
        return [e for e in self.logs if from_block <= e.block <= to_block]

    def effective_status(self, key: bytes) -> int:
        return self.status.get(key, 0)

    def config_hash(self, key: bytes) -> bytes:
        return self.hashes.get(key, bytes(32))

    def node_active(self, node: str) -> bool:
        return node.lower() not in self.inactive

    def issued(self, tx_hash: str) -> bool:
        return True

    def finalized(self) -> int | None:
        return self.final

    def emit(self, name: str, tx: str = "0x01", **args: object) -> None:
        self.logs.append(ControllerEvent(name, self.block, len(self.logs), tx, args))


def issued(reader: FakeReader, campaign: str, epoch: int, directive: int, tx: str = "0x01") -> None:
    reader.emit(
        "DirectiveIssued",
        tx,
        campaignId=campaign_key(campaign),
        epoch=epoch,
        directive=directive,
        status=0,
        by="0x" + "00" * 20,
    )


def test_controller_events_become_directives_with_their_block() -> None:
    reader = FakeReader()
    reader.block = 5
    issued(reader, "c-00000001", 1, 0)  # Register
    issued(reader, "c-00000001", 2, 1)  # Pause
    reader.emit("GlobalPauseSet", paused=True, globalEpoch=1, by="0x" + "00" * 20)
    src = EvmSource(reader, rescan_blocks=2)
    reading = src.read()
    kinds = [(d.kind, d.campaign_id, d.epoch, d.height) for d in reading.directives]
    assert kinds == [
        (DirectiveKind.RESUME, "c-00000001", 1, 5),
        (DirectiveKind.PAUSE, "c-00000001", 2, 5),
        (DirectiveKind.PAUSE, ALL_CAMPAIGNS, 1, 5),
    ]
    assert reading.head == 5
    reader.block = 9
    src.read()
    assert reader.ranges[-1] == (4, 9)  # re-scans the last blocks for reorgs


def test_a_fork_takes_parent_position_and_config_from_its_forked_event() -> None:
    reader = FakeReader()
    reader.block = 3
    reader.emit(
        "CampaignForked",
        "0xf0",
        parent=campaign_key("c-00000001"),
        child=campaign_key("wider"),
        fromTreeSize=40,
        checkpointRoot=b"\x02" * 32,
        configHash=b"\x03" * 32,
        configURI="ipfs://cfg",
        parentPaused=False,
    )
    issued(reader, "wider", 1, 4, tx="0xf0")
    (fork,) = EvmSource(reader).read().directives
    assert fork.kind is DirectiveKind.FORK and fork.campaign_id == "wider"
    assert fork.parent_id == "c-00000001" and fork.from_position == 40
    assert fork.checkpoint_root == b"\x02" * 32
    assert fork.config_hash == b"\x03" * 32 and fork.config_uri == "ipfs://cfg"


CONFIG = {"preset": "quick"}


def _registered(reader: FakeReader, campaign: str, status: int = 1) -> None:
    reader.status[campaign_key(campaign)] = status
    reader.hashes[campaign_key(campaign)] = json_sha256(CONFIG)


def test_revocation_of_this_node_and_status_snapshots_reach_the_watcher() -> None:
    reader = FakeReader()
    _registered(reader, "c-00000001", status=2)  # Paused, with no event seen
    _registered(reader, "c-2")
    src = EvmSource(
        reader, node_address=NODE, campaigns=lambda: {"c-00000001": CONFIG, "c-2": CONFIG}
    )
    w = Watcher([src], clock=FakeClock())
    w.poll()
    assert w.state("c-00000001") is CampaignState.PAUSED and w.allows("c-2")
    reader.inactive.add("0x" + "cd" * 20)
    w.poll()
    assert not w.revoked  # another node
    reader.inactive.add(NODE.lower())  # revoked, or its measurement removed
    w.poll()
    assert w.revoked and w.state("c-2") is CampaignState.PAUSED
    reader.inactive.discard(NODE.lower())  # approved again
    w.poll()
    assert not w.revoked and w.allows("c-2")


def test_a_campaign_runs_only_if_registered_with_this_nodes_config() -> None:
    reader = FakeReader()
    _registered(reader, "c-00000001")
    reader.hashes[campaign_key("c-00000001")] = json_sha256({"preset": "full"})
    watched = {"c-00000001": CONFIG, "c-2": CONFIG}
    w = Watcher([EvmSource(reader, campaigns=lambda: watched)], clock=FakeClock())
    w.poll()
    assert w.state("c-00000001") is CampaignState.PAUSED
    (why,) = w.held("c-00000001")
    assert why.startswith("evm: registered with config hash 0x") and "run the config" in why
    (why,) = w.held("c-2")
    assert "not registered on the controller" in why and "registerCampaign(0x" in why
    _registered(reader, "c-00000001")  # the DAO registers the node's config
    _registered(reader, "c-2")
    w.poll()
    assert w.allows("c-00000001") and w.allows("c-2")
    # A config hash written before RFC 8785 (sorted-keys JSON) still matches.
    reader.hashes[campaign_key("c-2")] = json_sha256(CONFIG, HashRule.SORTED_JSON)
    w.poll()
    assert w.allows("c-2")


def test_a_resume_on_chain_applies_after_the_configured_confirmations() -> None:
    reader = FakeReader()
    src = EvmSource(reader)
    w = Watcher([src], confirmations=3, clock=FakeClock())
    reader.block = 10
    issued(reader, "c-00000001", 2, 1)
    w.poll()
    assert w.state("c-00000001") is CampaignState.PAUSED
    reader.block = 11
    issued(reader, "c-00000001", 3, 2)
    w.poll()
    reader.block = 12
    assert w.poll().applied == ()
    reader.block = 13
    (applied,) = w.poll().applied
    assert applied.directive.kind is DirectiveKind.RESUME and applied.confirmations == 3


def test_events_read_again_by_the_rescan_are_not_reapplied_or_reported() -> None:
    reader = FakeReader()
    w = Watcher([EvmSource(reader, rescan_blocks=5)], clock=FakeClock())
    reader.block = 3
    issued(reader, "c-00000001", 1, 1)
    assert len(w.poll().applied) == 1
    reader.block = 4
    result = w.poll()
    assert result.applied == () and result.ignored == ()


class FilteringReader(FakeReader):
    """An endpoint that hides one campaign's pause: its event and its status."""

    def __init__(self, honest: FakeReader, hidden: str) -> None:
        super().__init__()
        self.honest, self.hidden = honest, campaign_key(hidden)

    def head(self) -> int:
        return self.honest.head()

    def events(self, from_block: int, to_block: int) -> list[ControllerEvent]:
        return [
            e
            for e in self.honest.events(from_block, to_block)
            if bytes(e.args.get("campaignId", b"")) != self.hidden
        ]

    def effective_status(self, key: bytes) -> int:
        return 1 if key == self.hidden else self.honest.effective_status(key)

    def config_hash(self, key: bytes) -> bytes:
        return self.honest.config_hash(key)


def test_a_second_endpoint_catches_a_pause_the_first_one_filters(
    caplog: pytest.LogCaptureFixture,
) -> None:
    honest = FakeReader()
    _registered(honest, "c-00000001")
    liar = FilteringReader(honest, "c-00000001")
    watched = {"c-00000001": CONFIG}
    alone = Watcher([EvmSource(liar, campaigns=lambda: watched)], clock=FakeClock())
    both = Watcher(
        [
            EvmSource(
                CrossCheckedReader([liar, honest], ["liar", "honest"]), campaigns=lambda: watched
            )
        ],
        clock=FakeClock(),
    )
    honest.block = 5
    issued(honest, "c-00000001", 1, 1, tx="0xpause")
    honest.status[campaign_key("c-00000001")] = 2
    alone.poll()
    assert alone.allows("c-00000001")  # one lying endpoint hides the pause
    with caplog.at_level(logging.ERROR, logger="governance.evm_source"):
        (applied,) = both.poll().applied
    assert applied.directive.kind is DirectiveKind.PAUSE and applied.directive.ref == "0xpause"
    assert both.state("c-00000001") is CampaignState.PAUSED
    missed = [r for r in caplog.records if "did not return a controller event" in r.getMessage()]
    assert [getattr(r, "endpoint", None) for r in missed] == ["liar"]


def test_cross_checked_endpoints_must_agree_on_a_config_hash() -> None:
    a, b = FakeReader(), FakeReader()
    _registered(a, "c-00000001")
    _registered(b, "c-00000001")
    b.hashes[campaign_key("c-00000001")] = bytes(32)
    reader = CrossCheckedReader([a, b], ["a", "b"])
    with pytest.raises(SourceError, match="disagree on campaign 0x"):
        reader.config_hash(campaign_key("c-00000001"))


def test_a_resume_waits_for_the_endpoints_finalized_block_too() -> None:
    reader = FakeReader()
    w = Watcher([EvmSource(reader)], confirmations=2, clock=FakeClock())
    reader.block, reader.final = 10, 5
    issued(reader, "c-00000001", 1, 1)  # paused at block 10
    w.poll()
    reader.block = 11
    issued(reader, "c-00000001", 2, 2)  # resumed at block 11
    reader.block = 20  # deep enough by confirmations ...
    assert w.poll().applied == ()  # ... but not final yet
    assert w.state("c-00000001") is CampaignState.PAUSED
    reader.final = 11
    (applied,) = w.poll().applied
    assert applied.directive.kind is DirectiveKind.RESUME
