"""The recorded IC certificates in vectors/ (see vectors/README.md) and their facts."""

from __future__ import annotations

from pathlib import Path

import cbor2

from attestation.icp.certificate import certificate_from_read_state
from attestation.icp.principal import from_text

VECTORS = Path(__file__).parent / "vectors"
MAINNET_KEY = (VECTORS / "ic_mainnet_root_key.der").read_bytes()
LOCAL_KEY = (VECTORS / "v3_local_replica_root_key.der").read_bytes()

IVG37 = from_text("ivg37-qiaaa-aaaab-aaaga-cai")
RYJL3 = from_text("ryjl3-tyaaa-aaaaa-aaaba-cai")
QOCTQ = from_text("qoctq-giaaa-aaaaa-aaaea-cai")

V1_TIME = 1763796896688941908
V2_TIME = 1695844699412007908
V3_TIME = 1618578313979543000
V4_TIME = 1645601880652705378


def v1_certificate() -> bytes:
    body = (VECTORS / "v1_mainnet_read_state_time_ivg37_delegated_2025.cbor").read_bytes()
    return certificate_from_read_state(body)


def v2_certificate() -> bytes:
    return (VECTORS / "v2_mainnet_nns_subnet_no_delegation_2023.cbor").read_bytes()


def v3_signature() -> tuple[bytes, object]:
    """The canister signature's certificate and its witness tree (decoded CBOR)."""
    raw = cbor2.loads((VECTORS / "v3_local_canister_sig_certified_data_2021.cbor").read_bytes())
    return bytes(raw["certificate"]), raw["tree"]


def v4_certificate() -> bytes:
    return (VECTORS / "v4_mainnet_request_status_ivg37_delegated_2022.cbor").read_bytes()


def pruned_ranges_certificate() -> bytes:
    body = (VECTORS / "extra" / "neg_mainnet_read_state_time_ivg37_pruned_ranges.cbor").read_bytes()
    return certificate_from_read_state(body)
