"""The verification policy: debug, TCB minimums, the measurement allow-list.

Validity dates are judged at the time the caller passes to a verifier (`--at`), not here.
A policy must say something about measurements: either an allow-list or, explicitly,
`any_measurement = true`; a policy file with no keys at all is an error, never "allow all".
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attestation.tee.errors import PolicyError

SNP_TCB_PARTS = ("fmc", "bootloader", "tee", "snp", "microcode")
TDX_TCB_SVN_LEN = 16
_KEYS = {"allow_debug", "measurements", "any_measurement", "snp_min_tcb", "tdx_min_tee_tcb_svn"}


@dataclass(frozen=True)
class Policy:
    """What verified evidence must also satisfy.

    `measurements` holds lowercase hex digests: the SNP launch MEASUREMENT, the TDX MRTD,
    or for an NVIDIA GPU the SHA-384 of its SPDM measurement record. `snp_min_tcb` maps
    TCB parts (fmc, bootloader, tee, snp, microcode) to minimum SVNs; `tdx_min_tee_tcb_svn`
    gives per-component minimums of the TD's TEE_TCB_SVN.
    """

    allow_debug: bool = False
    measurements: frozenset[str] = frozenset()
    any_measurement: bool = False
    snp_min_tcb: Mapping[str, int] = field(default_factory=dict)
    tdx_min_tee_tcb_svn: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.measurements and not self.any_measurement:
            raise PolicyError(
                "policy allows no measurement: list the allowed measurements, or set "
                "any_measurement = true to accept any (explicitly)"
            )
        if self.measurements and self.any_measurement:
            raise PolicyError("policy both lists measurements and sets any_measurement; pick one")
        for digest in self.measurements:
            if len(digest) not in (64, 96) or digest != digest.lower() or not _is_hex(digest):
                raise PolicyError(f"measurement {digest!r}: expected 64 or 96 lowercase hex digits")
        for part, svn in self.snp_min_tcb.items():
            if part not in SNP_TCB_PARTS:
                raise PolicyError(
                    f"snp_min_tcb: unknown part {part!r}; "
                    f"expected one of {', '.join(SNP_TCB_PARTS)}"
                )
            if not isinstance(svn, int) or isinstance(svn, bool) or not 0 <= svn <= 255:
                raise PolicyError(f"snp_min_tcb.{part}: expected an integer 0..255, got {svn!r}")
        if len(self.tdx_min_tee_tcb_svn) > TDX_TCB_SVN_LEN or not all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255
            for v in self.tdx_min_tee_tcb_svn
        ):
            raise PolicyError("tdx_min_tee_tcb_svn: expected up to 16 integers 0..255")

    @classmethod
    def default(cls) -> Policy:
        """No debug, no TCB minimums, any measurement: what `attest verify` uses without
        `--policy`. Audits of a campaign use the allow-list instead."""
        return cls(any_measurement=True)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "policy") -> Policy:
        """A policy from parsed TOML or JSON; PolicyError names the source and the key."""
        if not isinstance(data, Mapping):
            raise PolicyError(f"{source}: expected a table of policy keys")
        if not data:
            raise PolicyError(
                f"{source}: empty policy; give at least measurements (or any_measurement = true)"
            )
        unknown = sorted(set(data) - _KEYS)
        if unknown:
            raise PolicyError(
                f"{source}: unknown key(s) {', '.join(unknown)}; "
                f"expected {', '.join(sorted(_KEYS))}"
            )
        allow_debug = data.get("allow_debug", False)
        any_measurement = data.get("any_measurement", False)
        for key, value in (("allow_debug", allow_debug), ("any_measurement", any_measurement)):
            if not isinstance(value, bool):
                raise PolicyError(f"{source}: {key}: expected true or false, got {value!r}")
        raw_measurements = data.get("measurements", [])
        if not isinstance(raw_measurements, list) or not all(
            isinstance(m, str) for m in raw_measurements
        ):
            raise PolicyError(f"{source}: measurements: expected a list of hex strings")
        min_tcb = data.get("snp_min_tcb", {})
        if not isinstance(min_tcb, Mapping):
            raise PolicyError(f"{source}: snp_min_tcb: expected a table of part = svn")
        tdx_min = data.get("tdx_min_tee_tcb_svn", [])
        if not isinstance(tdx_min, list):
            raise PolicyError(f"{source}: tdx_min_tee_tcb_svn: expected a list of integers")
        try:
            return cls(
                allow_debug=allow_debug,
                measurements=frozenset(m.lower() for m in raw_measurements),
                any_measurement=any_measurement,
                snp_min_tcb=dict(min_tcb),
                tdx_min_tee_tcb_svn=tuple(tdx_min),
            )
        except PolicyError as exc:
            raise PolicyError(f"{source}: {exc}") from None

    @classmethod
    def load(cls, path: Path) -> Policy:
        """A policy from a `.toml` or `.json` file."""
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise PolicyError(f"{path}: cannot read the policy: {exc.strerror}") from None
        try:
            text = raw.decode("utf-8")
            data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
        except (UnicodeDecodeError, ValueError) as exc:
            raise PolicyError(f"{path}: not a valid policy file: {exc}") from None
        return cls.from_mapping(data, str(path))

    def measurement_error(self, digest: str) -> str | None:
        """None when the measurement is allowed, else why not."""
        if self.any_measurement or digest in self.measurements:
            return None
        return f"measurement {digest} is not in the allow-list ({len(self.measurements)} entries)"

    def describe(self) -> str:
        parts = ["debug allowed" if self.allow_debug else "no debug"]
        if self.snp_min_tcb:
            parts.append("SNP TCB >= " + ",".join(f"{k}={v}" for k, v in self.snp_min_tcb.items()))
        if self.tdx_min_tee_tcb_svn:
            parts.append(f"TDX TEE_TCB_SVN >= {list(self.tdx_min_tee_tcb_svn)}")
        parts.append(
            "any measurement"
            if self.any_measurement
            else f"{len(self.measurements)} measurement(s)"
        )
        return ", ".join(parts)


def _is_hex(text: str) -> bool:
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True
