"""Audit findings: verified evidence passes; missing, unattested and bad evidence are flagged."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from fake_tee import FakeAmd, FakeTsmKernel

from attestation.tee import audit, collect
from attestation.tee.binding import BindingDocument
from attestation.tee.evidence import EvidenceBundle
from attestation.tee.policy import Policy

NOW = datetime.now(UTC)
KEY = "ab" * 32


def _binding() -> BindingDocument:
    return BindingDocument.fresh(
        log_public_key=KEY,
        evm_address="0x" + "12" * 20,
        icp_principal="2vxsx-fae",
        config_hash="cd" * 32,
    )


def _bytes(bundle: EvidenceBundle) -> bytes:
    return json.dumps(bundle.to_json()).encode()


def test_missing_and_unattested_nodes_are_flagged() -> None:
    missing = audit.assess(None, log_public_key=KEY, policy=Policy.default(), at=NOW)
    assert missing.flagged and missing.status == "missing"
    none = collect.collect_evidence("none", _binding(), collected_at="now")
    found = audit.assess(_bytes(none), log_public_key=KEY, policy=Policy.default(), at=NOW)
    assert found.flagged and found.status == "unattested"


def test_evidence_for_another_key_or_unknown_root_is_rejected(tmp_path: Path) -> None:
    kernel = FakeTsmKernel(tmp_path / "report", FakeAmd())
    bundle = collect.collect_evidence(
        "sev-snp", _binding(), collected_at="now", tsm_root=kernel.root, fs=kernel
    )
    other_key = audit.assess(
        _bytes(bundle), log_public_key="ef" * 32, policy=Policy.default(), at=NOW
    )
    assert other_key.status == "rejected" and "bundle.1 binding document" in other_key.detail
    # The synthetic chip's ARK is not AMD's: the pinned roots reject it.
    fake_root = audit.assess(_bytes(bundle), log_public_key=KEY, policy=Policy.default(), at=NOW)
    assert fake_root.status == "rejected" and "snp.2 pinned AMD root" in fake_root.detail
    junk = audit.assess(b"\x00junk", log_public_key=KEY, policy=Policy.default(), at=NOW)
    assert junk.status == "rejected"


def test_raw_vendor_evidence_does_not_count_as_a_node_binding() -> None:
    quote = (Path(__file__).parent / "vectors/tdx/trustee/tdx_quote_5.dat").read_bytes()
    finding = audit.assess(quote, log_public_key=KEY, policy=Policy.default(), at=NOW)
    assert finding.status == "rejected"


def test_bound_evidence_from_a_pinned_root_is_verified(tmp_path: Path) -> None:
    amd = FakeAmd()
    kernel = FakeTsmKernel(tmp_path / "report", amd)
    bundle = collect.collect_evidence(
        "sev-snp", _binding(), collected_at="now", tsm_root=kernel.root, fs=kernel
    )
    finding = audit.assess(
        _bytes(bundle), log_public_key=KEY, policy=Policy.default(), at=NOW, pinned_arks=amd.pins
    )
    assert finding.status == "verified" and not finding.flagged
    assert finding.steps[-1].startswith("snp.8 policy")
