"""SNS proposals as governance directives: the ICP source for the directive watcher.

An SNS governs a campaign through generic nervous-system functions registered for the
purpose (one function id per directive kind). Once such a proposal is executed, its
payload, Candid `record { campaign_id : text; directive : text; config_sha256 : opt blob }`,
becomes a directive. Pause and stop apply from a query answer at once (the most
restrictive signal wins and needs no confirmation); resume and fork apply only after
the proposal has been read again through an update call, whose reply the IC certifies,
and that certified payload hashes to the same value as the one first read.

The watcher reads it through `SnsSource`, a `DirectiveSource`; nothing here imports
ic-py. The directive kinds and their order live in `governance.directives`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from governance.directives import (
    RESTRICTIVENESS,
    Directive,
    DirectiveKind,
    Reading,
    most_restrictive,
)
from governance.errors import SourceError
from governance.icp import IcpError, IcpReplyError, SnsProposal, decode_directive_payload

log = logging.getLogger(__name__)


NEEDS_CERTIFIED = frozenset({DirectiveKind.RESUME, DirectiveKind.FORK})


@dataclass(frozen=True)
class SnsDirective:
    proposal_id: int
    kind: DirectiveKind
    campaign_id: str
    payload_sha256: bytes
    config_sha256: bytes | None
    executed_at_s: int
    certified: bool
    source: str = "sns"


@dataclass(frozen=True)
class RejectedProposal:
    """An executed directive proposal the node refused to act on, and why."""

    proposal_id: int
    reason: str


class ProposalReader(Protocol):
    def list_proposals(self, limit: int = 50, before: int | None = None) -> list[SnsProposal]: ...

    def get_proposal(self, proposal_id: int, *, certified: bool) -> SnsProposal: ...


class SnsDirectiveSource:
    """Turns newly executed directive proposals into directives, oldest first."""

    def __init__(
        self,
        reader: ProposalReader,
        functions: Mapping[int, DirectiveKind],
        *,
        after_proposal: int = 0,
        page: int = 50,
    ) -> None:
        if not functions:
            raise ValueError("no SNS function ids are mapped to directives")
        self.reader = reader
        self.functions = dict(functions)
        self.floor = after_proposal  # every proposal up to here is final and handled
        self.page = page
        self.handled: set[int] = set()
        self.rejected: list[RejectedProposal] = []

    def _recent(self) -> list[SnsProposal]:
        found: list[SnsProposal] = []
        before: int | None = None
        while True:
            batch = self.reader.list_proposals(limit=self.page, before=before)
            found.extend(p for p in batch if p.id > self.floor)
            if len(batch) < self.page or min(p.id for p in batch) <= self.floor + 1:
                return sorted(found, key=lambda p: p.id)
            before = min(p.id for p in batch)

    def poll(self) -> list[SnsDirective]:
        """New directives since the last poll (IcpError if the SNS cannot be read)."""
        directives: list[SnsDirective] = []
        proposals = self._recent()
        handled: set[int] = set()  # kept only if the whole poll succeeds: a certified read
        for proposal in proposals:  # that fails (IcpError) leaves it for the next poll
            relevant = proposal.function_id in self.functions
            if not relevant or proposal.id in self.handled:
                continue
            if proposal.executed_s > 0:
                directive = self._directive(proposal)
                handled.add(proposal.id)
                if directive is not None:
                    directives.append(directive)
            elif proposal.failed_s > 0:
                handled.add(proposal.id)  # adopted but failed to execute: nothing to obey
        self.handled |= handled
        for proposal in proposals:
            # Advance past settled proposals only: an open directive proposal (or one
            # adopted and not yet executed) must be seen again on the next poll.
            if proposal.function_id in self.functions and proposal.id not in self.handled:
                break
            self.floor = proposal.id
        return directives

    def _reject(self, proposal: SnsProposal, reason: str) -> None:
        self.rejected.append(RejectedProposal(proposal.id, reason))
        log.warning("sns proposal refused", extra={"proposal": proposal.id, "reason": reason})

    def _directive(self, proposal: SnsProposal) -> SnsDirective | None:
        kind = self.functions[proposal.function_id or 0]
        if proposal.payload is None:
            self._reject(proposal, "no payload")
            return None
        try:
            campaign, name, config = decode_directive_payload(proposal.payload)
        except IcpReplyError as exc:
            self._reject(proposal, f"payload: {exc}")
            return None
        if name != kind.value:
            self._reject(
                proposal, f"function {proposal.function_id} is {kind}, payload says {name}"
            )
            return None
        if not campaign:
            self._reject(proposal, "payload names no campaign")
            return None
        if kind is DirectiveKind.FORK and (config is None or len(config) != 32):
            self._reject(proposal, "a fork payload needs the child config's 32-byte SHA-256")
            return None
        digest = hashlib.sha256(proposal.payload).digest()
        certified = proposal.certified
        if kind in NEEDS_CERTIFIED and not certified:
            again = self.reader.get_proposal(proposal.id, certified=True)
            if again.executed_s == 0 or again.payload is None:
                self._reject(proposal, "the certified read does not show it executed")
                return None
            if hashlib.sha256(again.payload).digest() != digest:
                self._reject(proposal, "the certified payload differs from the queried one")
                return None
            certified = again.certified
            if not certified:
                self._reject(proposal, "the reader gave no certified answer")
                return None
        return SnsDirective(
            proposal_id=proposal.id,
            kind=kind,
            campaign_id=campaign,
            payload_sha256=digest,
            config_sha256=config,
            executed_at_s=proposal.executed_s,
            certified=certified,
        )


__all__ = [
    "NEEDS_CERTIFIED",
    "RESTRICTIVENESS",
    "DirectiveKind",
    "ProposalReader",
    "RejectedProposal",
    "SnsDirective",
    "SnsDirectiveSource",
    "most_restrictive",
]


class SnsSource:
    """The SNS as a `DirectiveSource`: executed (and, for resume/fork, certified) proposals.

    An SNS answer is final once executed, so its directives carry no height and need no
    block confirmations; the proposal id orders them (as the epoch).
    """

    def __init__(self, sns: SnsDirectiveSource, name: str = "sns") -> None:
        self.sns = sns
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    def still_issued(self, directive: Directive) -> bool:
        return True  # an executed proposal stays executed

    def read(self) -> Reading:
        try:
            found = self.sns.poll()
        except IcpError as exc:
            raise SourceError(f"the SNS could not be read: {exc}") from exc
        directives = []
        for d in found:
            kind = DirectiveKind(d.kind.value)
            if kind is DirectiveKind.FORK:
                # An SNS fork payload names the parent and the child's config, no
                # position or child: the child starts from the parent's latest state,
                # named after the proposal.
                directive = Directive(
                    kind,
                    f"{d.campaign_id}-fork-{d.proposal_id}",
                    d.proposal_id,
                    self._name,
                    ref=f"proposal {d.proposal_id}",
                    config_hash=d.config_sha256,
                    parent_id=d.campaign_id,
                )
            else:
                directive = Directive(
                    kind, d.campaign_id, d.proposal_id, self._name, ref=f"proposal {d.proposal_id}"
                )
            directives.append(directive)
        return Reading(tuple(directives))
