"""A synthetic AMD chain and an SNP "firmware" that signs reports with it, and a fake
configfs-tsm tree that behaves like the kernel's: write inblob, read outblob, the
generation counter, and the errors the kernel returns."""

from __future__ import annotations

import errno
import struct
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID, ObjectIdentifier

from attestation.tee.certs import spki_sha256
from attestation.tee.collect import OsReportFs

PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
TCB = bytes([3, 0, 0, 0, 0, 0, 8, 115])  # bootloader 3, tee 0, snp 8, microcode 115 (Milan)
GUID_VCEK = uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd")
GUID_ASK = uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782")
GUID_ARK = uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae")


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _int_ext(oid: str, value: int) -> x509.Extension[x509.UnrecognizedExtension]:
    der = bytes([0x02, 1, value]) if value < 0x80 else bytes([0x02, 2, 0, value])
    return x509.Extension(
        ObjectIdentifier(oid), False, x509.UnrecognizedExtension(ObjectIdentifier(oid), der)
    )


# TCB byte index per part, and the VCEK extension arc, for each product line.
LAYOUT = {
    "Milan": {"1": 0, "2": 1, "3": 6, "8": 7},
    "Turin": {"9": 0, "1": 1, "2": 2, "3": 3, "8": 7},
}
CPUID = {"Milan": (0x19, 0x01, 0x01), "Turin": (0x1A, 0x02, 0x01)}


@dataclass
class FakeAmd:
    """ARK -> ASK -> VCEK for a made-up chip, and the key that signs its reports."""

    product: str = "Milan"
    chip_id: bytes = bytes(range(64))
    tcb: bytes = TCB
    ark_key: rsa.RSAPrivateKey = field(init=False)
    vcek_key: ec.EllipticCurvePrivateKey = field(init=False)
    ark: x509.Certificate = field(init=False)
    ask: x509.Certificate = field(init=False)
    vcek: x509.Certificate = field(init=False)

    def __post_init__(self) -> None:
        now = datetime.now(UTC)
        self.ark_key = rsa.generate_private_key(65537, 2048)
        ask_key = rsa.generate_private_key(65537, 2048)
        self.vcek_key = ec.generate_private_key(ec.SECP384R1())

        def build(subject: str, issuer: str, public: object) -> x509.CertificateBuilder:
            return (
                x509.CertificateBuilder()
                .subject_name(_name(subject))
                .issuer_name(_name(issuer))
                .public_key(public)  # type: ignore[arg-type]
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(days=1))
                .not_valid_after(now + timedelta(days=365))
            )

        ark, ask = f"ARK-{self.product}", f"SEV-{self.product}"
        self.ark = build(ark, ark, self.ark_key.public_key()).sign(
            self.ark_key, hashes.SHA384(), rsa_padding=PSS
        )
        self.ask = build(ask, ark, ask_key.public_key()).sign(
            self.ark_key, hashes.SHA384(), rsa_padding=PSS
        )
        vcek = build("SEV-VCEK", ask, self.vcek_key.public_key())
        for oid, index in LAYOUT[self.product].items():
            ext = _int_ext(f"1.3.6.1.4.1.3704.1.3.{oid}", self.tcb[index])
            vcek = vcek.add_extension(ext.value, critical=False)
        hwid = ObjectIdentifier("1.3.6.1.4.1.3704.1.4")
        chip = self.chip_id[:8] if self.product == "Turin" else self.chip_id
        vcek = vcek.add_extension(x509.UnrecognizedExtension(hwid, chip), critical=False)
        self.vcek = vcek.sign(ask_key, hashes.SHA384(), rsa_padding=PSS)

    @property
    def pins(self) -> dict[str, str]:
        return {spki_sha256(self.ark): self.product}

    def report(self, report_data: bytes, policy: int = 0x30000, version: int = 2) -> bytes:
        """An SNP report over `report_data`, signed like the firmware signs."""
        body = bytearray(0x2A0)
        struct.pack_into("<IIQ", body, 0, version, 0, policy)
        struct.pack_into("<II", body, 0x30, 0, 1)
        body[0x38:0x40] = self.tcb
        body[0x50:0x90] = report_data.ljust(64, b"\0")
        body[0x90:0xC0] = b"\x42" * 48
        body[0x180:0x188] = self.tcb
        if version >= 3:
            body[0x188:0x18B] = bytes(CPUID[self.product])
        body[0x1A0:0x1E0] = self.chip_id
        r, s = decode_dss_signature(self.vcek_key.sign(bytes(body), ec.ECDSA(hashes.SHA384())))
        sig = r.to_bytes(72, "little") + s.to_bytes(72, "little")
        return bytes(body) + sig.ljust(0x4A0 - 0x2A0, b"\0")

    def cert_table(self) -> bytes:
        """The SNP certificate table the host hands out as configfs-tsm's auxblob."""
        certs = [(GUID_VCEK, self.vcek), (GUID_ASK, self.ask), (GUID_ARK, self.ark)]
        ders = [c.public_bytes(serialization.Encoding.DER) for _, c in certs]
        offset = 24 * (len(certs) + 1)
        table = b""
        for (guid, _), der in zip(certs, ders, strict=True):
            table += guid.bytes_le + struct.pack("<II", offset, len(der))
            offset += len(der)
        return table + bytes(24) + b"".join(ders)


class FakeTsmKernel(OsReportFs):
    """configfs-tsm on a real directory, with the kernel's side played in Python.

    mkdir of an entry creates its attributes; a write to inblob bumps generation; a read
    of outblob produces the report for the current inblob. Knobs inject what the kernel
    can return: `busy` reads of outblob fail with EBUSY, `no_provider` fails them with
    ENXIO, `interfere` writes bump generation an extra time (another writer), and
    `reject_inblob` fails writes with EINVAL.
    """

    def __init__(self, root: Path, amd: FakeAmd | None, provider: str = "sev_guest") -> None:
        self.root = root
        self.amd = amd
        self.provider = provider
        self.busy = 0
        self.no_provider = False
        self.interfere = 0
        self.reject_inblob = False
        self.report_reads = 0
        root.mkdir(parents=True, exist_ok=True)

    def mkdir(self, path: Path) -> None:
        super().mkdir(path)
        (path / "generation").write_text("0\n")
        (path / "provider").write_text(self.provider + "\n")
        (path / "inblob").write_bytes(b"")
        (path / "outblob").write_bytes(b"")
        (path / "auxblob").write_bytes(b"")

    def rmdir(self, path: Path) -> None:
        for child in path.iterdir():
            child.unlink()
        super().rmdir(path)

    def _bump(self, path: Path, by: int = 1) -> None:
        gen = path / "generation"
        gen.write_text(f"{int(gen.read_text()) + by}\n")

    def write(self, path: Path, data: bytes) -> None:
        if path.name != "inblob":
            raise OSError(errno.EACCES, "read-only attribute")
        if self.reject_inblob or len(data) > 64:
            raise OSError(errno.EINVAL, "Invalid argument")
        super().write(path, data)
        self._bump(path.parent)
        if self.interfere:
            self.interfere -= 1
            self._bump(path.parent)

    def read(self, path: Path) -> bytes:
        if path.name == "outblob":
            self.report_reads += 1
            if self.no_provider:
                raise OSError(errno.ENXIO, "No such device or address")
            if self.busy:
                self.busy -= 1
                raise OSError(errno.EBUSY, "Device or resource busy")
            inblob = (path.parent / "inblob").read_bytes()
            report = self.amd.report(inblob) if self.amd else b"TDX" + inblob
            path.write_bytes(report)
            if self.amd:
                (path.parent / "auxblob").write_bytes(self.amd.cert_table())
        return super().read(path)
