"""The controller's events and status as directives (a fake reader stands in for web3)."""

from __future__ import annotations

from gov_fakes import FakeClock

from governance.directives import ALL_CAMPAIGNS, CampaignState, DirectiveKind, campaign_key
from governance.evm_source import ControllerEvent, EvmSource
from governance.watcher import Watcher

NODE = "0x" + "ab" * 20


class FakeReader:
    def __init__(self) -> None:
        self.block = 0
        self.logs: list[ControllerEvent] = []
        self.status: dict[bytes, int] = {}
        self.ranges: list[tuple[int, int]] = []

    def head(self) -> int:
        return self.block

    def events(self, from_block: int, to_block: int) -> list[ControllerEvent]:
        self.ranges.append((from_block, to_block))
        return [e for e in self.logs if from_block <= e.block <= to_block]

    def effective_status(self, key: bytes) -> int:
        return self.status.get(key, 0)

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


def test_revocation_of_this_node_and_status_snapshots_reach_the_watcher() -> None:
    reader = FakeReader()
    reader.status[campaign_key("c-00000001")] = 2  # Paused, with no event seen
    src = EvmSource(reader, node_address=NODE, campaigns=lambda: ["c-00000001", "c-2"])
    w = Watcher([src], clock=FakeClock())
    w.poll()
    assert w.state("c-00000001") is CampaignState.PAUSED and w.allows("c-2")
    reader.block = 1
    reader.emit("NodeRevoked", node="0x" + "cd" * 20, by="0x" + "00" * 20)
    w.poll()
    assert not w.revoked  # another node
    reader.block = 2
    reader.emit("NodeRevoked", node=NODE.upper().replace("0X", "0x"), by="0x" + "00" * 20)
    w.poll()
    assert w.revoked and w.state("c-2") is CampaignState.STOPPED


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
