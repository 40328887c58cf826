"""Test doubles for governance: a scripted directive source, a hand-driven clock, a gated
engineer; `wait_until` for tests that watch another thread or process, and
`edit_config` for tests that set up a node home's config.toml."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from governance.directives import CampaignState, Directive, DirectiveKind, Reading
from governance.errors import SourceError


def wait_until(what: str, check: Callable[[], Any], timeout_s: float = 30.0) -> Any:
    """Poll `check` until it returns something truthy, and return that; AssertionError
    naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def edit_config(home: Path, replacements: Mapping[str, str]) -> None:
    """Replace lines of `<home>/config.toml` as `asi-node init` wrote it (each must be there)."""
    config = home / "config.toml"
    text = config.read_text()
    for old, new in replacements.items():
        assert old in text, old
        text = text.replace(old, new)
    config.write_text(text)


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class FakeSource:
    """Hands out what the test queued; `down` makes reads fail like an unreachable RPC."""

    def __init__(self, name: str = "evm", head: int | None = 100) -> None:
        self._name = name
        self.head = head
        self.queued: list[Directive] = []
        self.states: dict[str, CampaignState] = {}
        self.revoked = False
        self.held: dict[str, str] = {}
        self.reorged: set[tuple[str, int]] = set()  # (campaign, epoch) no longer issued
        self.down = False
        self.reads = 0

    @property
    def name(self) -> str:
        return self._name

    def issue(
        self,
        kind: DirectiveKind,
        campaign: str,
        epoch: int,
        height: int | None = None,
        **kw: object,
    ) -> Directive:
        d = Directive(kind, campaign, epoch, self._name, height=height, **kw)  # type: ignore[arg-type]
        self.queued.append(d)
        return d

    def read(self) -> Reading:
        self.reads += 1
        if self.down:
            raise SourceError(f"{self._name} is down")
        out, self.queued = tuple(self.queued), []
        return Reading(out, self.head, self.revoked, dict(self.states), dict(self.held))

    def still_issued(self, directive: Directive) -> bool:
        return (directive.campaign_id, directive.epoch) not in self.reorged


class GatedEngineer:
    """Trains until released or cancelled, like a sandboxed run: a cancel interrupts it."""

    def __init__(self) -> None:
        import threading

        self.release = threading.Event()
        self.started = threading.Semaphore(0)
        self.jobs: list[str] = []
        self.interrupted: list[str] = []
        self.lock = threading.Lock()

    def run(self, job: object, cancel: object = None) -> object:
        import hashlib

        from loop.engineer import EvalResult
        from loop.outcome import FailureClass

        exp_id: str = job.experiment_id  # type: ignore[attr-defined]
        code: str = job.code  # type: ignore[attr-defined]
        with self.lock:
            self.jobs.append(exp_id)
        self.started.release()
        while not self.release.wait(0.01):
            if cancel is not None and cancel.is_set():  # type: ignore[attr-defined]
                with self.lock:
                    self.interrupted.append(exp_id)
                return EvalResult(FailureClass.INTERRUPTED, "stopped from outside")
        score = 0.3 + int(hashlib.sha256(code.encode()).hexdigest()[:4], 16) / 65535 * 0.5
        sets = ("64x8", "128x16", "128x32", "256x64")
        metrics = {f"acc_{s}": score for s in sets}
        metrics |= {"mean_acc": score, "state_size": 4096.0, "params": 20000.0}
        return EvalResult(None, "", metrics=metrics, timings={"total_s": 1.0})


class FakeGovernor:
    """A Governor in memory: proposals, nonces, votes; records what was relayed."""

    def __init__(self, chain_id: int = 31337) -> None:
        from governance.ballots import GovernorDomain, ProposalInfo, ProposalState

        self._domain = GovernorDomain("DaoGovernor", chain_id, "0x" + "c0" * 20)
        self.controller_address = "0x" + "5c" * 20
        self.infos: dict[int, ProposalInfo] = {
            7: ProposalInfo(7, ProposalState.ACTIVE, 10, 100, 0, 0, 0, "pause x"),
            8: ProposalInfo(8, ProposalState.EXECUTED, 5, 50, 9, 0, 0, "old"),
        }
        self.nonces: dict[str, int] = {}
        self.power: dict[str, int] = {}
        self.voted: set[tuple[int, str]] = set()
        self.relayed: list[object] = []
        self.kept: list[tuple[str, int]] = []

    def domain(self):  # type: ignore[no-untyped-def]
        return self._domain

    def controller(self) -> str:
        return self.controller_address

    def proposals(self):  # type: ignore[no-untyped-def]
        return list(self.infos.values())

    def proposal(self, proposal_id: int):  # type: ignore[no-untyped-def]
        return self.infos.get(proposal_id)

    def nonce(self, voter: str) -> int:
        return self.nonces.get(voter.lower(), 0)

    def has_voted(self, proposal_id: int, voter: str) -> bool:
        return (proposal_id, voter.lower()) in self.voted

    def votes_at(self, voter: str, timepoint: int) -> int:
        return self.power.get(voter.lower(), 0)

    def cast_vote_by_sig(self, ballot) -> str:  # type: ignore[no-untyped-def]
        self.relayed.append(ballot)
        self.voted.add((ballot.proposal_id, ballot.voter.lower()))
        self.nonces[ballot.voter.lower()] = ballot.nonce + 1
        return "0x" + "ee" * 32

    def queue(self, proposal_id: int) -> str:
        self.kept.append(("queue", proposal_id))
        return "0x" + "aa" * 32

    def execute(self, proposal_id: int) -> str:
        self.kept.append(("execute", proposal_id))
        return "0x" + "bb" * 32
