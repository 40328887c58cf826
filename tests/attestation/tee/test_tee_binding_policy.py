"""The binding document, the policy, and evidence file detection: bad input is named."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import rfc8785
from tee_vectors import read

from attestation.errors import VerificationError
from attestation.tee.binding import BindingDocument, icp_principal_error, icp_principal_text
from attestation.tee.errors import BindingError, PolicyError
from attestation.tee.evidence import EvidenceBundle, detect, verify_file
from attestation.tee.policy import Policy

NOW = datetime.now(UTC)
FIELDS = {
    "log_public_key": "ab" * 32,
    "evm_address": "0x" + "Ab" * 20,
    "icp_principal": "rrkah-fqaaa-aaaaa-aaaaq-cai",
    "config_hash": "cd" * 32,
}


def test_report_data_is_sha256_of_canonical_json_then_zeros() -> None:
    doc = BindingDocument.fresh(**FIELDS)
    expected = hashlib.sha256(rfc8785.dumps(doc.to_json())).digest()
    assert doc.report_data() == expected + bytes(32)
    assert doc.gpu_nonce() == expected
    assert json.loads(doc.canonical()) == doc.to_json()
    assert list(json.loads(doc.canonical())) == sorted(doc.to_json())  # keys sorted
    assert BindingDocument.fresh(**FIELDS).nonce != doc.nonce


def test_binding_document_round_trips_and_names_bad_fields() -> None:
    doc = BindingDocument.fresh(**FIELDS)
    assert BindingDocument.from_json(doc.to_json()) == doc
    with pytest.raises(BindingError, match="missing nonce"):
        BindingDocument.from_json({k: v for k, v in doc.to_json().items() if k != "nonce"})
    with pytest.raises(BindingError, match="unknown extra"):
        BindingDocument.from_json({**doc.to_json(), "extra": "x"})
    with pytest.raises(BindingError, match="type"):
        BindingDocument.from_json({**doc.to_json(), "type": "other/v9"})
    for field, bad in (
        ("log_public_key", "AB" * 32),
        ("evm_address", "0x1234"),
        ("icp_principal", "rrkah-fqaaa-aaaaa-aaaaq-caj"),
        ("config_hash", "00"),
    ):
        with pytest.raises(BindingError, match=field):
            BindingDocument.fresh(**{**FIELDS, field: bad})


def test_icp_principal_text_form_is_checked() -> None:
    assert icp_principal_text(b"\x04") == "2vxsx-fae"  # the anonymous principal
    assert icp_principal_error("aaaaa-aa") is None  # the management canister
    assert icp_principal_error("2vxsx-fae") is None
    assert icp_principal_error("2vxsx-fab") == "checksum does not match"
    assert icp_principal_error("2VXSX-FAE") is not None


def test_empty_policy_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="empty policy"):
        Policy.from_mapping({})
    with pytest.raises(PolicyError, match="allows no measurement"):
        Policy()
    with pytest.raises(PolicyError, match="allows no measurement"):
        Policy.from_mapping({"allow_debug": False})
    empty = tmp_path / "policy.toml"
    empty.write_text("")
    with pytest.raises(PolicyError, match="empty policy"):
        Policy.load(empty)


def test_policy_files_load_and_bad_keys_are_named(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(
        'measurements = ["' + "AA" * 48 + '"]\n[snp_min_tcb]\nmicrocode = 115\nsnp = 8\n'
    )
    policy = Policy.load(path)
    assert policy.measurements == frozenset({"aa" * 48})
    assert dict(policy.snp_min_tcb) == {"microcode": 115, "snp": 8}
    as_json = tmp_path / "policy.json"
    as_json.write_text(json.dumps({"any_measurement": True, "allow_debug": True}))
    assert Policy.load(as_json).allow_debug
    for data, message in (
        ({"any_measurement": True, "debug": True}, "unknown key"),
        ({"measurements": ["xyz"]}, "64 or 96 lowercase hex"),
        ({"any_measurement": "yes"}, "expected true or false"),
        ({"any_measurement": True, "snp_min_tcb": {"ucode": 1}}, "unknown part 'ucode'"),
        ({"any_measurement": True, "measurements": ["aa" * 32]}, "pick one"),
    ):
        with pytest.raises(PolicyError, match=message):
            Policy.from_mapping(data, "p.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("measurements = [")
    with pytest.raises(PolicyError, match="not a valid policy file"):
        Policy.load(broken)
    with pytest.raises(PolicyError, match="cannot read"):
        Policy.load(tmp_path / "absent.toml")


def test_detection_names_known_kinds_and_rejects_unknown_ones() -> None:
    assert detect(read("snp/go-sev-guest_milan/attestation.bin")) == "snp"
    assert detect(read("snp/trustee_azure_milan/hcl-report.bin")) == "snp"
    assert detect(read("snp/trustee_azure_genoa/evidence-genoa.json")) == "azure-snp-json"
    assert detect(read("tdx/trustee/tdx_quote_5.dat")) == "tdx"
    assert detect(read("nvidia/nvtrust/hopperAttestationReport.txt")) == "nvidia-hex"
    assert detect(read("nvidia/nvtrust/ppcie_gpu_evidence_8xH100.json")) == "nvidia-json"
    for data, message in (
        (read("tdx/trustee/occlum_quote.dat"), "SGX quote"),
        (b'{"format": "someone-else/v2"}', "unknown bundle format"),
        (b'{"a": 1}', "unknown evidence format"),
        (b"{not json", "does not parse"),
        (b"hello world", "not a known evidence format"),
    ):
        with pytest.raises(VerificationError, match=message) as info:
            detect(data)
        assert info.value.step == "input detect format"


def test_raw_snp_report_without_certificates_says_what_to_pass() -> None:
    with pytest.raises(VerificationError, match="--certs"):
        verify_file(read("snp/virtee-sev_milan/report_milan.bin"), policy=Policy.default(), at=NOW)


def test_every_vector_file_verifies_through_verify_file() -> None:
    policy = Policy(allow_debug=True, any_measurement=True)
    cases = [
        (
            "snp/trustee_azure_genoa/evidence-genoa.json",
            ["snp/trustee_azure_genoa/ask_ark_genoa.pem"],
        ),
        ("nvidia/nvtrust/ppcie_gpu_evidence_8xH100.json", []),
        ("nvidia/trustee/hopper_coco_report1.txt", ["nvidia/trustee/hopper_coco_certs1.txt"]),
        ("tdx/go-tdx-guest/tdx_prod_quote_SPR_E4.dat", []),
        ("snp/trustee_azure_milan/hcl-report.bin", ["snp/trustee_azure_milan/vcek.pem"]),
    ]
    for path, certs in cases:
        verdict = verify_file(
            read(path), policy=policy, at=NOW, certificates=[read(c) for c in certs]
        )
        assert verdict.attested and verdict.steps


def test_malformed_bundles_are_named() -> None:
    doc = BindingDocument.fresh(**FIELDS)
    good = EvidenceBundle("none", doc, "now").to_json()
    for change, message in (
        ({"provider": "sgx"}, "unknown provider"),
        ({"provider": "tdx"}, "disagree"),
        ({"report": "***"}, "not valid base64"),
        ({"binding": {}}, "missing"),
    ):
        bad = json.dumps({**good, **change}).encode()
        with pytest.raises(VerificationError, match=message) as info:
            verify_file(bad, policy=Policy.default(), at=NOW)
        assert info.value.step == "bundle.1 binding document"


def test_tee_package_imports_neither_the_node_nor_training() -> None:
    import subprocess
    import sys

    code = (
        "import sys, attestation.tee.collect, attestation.tee.evidence, attestation.tee.nvidia_sdk;"
        "print(sorted(m for m in ('node', 'loop', 'torch', 'kernels') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"
