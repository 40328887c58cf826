"""Collecting evidence on this machine: configfs-tsm, the sev-guest device, or nothing.

configfs-tsm (Linux 6.7+, `/sys/kernel/config/tsm/report`): make a directory, write the
64-byte REPORT_DATA to `inblob`, read the report from `outblob` (and, for SEV-SNP, the
host's certificate table from `auxblob`), then check that `generation` advanced by
exactly one, which proves no other writer changed `inblob` in between. `provider` says
which TEE answered (`sev_guest` or `tdx_guest`). The directory is removed afterwards.

The sev-guest device (`/dev/sev-guest`, SNP_GET_REPORT ioctl) is the fallback on older
SNP guests; it returns no certificates, which then come from AMD KDS (`--certs`).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import os
import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives import serialization

from attestation.tee.binding import BindingDocument
from attestation.tee.certs import CertificateFormatError, load_certificates
from attestation.tee.errors import CollectionError
from attestation.tee.evidence import EvidenceBundle, GpuEvidence

log = logging.getLogger(__name__)

TSM_REPORT_ROOT = Path("/sys/kernel/config/tsm/report")
SEV_GUEST_DEVICE = Path("/dev/sev-guest")
PROVIDERS = {"sev_guest": "sev-snp", "tdx_guest": "tdx"}
REPORT_DATA_LEN = 64
_RETRYABLE = (errno.EBUSY, errno.EAGAIN, errno.EINTR)
_NO_PROVIDER = (errno.ENXIO, errno.ENODEV, errno.ENOENT, errno.EOPNOTSUPP)


@dataclass(frozen=True)
class TsmReport:
    """What configfs-tsm returned: the provider, the report and the auxiliary blob."""

    provider: str
    report: bytes
    auxblob: bytes
    generation: int


class ReportFs(Protocol):
    """The few file operations collection needs; tests give a kernel-like fake."""

    def mkdir(self, path: Path) -> None: ...
    def rmdir(self, path: Path) -> None: ...
    def read(self, path: Path) -> bytes: ...
    def write(self, path: Path, data: bytes) -> None: ...
    def exists(self, path: Path) -> bool: ...


class OsReportFs:
    """ReportFs on the real filesystem: one read or one write system call per attribute,
    as configfs binary attributes expect."""

    def mkdir(self, path: Path) -> None:
        os.mkdir(path)

    def rmdir(self, path: Path) -> None:
        os.rmdir(path)

    def read(self, path: Path) -> bytes:
        with open(path, "rb") as fh:
            return fh.read()

    def write(self, path: Path, data: bytes) -> None:
        fd = os.open(path, os.O_WRONLY)
        try:
            written = os.write(fd, data)
        finally:
            os.close(fd)
        if written != len(data):
            raise OSError(errno.EIO, f"short write to {path}")

    def exists(self, path: Path) -> bool:
        return path.exists()


def _describe(exc: OSError, what: str) -> str:
    name = errno.errorcode.get(exc.errno or 0, "error")
    if exc.errno in _NO_PROVIDER:
        hint = "no TEE provider answered: is this a confidential VM with sev-guest or tdx-guest?"
    elif exc.errno == errno.EINVAL:
        hint = "the kernel rejected the request (REPORT_DATA must be at most 64 bytes)"
    elif exc.errno in _RETRYABLE:
        hint = "another process kept the interface busy"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        hint = "permission denied: run as root or grant access to configfs-tsm"
    else:
        hint = exc.strerror or "unexpected error"
    return f"configfs-tsm: {what}: {name}: {hint}"


def collect_tsm(
    report_data: bytes,
    *,
    root: Path = TSM_REPORT_ROOT,
    fs: ReportFs | None = None,
    attempts: int = 3,
) -> TsmReport:
    """Get a report with `report_data` through configfs-tsm; CollectionError if impossible.

    Busy interfaces and a generation that moved by more than one (another writer) are
    retried up to `attempts` times in total.
    """
    if len(report_data) != REPORT_DATA_LEN:
        raise CollectionError(
            f"REPORT_DATA must be {REPORT_DATA_LEN} bytes, got {len(report_data)}"
        )
    fs = fs or OsReportFs()
    if not fs.exists(root):
        raise CollectionError(
            f"configfs-tsm: {root} does not exist: needs Linux 6.7+ in a confidential VM "
            "with configfs mounted (mount -t configfs none /sys/kernel/config)"
        )
    entry = root / f"asi-node-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        fs.mkdir(entry)
    except OSError as exc:
        raise CollectionError(_describe(exc, f"mkdir {entry}")) from None
    try:
        last = ""
        for attempt in range(attempts):
            try:
                before = _generation(fs, entry)
                fs.write(entry / "inblob", report_data)
                report = fs.read(entry / "outblob")
                aux = fs.read(entry / "auxblob") if fs.exists(entry / "auxblob") else b""
                after = _generation(fs, entry)
                provider = fs.read(entry / "provider").decode("ascii", "replace").strip()
            except OSError as exc:
                if exc.errno in _RETRYABLE:
                    last = _describe(exc, "read outblob")
                    log.info("configfs-tsm busy, retrying", extra={"attempt": attempt})
                    continue
                raise CollectionError(_describe(exc, "report request")) from None
            if after != before + 1:
                last = (
                    f"configfs-tsm: generation went from {before} to {after}: another writer "
                    "changed inblob while the report was made"
                )
                continue
            if provider not in PROVIDERS:
                raise CollectionError(f"configfs-tsm: unknown provider {provider!r}")
            if not report:
                raise CollectionError("configfs-tsm: outblob was empty")
            return TsmReport(PROVIDERS[provider], report, aux, after)
        raise CollectionError(f"{last} (gave up after {attempts} attempts)")
    finally:
        try:
            fs.rmdir(entry)
        except OSError as exc:
            log.warning(
                "could not remove configfs-tsm entry",
                extra={"entry": str(entry), "errno": exc.errno},
            )


def _generation(fs: ReportFs, entry: Path) -> int:
    text = fs.read(entry / "generation").decode("ascii", "replace").strip()
    try:
        return int(text)
    except ValueError:
        raise CollectionError(f"configfs-tsm: generation is not a number: {text!r}") from None


def snp_certificates_pem(auxblob: bytes) -> bytes:
    """The certificates of an SNP certificate table (GUID, offset, length entries ended by
    a zero entry, then DER certificates) as one PEM bundle; empty for an empty table."""
    pems: list[bytes] = []
    offset = 0
    while offset + 24 <= len(auxblob):
        guid, start, length = (
            auxblob[offset : offset + 16],
            *struct.unpack_from("<II", auxblob, offset + 16),
        )
        if not any(guid) and start == 0 and length == 0:
            break
        if start + length > len(auxblob):
            raise CollectionError("SNP certificate table points past its end")
        try:
            certs = load_certificates(auxblob[start : start + length])
        except CertificateFormatError as exc:
            raise CollectionError(f"SNP certificate table: {exc}") from None
        pems += [c.public_bytes(serialization.Encoding.PEM) for c in certs]
        offset += 24
    return b"".join(pems)


# SNP_GET_REPORT = _IOWR('S', 0, struct snp_guest_request_ioctl), a 32-byte struct.
SNP_GET_REPORT = (3 << 30) | (32 << 16) | (ord("S") << 8) | 0
_REPORT_REQ_LEN = 96
_REPORT_RESP_LEN = 4000
_MSG_REPORT_RSP_HEADER = 32

IoctlFn = Callable[[int, int, bytearray], int]


def _default_ioctl(fd: int, request: int, arg: bytearray) -> int:
    return int(fcntl.ioctl(fd, request, arg, True))


def collect_sev_guest(
    report_data: bytes,
    *,
    device: Path = SEV_GUEST_DEVICE,
    vmpl: int = 0,
    ioctl: IoctlFn = _default_ioctl,
    opener: Callable[[Path], int] | None = None,
) -> bytes:
    """Get an SNP report through /dev/sev-guest (SNP_GET_REPORT); returns the raw report."""
    if len(report_data) != REPORT_DATA_LEN:
        raise CollectionError(
            f"REPORT_DATA must be {REPORT_DATA_LEN} bytes, got {len(report_data)}"
        )
    request = ctypes.create_string_buffer(report_data + struct.pack("<I", vmpl), _REPORT_REQ_LEN)
    response = ctypes.create_string_buffer(_REPORT_RESP_LEN)
    arg = bytearray(
        struct.pack("<B7xQQQ", 1, ctypes.addressof(request), ctypes.addressof(response), 0)
    )
    try:
        fd = opener(device) if opener else os.open(device, os.O_RDWR)
    except OSError as exc:
        raise CollectionError(
            f"{device}: cannot open: {exc.strerror}; is sev-guest loaded?"
        ) from None
    try:
        ioctl(fd, SNP_GET_REPORT, arg)
    except OSError as exc:
        (fw_error, vmm_error) = struct.unpack_from("<II", arg, 24)
        raise CollectionError(
            f"{device}: SNP_GET_REPORT failed: {exc.strerror} "
            f"(firmware error {fw_error:#x}, VMM error {vmm_error:#x})"
        ) from None
    finally:
        os.close(fd)
    raw = response.raw
    status, size = struct.unpack_from("<II", raw, 0)
    if status != 0:
        raise CollectionError(f"{device}: firmware returned status {status:#x}")
    if size > _REPORT_RESP_LEN - _MSG_REPORT_RSP_HEADER:
        raise CollectionError(f"{device}: report size {size} is out of range")
    return raw[_MSG_REPORT_RSP_HEADER : _MSG_REPORT_RSP_HEADER + size]


def collect_evidence(
    provider: str,
    binding: BindingDocument,
    *,
    collected_at: str,
    tsm_root: Path = TSM_REPORT_ROOT,
    sev_device: Path = SEV_GUEST_DEVICE,
    gpus: bool = False,
    fs: ReportFs | None = None,
) -> EvidenceBundle:
    """Evidence for `binding` from `provider` ("sev-snp", "tdx", "nvidia" or "none").

    SEV-SNP uses configfs-tsm and falls back to the sev-guest device when configfs-tsm is
    absent. `gpus` adds NVIDIA GPU reports (through NVIDIA's SDK) to a CPU TEE's evidence.
    "none" collects nothing: the bundle says plainly that the node is unattested.
    """
    if provider == "none":
        return EvidenceBundle("none", binding, collected_at)
    gpu_evidence: tuple[GpuEvidence, ...] = ()
    if gpus or provider == "nvidia":
        from attestation.tee import nvidia_sdk

        gpu_evidence = tuple(nvidia_sdk.collect_gpu_evidence(binding.gpu_nonce()))
    if provider == "nvidia":
        return EvidenceBundle("nvidia", binding, collected_at, gpus=gpu_evidence)
    if provider not in ("sev-snp", "tdx"):
        raise CollectionError(
            f"unknown provider {provider!r}; expected sev-snp, tdx, nvidia or none"
        )
    report_data = binding.report_data()
    fs = fs or OsReportFs()
    if provider == "sev-snp" and not fs.exists(tsm_root) and sev_device.exists():
        report = collect_sev_guest(report_data, device=sev_device)
        return EvidenceBundle("sev-snp", binding, collected_at, report=report, gpus=gpu_evidence)
    tsm = collect_tsm(report_data, root=tsm_root, fs=fs)
    if tsm.provider != provider:
        raise CollectionError(
            f"configfs-tsm answered as {tsm.provider}, but {provider} was asked for"
        )
    certs = snp_certificates_pem(tsm.auxblob) if provider == "sev-snp" else b""
    return EvidenceBundle(
        provider, binding, collected_at, report=tsm.report, certificates=certs, gpus=gpu_evidence
    )
