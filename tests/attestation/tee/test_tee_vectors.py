"""Every real evidence file verifies; corrupted copies fail at a named step."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from tee_vectors import (
    BEFORE_VLEK_EXPIRY,
    NOW,
    Vector,
    all_vectors,
    flip_bit,
    pem,
    read,
    replace_pck_chain,
    with_vector,
)

from attestation.errors import VerificationError
from attestation.tee import snp, tdx
from attestation.tee.certs import cert_sha256, common_name, load_certificates, spki_sha256
from attestation.tee.policy import Policy

VECTORS = all_vectors()
BY_NAME = {v.name: v for v in VECTORS}
IDS = [v.name for v in VECTORS]
SIGNATURE_STEP = {
    "snp": "snp.6 report signature",
    "tdx": "tdx.8 quote signature",
    "gpu": "gpu.5 report signature",
}
PARSE_STEP = {"snp": "snp.1 parse report", "tdx": "tdx.1 parse quote", "gpu": "gpu.1 parse report"}


def failing_step(
    v: Vector, evidence: bytes | None = None, certs: tuple[bytes, ...] | None = None
) -> str:
    with pytest.raises(VerificationError) as info:
        v.verify(evidence, certs)
    assert info.value.detail, "a failure must say what failed"
    return info.value.step


def test_vector_set_covers_every_pass_file_of_the_readme() -> None:
    kinds = {v.kind for v in VECTORS}
    assert kinds == {"snp", "tdx", "gpu"}
    assert len(VECTORS) == 24  # 7 SNP (one chain variant), 7 TDX, 2 + 8 NVIDIA


@pytest.mark.parametrize("vector", VECTORS, ids=IDS)
def test_every_pass_vector_verifies_through_all_steps(vector: Vector) -> None:
    steps = vector.verify()
    numbers = [s.split(" ", 1)[0] for s in steps]
    assert numbers == [f"{vector.kind}.{i}" for i in range(1, len(steps) + 1)]
    assert len(steps) == {"snp": 8, "tdx": 10, "gpu": 8}[vector.kind]


@pytest.mark.parametrize("vector", VECTORS, ids=IDS)
def test_one_flipped_bit_in_the_signed_bytes_breaks_the_signature(vector: Vector) -> None:
    for bit in (0, 7):
        assert (
            failing_step(vector, flip_bit(vector.evidence, vector.body_offset, bit))
            == (SIGNATURE_STEP[vector.kind])
        )
        assert (
            failing_step(vector, flip_bit(vector.evidence, vector.sig_offset, bit))
            == (SIGNATURE_STEP[vector.kind])
        )


@pytest.mark.parametrize("vector", VECTORS, ids=IDS)
def test_truncated_copies_fail_to_parse(vector: Vector) -> None:
    for length in (0, 1, len(vector.evidence) // 2, vector.end - 1):
        assert failing_step(vector, vector.evidence[:length]) == PARSE_STEP[vector.kind]


# A genuine certificate of the same kind from another vector, put in place of the right one.
SNP_SWAPS = {
    "snp-go-sev-guest-milan": (
        "vcek",
        "snp/virtee-sev_milan/vcek_milan.der",
        "snp.5 key matches report",
    ),
    "snp-virtee-milan": (
        "vcek",
        "snp/trustee_milan_vcek/test-vcek.der",
        "snp.5 key matches report",
    ),
    "snp-virtee-milan-builtin-roots": (
        "vcek",
        "snp/go-sev-guest_milan/vcek.der",
        "snp.5 key matches report",
    ),
    "snp-trustee-milan-vcek": (
        "vcek",
        "snp/virtee-sev_milan/vcek_milan.der",
        "snp.5 key matches report",
    ),
    "snp-trustee-milan-vlek": (
        "chain",
        "snp/amd_roots/ask_ark_genoa_vlek.pem",
        "snp.3 certificate chain",
    ),
    "snp-azure-genoa-hcl": (
        "vcek",
        "snp/virtee-sev_milan/vcek_milan.der",
        "snp.3 certificate chain",
    ),
    "snp-azure-milan-hcl": ("vcek", "snp/go-sev-guest_milan/vcek.der", "snp.5 key matches report"),
}


def _swap_snp(v: Vector) -> tuple[tuple[bytes, ...], str]:
    what, donor_path, step = SNP_SWAPS[v.name]
    certs = [c for blob in v.certs for c in pem(blob)]
    donor = read(donor_path)
    if what == "vcek":
        kept = [c for c in certs if common_name(load_certificates(c)[0]) != "SEV-VCEK"]
        assert len(kept) == len(certs) - 1
        return (*kept, donor), step
    leaf = [c for c in certs if common_name(load_certificates(c)[0]) == "SEV-VLEK"]
    return (*leaf, donor), step


def _swap_tdx(v: Vector) -> tuple[bytes, str]:
    quote = tdx.parse_quote(v.evidence)
    own = pem(quote.pck_chain)
    for other in VECTORS:
        if other.kind != "tdx":
            continue
        donor_leaf = pem(tdx.parse_quote(other.evidence).pck_chain)[0]
        if donor_leaf != own[0]:
            return replace_pck_chain(
                v.evidence, donor_leaf + b"".join(own[1:])
            ), donor_leaf.decode()
    raise AssertionError("no TDX vector with a different PCK certificate")


@pytest.mark.parametrize("vector", VECTORS, ids=IDS)
def test_a_swapped_certificate_is_rejected_at_a_named_step(vector: Vector) -> None:
    if vector.kind == "snp":
        certs, step = _swap_snp(vector)
        assert failing_step(vector, certs=certs) == step
    elif vector.kind == "tdx":
        evidence, _ = _swap_tdx(vector)
        assert failing_step(vector, evidence) in ("tdx.3 PCK chain", "tdx.5 QE report signature")
    else:
        own = pem(vector.certs[0])
        donor = next(
            pem(o.certs[0])[0] for o in VECTORS if o.kind == "gpu" and pem(o.certs[0])[0] != own[0]
        )
        assert failing_step(vector, certs=(donor + b"".join(own[1:]),)) == "gpu.3 certificate chain"


def test_debug_snp_report_is_rejected_by_the_default_policy() -> None:
    v = BY_NAME["snp-go-sev-guest-milan"]
    with pytest.raises(VerificationError) as info:
        snp.verify_snp(v.evidence, list(v.certs), policy=Policy.default(), at=NOW)
    assert info.value.step == "snp.8 policy"
    assert "debug" in info.value.detail
    assert len(info.value.passed) == 7


def test_debug_tdx_quote_is_rejected_by_the_default_policy() -> None:
    v = BY_NAME["tdx-trustee-v4-debug"]
    with pytest.raises(VerificationError) as info:
        tdx.verify_tdx(v.evidence, policy=Policy.default(), at=NOW)
    assert info.value.step == "tdx.10 policy"


def test_expired_vlek_is_rejected_today_and_accepted_before_it_expired() -> None:
    v = BY_NAME["snp-trustee-milan-vlek"]
    today = datetime.now(UTC)
    with pytest.raises(VerificationError) as info:
        snp.verify_snp(v.evidence, list(v.certs), policy=Policy.default(), at=today)
    assert info.value.step == "snp.4 validity dates"
    assert "expired on 2025-12-10" in info.value.detail
    verified = snp.verify_snp(
        v.evidence, list(v.certs), policy=Policy.default(), at=BEFORE_VLEK_EXPIRY
    )
    assert (verified.product, verified.key_kind, verified.report.version) == ("Milan", "VLEK", 3)


def test_products_and_keys_are_identified() -> None:
    got = {
        name: (r.product, r.key_kind, r.report.version)
        for name in ("snp-go-sev-guest-milan", "snp-azure-genoa-hcl", "snp-azure-milan-hcl")
        for r in [
            snp.verify_snp(
                BY_NAME[name].evidence,
                list(BY_NAME[name].certs),
                policy=BY_NAME[name].policy(),
                at=NOW,
            )
        ]
    }
    assert got == {
        "snp-go-sev-guest-milan": ("Milan", "VCEK", 2),
        "snp-azure-genoa-hcl": ("Genoa", "VCEK", 3),
        "snp-azure-milan-hcl": ("Milan", "VCEK", 2),
    }


@pytest.mark.parametrize(
    "chain", ["milan", "genoa", "turin_vcek", "milan_vlek", "genoa_vlek", "turin_vlek"]
)
def test_amd_root_chains_match_the_pins_and_sign_their_intermediates(chain: str) -> None:
    intermediate, ark = load_certificates(read(f"snp/amd_roots/ask_ark_{chain}.pem"))
    product = snp.PINNED_ARKS[spki_sha256(ark)]
    assert chain.startswith(product.lower())
    intermediate.verify_directly_issued_by(ark)
    ark.verify_directly_issued_by(ark)


@pytest.mark.filterwarnings("ignore:Parsed a serial number")
def test_serial_number_zero_certificates_still_load() -> None:
    # AMD issues VCEKs with serial 0; a cryptography upgrade that refuses them must fail here.
    (vcek,) = load_certificates(read("snp/go-sev-guest_milan/vcek.der"))
    assert vcek.serial_number == 0


def test_pins_match_the_shipped_roots() -> None:
    (intel,) = load_certificates(read("tdx/go-tdx-guest/trusted_root.pem"))
    assert cert_sha256(intel) == tdx.INTEL_ROOT_SHA256
    from attestation.tee import nvidia

    (nv,) = load_certificates(read("nvidia/nvtrust/verifier_device_root.pem"))
    assert cert_sha256(nv) == nvidia.NVIDIA_ROOT_SHA256


def _impostor(like: x509.Certificate) -> bytes:
    """A self-signed certificate with the same subject as `like`, from a fresh key."""
    key = ec.generate_private_key(ec.SECP384R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(like.subject)
        .issuer_name(like.subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1))
        .sign(key, hashes.SHA384())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def test_wrong_roots_are_rejected_naming_the_root_step() -> None:
    v = BY_NAME["snp-virtee-milan"]
    certs = [c for blob in v.certs for c in pem(blob)]
    ark = next(c for c in certs if common_name(load_certificates(c)[0]) == "ARK-Milan")
    fake = [c for c in certs if c != ark] + [_impostor(load_certificates(ark)[0])]
    with pytest.raises(VerificationError, match="no ARK matching a pinned AMD root"):
        v.verify(certs=tuple(fake))

    t = BY_NAME["tdx-trustee-v5"]
    chain = pem(tdx.parse_quote(t.evidence).pck_chain)
    bad = replace_pck_chain(
        t.evidence, b"".join(chain[:2]) + _impostor(load_certificates(chain[2])[0])
    )
    with pytest.raises(VerificationError) as info:
        t.verify(bad)
    assert info.value.step == "tdx.2 pinned Intel root"

    g = BY_NAME["nvidia-nvtrust-hopper"]
    gchain = pem(g.certs[0])
    with pytest.raises(VerificationError) as info:
        g.verify(certs=(b"".join(gchain[:4]) + _impostor(load_certificates(gchain[4])[0]),))
    assert info.value.step == "gpu.2 pinned NVIDIA root"


def test_gpu_nonce_that_does_not_match_is_rejected() -> None:
    v = BY_NAME["nvidia-ppcie-gpu0"]
    assert v.nonce is not None
    with pytest.raises(VerificationError) as info:
        with_vector(v, nonce=bytes(32)).verify()
    assert info.value.step == "gpu.7 nonce"


def test_report_data_that_does_not_match_the_binding_is_rejected() -> None:
    v = BY_NAME["snp-virtee-milan"]
    with pytest.raises(VerificationError) as info:
        snp.verify_snp(v.evidence, list(v.certs), policy=v.policy(), at=NOW, report_data=bytes(64))
    assert info.value.step == "snp.7 binding"
    t = BY_NAME["tdx-trustee-v5"]
    with pytest.raises(VerificationError) as info:
        tdx.verify_tdx(t.evidence, policy=t.policy(), at=NOW, report_data=bytes(64))
    assert info.value.step == "tdx.9 binding"
    matching = tdx.parse_quote(t.evidence).report_data
    tdx.verify_tdx(t.evidence, policy=t.policy(), at=NOW, report_data=matching)


def test_azure_user_data_binds_a_document_hash() -> None:
    v = BY_NAME["snp-azure-genoa-hcl"]
    zeros = bytes(64)  # the recorded HCL report carries 64 zero bytes of user data
    snp.verify_snp(v.evidence, list(v.certs), policy=v.policy(), at=NOW, report_data=zeros)
    with pytest.raises(VerificationError) as info:
        snp.verify_snp(v.evidence, list(v.certs), policy=v.policy(), at=NOW, report_data=b"\1" * 64)
    assert info.value.step == "snp.7 binding"


def test_measurement_allow_list_and_minimum_tcb_are_enforced() -> None:
    v = BY_NAME["snp-virtee-milan"]
    measurement = snp.parse_report(v.evidence).measurement.hex()
    allowed = Policy(measurements=frozenset({measurement}))
    snp.verify_snp(v.evidence, list(v.certs), policy=allowed, at=NOW)
    other = Policy(measurements=frozenset({"00" * 48}))
    with pytest.raises(VerificationError, match="not in the allow-list"):
        snp.verify_snp(v.evidence, list(v.certs), policy=other, at=NOW)
    high_tcb = Policy(any_measurement=True, snp_min_tcb={"microcode": 200})
    with pytest.raises(VerificationError, match="microcode SVN 115 is below the minimum 200"):
        snp.verify_snp(v.evidence, list(v.certs), policy=high_tcb, at=NOW)
    t = BY_NAME["tdx-trustee-v5"]
    mrtd = tdx.parse_quote(t.evidence).mr_td.hex()
    tdx.verify_tdx(t.evidence, policy=Policy(measurements=frozenset({mrtd})), at=NOW)
    with pytest.raises(VerificationError, match="TEE_TCB_SVN"):
        tdx.verify_tdx(
            t.evidence, policy=Policy(any_measurement=True, tdx_min_tee_tcb_svn=(255,)), at=NOW
        )
    g = BY_NAME["nvidia-nvtrust-hopper"]
    from attestation.tee import nvidia

    digest = nvidia.parse_report(g.evidence).measurement_digest
    nvidia.verify_gpu(
        g.evidence, g.certs[0], policy=Policy(measurements=frozenset({digest})), at=NOW
    )
    with pytest.raises(VerificationError, match="not in the allow-list"):
        nvidia.verify_gpu(g.evidence, g.certs[0], policy=other, at=NOW)


def test_unsupported_versions_are_named() -> None:
    v = BY_NAME["snp-virtee-milan"]
    report = bytearray(v.evidence)
    report[0] = 7
    with pytest.raises(VerificationError, match="SNP report version 7 is not supported"):
        v.verify(bytes(report))
    t = BY_NAME["tdx-trustee-v5"]
    quote = bytearray(t.evidence)
    quote[0] = 6
    with pytest.raises(VerificationError, match="quote version 6 is not supported"):
        t.verify(bytes(quote))


def test_gpu_report_must_name_the_leaf_certificates_firmware() -> None:
    from attestation.tee import nvidia

    v = BY_NAME["nvidia-trustee-coco"]
    other = BY_NAME["nvidia-nvtrust-hopper"]
    # Both leaves chain to the pinned root; only the FWID ties a leaf to this report.
    fwid = nvidia.parse_report(v.evidence).opaque_field(20)
    assert fwid is not None and fwid not in nvidia._leaf_fwids(load_certificates(other.certs[0])[0])
    assert fwid in nvidia._leaf_fwids(load_certificates(v.certs[0])[0])
