"""Collection through a configfs-tsm tree that behaves like the kernel's, the sev-guest
ioctl, and the `none` provider; collected evidence verifies end to end."""

from __future__ import annotations

import ctypes
import errno
import struct
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fake_tee import FakeAmd, FakeTsmKernel

from attestation.errors import VerificationError
from attestation.tee import collect, snp
from attestation.tee.binding import BindingDocument
from attestation.tee.errors import CollectionError
from attestation.tee.evidence import EvidenceBundle, verify_bundle
from attestation.tee.policy import Policy

NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def amd() -> FakeAmd:
    return FakeAmd()


@pytest.fixture
def binding() -> BindingDocument:
    return BindingDocument.fresh(
        log_public_key="ab" * 32,
        evm_address="0x" + "12" * 20,
        icp_principal="2vxsx-fae",
        config_hash="cd" * 32,
    )


@pytest.fixture
def kernel(tmp_path: Path, amd: FakeAmd) -> FakeTsmKernel:
    return FakeTsmKernel(tmp_path / "tsm" / "report", amd)


def test_configfs_tsm_report_carries_report_data_and_entry_is_removed(
    kernel: FakeTsmKernel,
) -> None:
    data = bytes(range(64))
    got = collect.collect_tsm(data, root=kernel.root, fs=kernel)
    assert got.provider == "sev-snp"
    assert snp.parse_report(got.report).report_data == data
    assert got.generation == 1
    assert got.auxblob
    assert list(kernel.root.iterdir()) == []


def test_collected_snp_bundle_verifies_end_to_end_with_its_pins(
    kernel: FakeTsmKernel, amd: FakeAmd, binding: BindingDocument
) -> None:
    bundle = collect.collect_evidence(
        "sev-snp", binding, collected_at="now", tsm_root=kernel.root, fs=kernel
    )
    assert snp.parse_report(bundle.report).report_data == binding.report_data()
    again = EvidenceBundle.from_json(bundle.to_json())
    verdict = verify_bundle(again, policy=Policy.default(), at=NOW, pinned_arks=amd.pins)
    assert verdict.attested
    assert "snp.7 binding: REPORT_DATA = SHA-256(binding document) || 0^32" in verdict.steps


def test_collected_bundle_from_an_unknown_root_fails_at_the_root_step(
    kernel: FakeTsmKernel, binding: BindingDocument
) -> None:
    bundle = collect.collect_evidence(
        "sev-snp", binding, collected_at="now", tsm_root=kernel.root, fs=kernel
    )
    with pytest.raises(VerificationError) as info:
        verify_bundle(bundle, policy=Policy.default(), at=NOW)
    assert info.value.step == "snp.2 pinned AMD root"


def test_binding_document_that_does_not_match_the_report_is_rejected(
    kernel: FakeTsmKernel, amd: FakeAmd, binding: BindingDocument
) -> None:
    bundle = collect.collect_evidence(
        "sev-snp", binding, collected_at="now", tsm_root=kernel.root, fs=kernel
    )
    other = BindingDocument.fresh(
        log_public_key=binding.log_public_key,
        evm_address=binding.evm_address,
        icp_principal=binding.icp_principal,
        config_hash=binding.config_hash,
    )
    swapped = EvidenceBundle(
        "sev-snp", other, "now", report=bundle.report, certificates=bundle.certificates
    )
    with pytest.raises(VerificationError) as info:
        verify_bundle(swapped, policy=Policy.default(), at=NOW, pinned_arks=amd.pins)
    assert info.value.step == "snp.7 binding"
    assert "does not match the binding document" in info.value.detail


def test_busy_interface_is_retried_then_reported(kernel: FakeTsmKernel) -> None:
    kernel.busy = 1
    collect.collect_tsm(bytes(64), root=kernel.root, fs=kernel)
    assert kernel.report_reads == 2
    kernel.busy = 10
    with pytest.raises(CollectionError, match=r"EBUSY.*gave up after 3 attempts"):
        collect.collect_tsm(bytes(64), root=kernel.root, fs=kernel)
    assert list(kernel.root.iterdir()) == []


def test_another_writer_moving_the_generation_forces_a_retry(kernel: FakeTsmKernel) -> None:
    kernel.interfere = 1
    got = collect.collect_tsm(b"\1" * 64, root=kernel.root, fs=kernel)
    assert snp.parse_report(got.report).report_data == b"\1" * 64
    kernel.interfere = 5
    with pytest.raises(CollectionError, match="another writer changed inblob"):
        collect.collect_tsm(bytes(64), root=kernel.root, fs=kernel)


def test_no_provider_and_rejected_inblob_are_explained(kernel: FakeTsmKernel) -> None:
    kernel.no_provider = True
    with pytest.raises(CollectionError, match="ENXIO: no TEE provider answered"):
        collect.collect_tsm(bytes(64), root=kernel.root, fs=kernel)
    kernel.no_provider = False
    kernel.reject_inblob = True
    with pytest.raises(CollectionError, match="EINVAL: the kernel rejected the request"):
        collect.collect_tsm(bytes(64), root=kernel.root, fs=kernel)
    with pytest.raises(CollectionError, match="must be 64 bytes"):
        collect.collect_tsm(bytes(65), root=kernel.root, fs=kernel)
    assert list(kernel.root.iterdir()) == []


def test_missing_configfs_tsm_is_explained(tmp_path: Path, binding: BindingDocument) -> None:
    with pytest.raises(CollectionError, match=r"does not exist: needs Linux 6\.7"):
        collect.collect_evidence("tdx", binding, collected_at="now", tsm_root=tmp_path / "absent")


def test_provider_mismatch_is_an_error(tmp_path: Path, binding: BindingDocument) -> None:
    kernel = FakeTsmKernel(tmp_path / "report", None, provider="tdx_guest")
    with pytest.raises(CollectionError, match="answered as tdx, but sev-snp was asked for"):
        collect.collect_evidence(
            "sev-snp", binding, collected_at="now", tsm_root=kernel.root, fs=kernel
        )
    bundle = collect.collect_evidence(
        "tdx", binding, collected_at="now", tsm_root=kernel.root, fs=kernel
    )
    assert bundle.report == b"TDX" + binding.report_data()


def test_certificate_table_is_read_into_pem(amd: FakeAmd) -> None:
    pem = collect.snp_certificates_pem(amd.cert_table())
    assert pem.count(b"BEGIN CERTIFICATE") == 3
    assert collect.snp_certificates_pem(bytes(24)) == b""
    with pytest.raises(CollectionError, match="points past its end"):
        collect.snp_certificates_pem(amd.cert_table()[:100])


def test_sev_guest_ioctl_fallback(tmp_path: Path, amd: FakeAmd) -> None:
    seen: dict[str, int] = {}

    def fake_ioctl(fd: int, request: int, arg: bytearray) -> int:
        seen["request"] = request
        version, req_addr, resp_addr, _ = struct.unpack("<B7xQQQ", arg)
        assert version == 1
        user_data = ctypes.string_at(req_addr, 64)
        report = amd.report(user_data)
        response = struct.pack("<II24x", 0, len(report)) + report
        ctypes.memmove(resp_addr, response, len(response))
        return 0

    device = tmp_path / "sev-guest"
    device.write_bytes(b"")
    raw = collect.collect_sev_guest(b"\7" * 64, device=device, ioctl=fake_ioctl)
    assert seen["request"] == 0xC0205300
    assert snp.parse_report(raw).report_data == b"\7" * 64

    def failing_ioctl(fd: int, request: int, arg: bytearray) -> int:
        struct.pack_into("<II", arg, 24, 0x16, 0)
        raise OSError(errno.EIO, "Input/output error")

    with pytest.raises(CollectionError, match="firmware error 0x16"):
        collect.collect_sev_guest(bytes(64), device=device, ioctl=failing_ioctl)
    with pytest.raises(CollectionError, match="cannot open"):
        collect.collect_sev_guest(bytes(64), device=tmp_path / "absent")


def test_none_provider_says_plainly_that_the_node_is_unattested(binding: BindingDocument) -> None:
    bundle = collect.collect_evidence("none", binding, collected_at="now")
    verdict = verify_bundle(bundle, policy=Policy.default(), at=NOW)
    assert not verdict.attested
    assert any("UNATTESTED" in s for s in verdict.steps)
    assert bundle.to_json()["report"] == ""


def test_nvidia_without_the_sdk_names_the_extra(binding: BindingDocument) -> None:
    try:
        import nv_attestation_sdk  # noqa: F401
    except ImportError:
        with pytest.raises(CollectionError, match=r"asi-node\[nvidia\]"):
            collect.collect_evidence("nvidia", binding, collected_at="now")
    else:  # pragma: no cover - only on machines with NVIDIA's SDK
        pytest.skip("NVIDIA SDK installed; collection needs a GPU in CC mode")


def test_turin_layout_fmc_and_short_hardware_id_are_checked() -> None:
    # No real Turin report is public; a synthetic chip checks the Turin TCB layout (FMC
    # first), its 8-byte hardware ID and the CPUID family 0x1A.
    tcb = bytes([1, 2, 3, 4, 0, 0, 0, 90])  # fmc 1, bootloader 2, tee 3, snp 4, microcode 90
    turin = FakeAmd(product="Turin", tcb=tcb)
    certs = [collect.snp_certificates_pem(turin.cert_table())]
    report = turin.report(bytes(64), version=3)
    verified = snp.verify_snp(
        report, certs, policy=Policy.default(), at=NOW, pinned_arks=turin.pins
    )
    assert verified.product == "Turin"
    assert "fmc=1 bootloader=2 tee=3 snp=4 microcode=90" in verified.steps[4]
    low_fmc = Policy(any_measurement=True, snp_min_tcb={"fmc": 2})
    with pytest.raises(VerificationError, match="TCB fmc SVN 1 is below the minimum 2"):
        snp.verify_snp(report, certs, policy=low_fmc, at=NOW, pinned_arks=turin.pins)
    other_chip = FakeAmd(product="Turin", tcb=tcb, chip_id=bytes(64))
    other_chip.vcek_key = turin.vcek_key  # same key, different chip: only the ID differs
    with pytest.raises(VerificationError, match="CHIP_ID differs"):
        snp.verify_snp(
            other_chip.report(bytes(64), version=3),
            certs,
            policy=Policy.default(),
            at=NOW,
            pinned_arks=turin.pins,
        )
    milan_cpuid = bytearray(report)
    milan_cpuid[0x188] = 0x19
    with pytest.raises(VerificationError, match="is not a Turin part"):
        snp.verify_snp(
            bytes(milan_cpuid), certs, policy=Policy.default(), at=NOW, pinned_arks=turin.pins
        )


def test_bundle_for_another_node_key_is_rejected(
    kernel: FakeTsmKernel, amd: FakeAmd, binding: BindingDocument
) -> None:
    bundle = collect.collect_evidence(
        "sev-snp", binding, collected_at="now", tsm_root=kernel.root, fs=kernel
    )
    verdict = verify_bundle(
        bundle, policy=Policy.default(), at=NOW, pinned_arks=amd.pins, log_public_key="ab" * 32
    )
    assert "names the node's log key" in verdict.steps[0]
    with pytest.raises(VerificationError, match="not the node's") as info:
        verify_bundle(
            bundle, policy=Policy.default(), at=NOW, pinned_arks=amd.pins, log_public_key="ef" * 32
        )
    assert info.value.step == "bundle.1 binding document"
