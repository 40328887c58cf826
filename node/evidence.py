"""The node's TEE evidence: collected on this machine, bound to the node's keys, written
where the API publishes it and appended to the node's log as an `attestation` event.

`attest collect` calls `collect_and_log` when the operator asks; the daemon calls
`collect_at_start` before it runs anything, so with `[attestation] provider` set the log
carries evidence before its first experiment, and a node set for a TEE that cannot
produce evidence refuses to start, naming what is missing. On Ray, `log_worker_evidence`
logs each worker machine's evidence, collected there over the same kind of binding.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from node.errors import ConfigError

if TYPE_CHECKING:
    from attestation.keys import NodeKey
    from attestation.tee.binding import BindingDocument
    from attestation.tee.evidence import EvidenceBundle
    from node.campaign.ray_engineer import RayEngineer
    from node.settings import Settings
    from node.tlog.log import NodeLog


class AttestedNode(Protocol):
    """What evidence needs of a node (node.runtime.Node): its settings, key and log."""

    settings: Settings

    def node_key(self) -> NodeKey: ...
    def log(self) -> NodeLog: ...


@dataclass(frozen=True)
class Collected:
    """Evidence collected and logged: the bundle, its log entry and where it was written."""

    bundle: EvidenceBundle
    entry: int
    node_id: str
    path: Path

    def describe(self) -> str:
        if self.bundle.provider == "none":
            return "provider none: no TEE evidence; this node is UNATTESTED and says so"
        return f"collected {self.bundle.provider} evidence ({len(self.bundle.gpus)} GPU report(s))"


def binding_maker(
    node: AttestedNode, *, evm_address: str | None = None, icp_principal: str | None = None
) -> Callable[[], BindingDocument]:
    """Fresh binding documents (a new nonce each) of the node's log key, EVM address
    (default: its chain key's), ICP principal (default: its own identity, created if
    absent) and config hash."""
    import rfc8785

    from attestation.tee.binding import BindingDocument
    from governance.chain import address_of
    from node.anchoring.chain_home import load_key

    settings = node.settings
    home = Path(settings.home)
    if evm_address is None:
        evm_address = address_of(load_key(home))
    if icp_principal is None:
        from governance.icp import NodeIdentity

        icp_principal = NodeIdentity.load_or_create(
            home / settings.icp.identity_path
        ).principal_text
    config = settings.model_dump(mode="json", exclude={"home"})
    fields = {
        "log_public_key": node.node_key().public.raw.hex(),
        "evm_address": evm_address,
        "icp_principal": icp_principal,
        "config_hash": hashlib.sha256(rfc8785.dumps(config)).hexdigest(),
    }
    return lambda: BindingDocument.fresh(**fields)


def log_evidence(node: AttestedNode, evidence: Mapping[str, Any], reason: str | None = None) -> int:
    """Append an evidence bundle (JSON) to the node's log as an `attestation` event."""
    from attestation.schema import NodeEventKind
    from node.tlog.records import EVENT_KIND, event_statement

    tlog = node.log()
    extra = {"reason": reason} if reason is not None else {}
    return tlog.append(
        EVENT_KIND,
        event_statement(tlog.node_id, NodeEventKind.ATTESTATION, evidence=evidence, **extra),
    )


def collect_and_log(
    node: AttestedNode,
    provider: str,
    *,
    evm_address: str | None = None,
    icp_principal: str | None = None,
    gpus: bool = False,
    out: Path | None = None,
) -> Collected:
    """Collect `provider`'s evidence on this machine over a fresh binding
    (`binding_maker`), write the bundle to `out` (default: where the API publishes it)
    and log it. TeeError (attestation.tee.errors) when this machine cannot produce it."""
    from attestation.tee.collect import collect_evidence
    from node.api.attestation import evidence_path
    from node.files import write_file

    section = node.settings.attestation
    bundle = collect_evidence(
        provider,
        binding_maker(node, evm_address=evm_address, icp_principal=icp_principal)(),
        collected_at=datetime.now(UTC).isoformat(timespec="seconds"),
        tsm_root=Path(section.tsm_path),
        sev_device=Path(section.sev_guest_device),
        gpus=gpus,
    )
    path = out or evidence_path(node.settings)
    write_file(path, (json.dumps(bundle.to_json(), indent=2) + "\n").encode(), mkdir=True)
    entry = log_evidence(node, bundle.to_json())
    tlog = node.log()
    tlog.checkpoint()
    return Collected(bundle, entry, tlog.node_id, path)


def log_worker_evidence(node: AttestedNode, engineer: RayEngineer) -> list[int]:
    """Each Ray node's evidence (`[attestation] provider`; "none" says plainly that the
    machine is unattested), collected there over a fresh binding of this node's keys and
    appended to this node's log; the entries' indices."""
    section = node.settings.attestation
    workers = engineer.attest_workers(binding_maker(node), section.provider, section.model_dump())
    entries = [log_evidence(node, w.evidence, f"ray worker {w.ray_node}") for w in workers]
    node.log().checkpoint()
    return entries


def collect_at_start(node: AttestedNode) -> Collected | None:
    """With `[attestation] provider` set, the daemon's start-up evidence, bound to the
    node's chain key's address; None for provider "none". ConfigError, naming what is
    missing, when this machine cannot produce the evidence: the node does not start."""
    from attestation.tee.errors import TeeError

    section = node.settings.attestation
    if not section.under_tee:
        return None
    try:
        return collect_and_log(node, section.provider, gpus=section.gpus)
    except TeeError as exc:
        raise ConfigError(
            f'[attestation] provider is "{section.provider}", but this machine gave no '
            f"evidence: {exc}. Run the node inside a confidential VM as the README's "
            'contributor section shows, or set provider = "none" to run unattested '
            "(records then say so)"
        ) from None
