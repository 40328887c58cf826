"""Parsers and verifiers never crash on random, truncated or mutated input: they return a
parsed value or raise their own format error / VerificationError, nothing else."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tee_vectors import all_vectors

from attestation.errors import VerificationError
from attestation.tee import evidence, nvidia, snp, tdx
from attestation.tee.policy import Policy

NOW = datetime.now(UTC)
POLICY = Policy(allow_debug=True, any_measurement=True)
VECTORS = all_vectors()
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(st.binary(max_size=6000))
def test_parsers_reject_random_bytes_with_their_own_errors(data: bytes) -> None:
    for parse, error in (
        (snp.parse_report, snp.SnpFormatError),
        (snp.parse_hcl, snp.SnpFormatError),
        (tdx.parse_quote, tdx.TdxFormatError),
        (nvidia.parse_report, nvidia.NvidiaFormatError),
    ):
        with contextlib.suppress(error):
            parse(data)


@FAST
@given(st.binary(max_size=3000))
def test_verify_file_on_random_bytes_only_raises_verification_errors(data: bytes) -> None:
    with pytest.raises(VerificationError):
        evidence.verify_file(data, policy=POLICY, at=NOW, certificates=[b"junk"])


@FAST
@given(st.sampled_from(VECTORS), st.data())
def test_truncated_vectors_only_raise_verification_errors(vector, data) -> None:  # type: ignore[no-untyped-def]
    length = data.draw(st.integers(0, vector.end - 1))
    with pytest.raises(VerificationError):
        vector.verify(vector.evidence[:length])


@FAST
@given(st.sampled_from(VECTORS), st.data())
def test_mutated_vectors_are_rejected_or_verified_never_crash(vector, data) -> None:  # type: ignore[no-untyped-def]
    offset = data.draw(st.integers(0, len(vector.evidence) - 1))
    value = data.draw(st.integers(0, 255))
    mutated = bytearray(vector.evidence)
    unchanged = mutated[offset] == value
    mutated[offset] = value
    try:
        vector.verify(bytes(mutated))
    except VerificationError:
        assert not unchanged
    else:
        # Only an unchanged byte, bytes past the evidence (TDX padding) or the unsigned
        # HCL header version switched to the other known version (1 <-> 2) may pass.
        hcl_version = vector.evidence[:4] == b"HCLA" and offset == 4 and value in (1, 2)
        assert unchanged or offset >= vector.end or hcl_version


@FAST
@given(st.sampled_from([v for v in VECTORS if v.kind != "tdx"]), st.binary(max_size=400))
def test_random_certificates_only_raise_verification_errors(vector, junk) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(VerificationError):
        vector.verify(certs=(junk,))
