"""IC certificates: decoding and full verification in numbered steps that fail closed.

A certificate is `{tree, signature, delegation?}` (interface specification, section
"Certification"). Verification, for a response that concerns one canister:

1. decode: CBOR, the certificate map and its hash tree (labels in order);
2. delegation: if the certificate is signed by a subnet, its delegation certificate must
   itself carry no delegation, verify under the root key, and certify that subnet's key;
3. canister range: the delegation must certify that the subnet hosts the canister, in
   the sharded layout (`/canister_ranges/<subnet>/<shard>`) or the old one
   (`/subnet/<subnet>/canister_ranges`); ranges that were pruned prove nothing;
4. signature: BLS12-381 over `"\\x0dic-state-root" || root hash` under the subnet key (or
   the root key when there is no delegation);
5. freshness: `/time` is no older than the allowed age and not ahead of the local clock
   by more than the allowed skew.

Lookups on the verified tree (step 6) and certified data against a canister's witness
(step 7) follow in `VerifiedCertificate`. Every failure raises `VerificationError`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import cbor2

from attestation.errors import VerificationError
from attestation.icp import bls
from attestation.icp.hashtree import (
    HashTree,
    Labeled,
    Leaf,
    Lookup,
    Outcome,
    Pruned,
    check_sorted,
    flatten_forks,
    lookup,
    lookup_subtree,
    parse_tree,
    reconstruct,
)
from attestation.icp.principal import MAX_LEN, to_text
from attestation.icp.steps import Step

STATE_ROOT_DOMAIN = b"\x0dic-state-root"
# The IC mainnet (NNS) root key, DER; a local replica has its own (pass that instead).
MAINNET_ROOT_KEY_DER = bytes.fromhex(
    "308182301d060d2b0601040182dc7c0503010201060c2b0601040182dc7c05030201036100814c0e6ec71f"
    "ab583b08bd81373c255c3c371b2e84863c98a4f1e08b74235d14fb5d9c0cd546d9685f913a0c0b2cc5341583"
    "bf4b4392e467db96d65b9bb4cb717112f8472e0d5a4d14505ffd7484b01291091c5f87b98883463f98091a0baaae"
)
MAX_CERTIFICATE_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_AGE_NS = 5 * 60 * 10**9
DEFAULT_MAX_SKEW_NS = 60 * 10**9


@dataclass(frozen=True)
class Delegation:
    subnet_id: bytes
    certificate: bytes  # the delegation certificate, CBOR, verified in step 2


@dataclass(frozen=True)
class Certificate:
    """A decoded, not yet verified, certificate."""

    tree: HashTree
    signature: bytes
    delegation: Delegation | None


def decode_cbor(data: bytes, what: str, step: Step = Step.DECODE) -> object:
    """Decode one CBOR item, or raise VerificationError naming `what` could not be read."""
    if not isinstance(data, bytes | bytearray):
        raise VerificationError(step.text, f"{what} is not a byte string")
    if len(data) > MAX_CERTIFICATE_BYTES:
        raise VerificationError(step.text, f"{what} is larger than {MAX_CERTIFICATE_BYTES} bytes")
    try:
        return cbor2.loads(bytes(data))
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise VerificationError(step.text, f"{what} is not valid CBOR ({exc})") from None
    except Exception as exc:  # cbor2 raises others on hostile tags (e.g. bad dates)
        raise VerificationError(
            step.text, f"{what} is not valid CBOR ({type(exc).__name__})"
        ) from None


def parse_certificate(data: bytes, what: str = "certificate") -> Certificate:
    """Step 1: decode a certificate's CBOR into its parts; VerificationError if malformed."""
    obj = decode_cbor(data, what)
    if not isinstance(obj, Mapping):
        raise VerificationError(Step.DECODE.text, f"{what} is not a CBOR map")
    extra = set(obj) - {"tree", "signature", "delegation"}
    if extra:
        raise VerificationError(
            Step.DECODE.text, f"{what} has unexpected fields {sorted(map(str, extra))}"
        )
    if "tree" not in obj or "signature" not in obj:
        raise VerificationError(Step.DECODE.text, f"{what} lacks its tree or signature")
    tree = parse_tree(obj["tree"])
    check_sorted(tree)
    signature = obj["signature"]
    if not isinstance(signature, bytes):
        raise VerificationError(Step.DECODE.text, f"{what} signature is not a blob")
    delegation = None
    if "delegation" in obj:
        raw = obj["delegation"]
        if (
            not isinstance(raw, Mapping)
            or set(raw) != {"subnet_id", "certificate"}
            or not isinstance(raw["subnet_id"], bytes)
            or not isinstance(raw["certificate"], bytes)
        ):
            raise VerificationError(
                Step.DECODE.text, f"{what} delegation is not {{subnet_id: blob, certificate: blob}}"
            )
        if not 0 < len(raw["subnet_id"]) <= MAX_LEN:
            raise VerificationError(
                Step.DECODE.text, f"{what} delegation subnet_id is not a principal"
            )
        delegation = Delegation(raw["subnet_id"], raw["certificate"])
    return Certificate(tree, signature, delegation)


def decode_leb128(data: bytes, what: str, step: Step) -> int:
    """An unsigned LEB128 number that fills `data` exactly."""
    value = 0
    for index, byte in enumerate(data):
        if index >= 10:
            break
        value |= (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            if index != len(data) - 1:
                break
            return value
    raise VerificationError(step.text, f"{what} is not a LEB128 number")


def _decode_ranges(value: bytes, what: str) -> list[tuple[bytes, bytes]]:
    obj = decode_cbor(value, what, Step.CANISTER_RANGE)
    if not isinstance(obj, list | tuple):
        raise VerificationError(Step.CANISTER_RANGE.text, f"{what} is not a CBOR array")
    ranges = []
    for item in obj:
        if (
            not isinstance(item, list | tuple)
            or len(item) != 2
            or not all(isinstance(bound, bytes) for bound in item)
        ):
            raise VerificationError(Step.CANISTER_RANGE.text, f"{what} holds a malformed range")
        ranges.append((item[0], item[1]))
    return ranges


def _in_ranges(canister_id: bytes, ranges: Sequence[tuple[bytes, bytes]]) -> bool:
    return any(low <= canister_id <= high for low, high in ranges)


def check_canister_range(tree: HashTree, subnet_id: bytes, canister_id: bytes) -> None:
    """Step 3: the delegation tree certifies that `subnet_id` hosts `canister_id`."""
    subnet, canister = to_text(subnet_id), to_text(canister_id)
    sharded = lookup_subtree([b"canister_ranges", subnet_id], tree)
    if sharded.outcome is Outcome.FOUND and sharded.subtree is not None:
        nodes = flatten_forks(sharded.subtree)
        hidden = False
        for node in nodes:
            if isinstance(node, Labeled) and isinstance(node.subtree, Leaf):
                what = f"canister range shard {node.label.hex()} of subnet {subnet}"
                if _in_ranges(canister_id, _decode_ranges(node.subtree.value, what)):
                    return
            else:
                hidden = hidden or isinstance(node, Pruned | Labeled)
        if hidden:
            raise VerificationError(
                Step.CANISTER_RANGE.text,
                f"the shard of /canister_ranges/{subnet} that would hold canister {canister} "
                "is pruned from the delegation: its membership cannot be established",
            )
        raise VerificationError(
            Step.CANISTER_RANGE.text,
            f"canister {canister} is outside the canister ranges of subnet {subnet}: "
            "the certificate is not authorised for this canister",
        )
    old = lookup([b"subnet", subnet_id, b"canister_ranges"], tree)
    if old.outcome is Outcome.FOUND and old.value is not None:
        what = f"/subnet/{subnet}/canister_ranges"
        if _in_ranges(canister_id, _decode_ranges(old.value, what)):
            return
        raise VerificationError(
            Step.CANISTER_RANGE.text,
            f"canister {canister} is outside the canister ranges of subnet {subnet}: "
            "the certificate is not authorised for this canister",
        )
    raise VerificationError(
        Step.CANISTER_RANGE.text,
        f"the delegation certifies no canister ranges for subnet {subnet} (sharded layout: "
        f"{sharded.outcome.value}; old layout: {old.outcome.value})",
    )


def _check_signature(cert: Certificate, key: bytes, step: Step, whose: str) -> bytes:
    root_hash = reconstruct(cert.tree)
    try:
        bls.verify(key, STATE_ROOT_DOMAIN + root_hash, cert.signature)
    except bls.BlsError as exc:
        raise VerificationError(step.text, f"{whose}: {exc}") from None
    return root_hash


@lru_cache(maxsize=32)
def _verify_delegation(delegation: Delegation, root_key: bytes, canister_id: bytes) -> bytes:
    """Steps 2 and 3; returns the subnet's raw BLS key. A delegation does not expire with
    the certificate's time, so a verified one is cached (failures are not)."""
    subnet = to_text(delegation.subnet_id)
    try:
        inner = parse_certificate(delegation.certificate, "delegation certificate")
    except VerificationError as exc:
        raise VerificationError(Step.DELEGATION.text, exc.detail) from None
    if inner.delegation is not None:
        raise VerificationError(
            Step.DELEGATION.text, "the delegation certificate itself has a delegation"
        )
    _check_signature(inner, root_key, Step.DELEGATION, "delegation certificate signature")
    found = lookup([b"subnet", delegation.subnet_id, b"public_key"], inner.tree)
    if found.outcome is not Outcome.FOUND or found.value is None:
        raise VerificationError(
            Step.DELEGATION.text,
            f"the delegation does not certify a public key for subnet {subnet} "
            f"(lookup: {found.outcome.value})",
        )
    try:
        subnet_key = bls.key_from_der(found.value)
    except bls.BlsError as exc:
        raise VerificationError(Step.DELEGATION.text, f"subnet {subnet} key: {exc}") from None
    check_canister_range(inner.tree, delegation.subnet_id, canister_id)
    return subnet_key


@dataclass(frozen=True)
class VerifiedCertificate:
    """A certificate that passed steps 1-5; lookups on it are trustworthy."""

    tree: HashTree
    root_hash: bytes
    time_ns: int
    subnet_id: bytes | None  # None when the root key signed directly

    def lookup(self, path: Sequence[bytes]) -> Lookup:
        return lookup(path, self.tree)

    def value(self, path: Sequence[bytes]) -> bytes:
        """Step 6: the leaf at `path`, or VerificationError saying it is absent or pruned."""
        found = lookup(path, self.tree)
        if found.outcome is not Outcome.FOUND or found.value is None:
            shown = "/".join(_show(label) for label in path)
            raise VerificationError(
                Step.LOOKUP.text, f"/{shown} is {found.outcome.value} in the certified tree"
            )
        return found.value

    def certified_data(self, canister_id: bytes, witness: HashTree) -> bytes:
        """Step 7: the canister's certified data equals the witness's root; returns it."""
        try:
            data = self.value([b"canister", canister_id, b"certified_data"])
        except VerificationError as exc:
            raise VerificationError(Step.CERTIFIED_DATA.text, exc.detail) from None
        root = reconstruct(witness)
        if data != root:
            raise VerificationError(
                Step.CERTIFIED_DATA.text,
                f"canister {to_text(canister_id)} certified {data.hex()}, "
                f"but the witness hashes to {root.hex()}",
            )
        return root


def _show(label: bytes) -> str:
    try:
        text = label.decode("ascii")
    except UnicodeDecodeError:
        return label.hex()
    return text if text.isprintable() else label.hex()


def verify_certificate(
    data: bytes,
    *,
    root_key_der: bytes,
    canister_id: bytes,
    now_ns: int,
    max_age_ns: int = DEFAULT_MAX_AGE_NS,
    max_skew_ns: int = DEFAULT_MAX_SKEW_NS,
) -> VerifiedCertificate:
    """Verify a certificate about `canister_id` (steps 1-5) and return it, or raise.

    `root_key_der` is the trusted root key (the IC mainnet key, or a local replica's);
    `now_ns` the local time in nanoseconds since the Unix epoch.
    """
    if not 0 < len(canister_id) <= MAX_LEN:
        raise ValueError(f"canister id of {len(canister_id)} bytes is not a principal")
    try:
        root_key = bls.key_from_der(root_key_der)
    except bls.BlsError as exc:
        raise ValueError(f"the configured IC root key is unusable: {exc}") from None
    cert = parse_certificate(data)
    key, subnet_id = root_key, None
    if cert.delegation is not None:
        key = _verify_delegation(cert.delegation, root_key, canister_id)
        subnet_id = cert.delegation.subnet_id
    whose = "certificate signature" + (
        f" under subnet {to_text(subnet_id)}" if subnet_id else " under the root key"
    )
    root_hash = _check_signature(cert, key, Step.SIGNATURE, whose)
    found = lookup([b"time"], cert.tree)
    if found.outcome is not Outcome.FOUND or found.value is None:
        raise VerificationError(Step.FRESHNESS.text, f"/time is {found.outcome.value}")
    time_ns = decode_leb128(found.value, "/time", Step.FRESHNESS)
    if now_ns - time_ns > max_age_ns:
        raise VerificationError(
            Step.FRESHNESS.text,
            f"certificate is {(now_ns - time_ns) / 1e9:.0f} s old, more than the "
            f"{max_age_ns / 1e9:.0f} s allowed",
        )
    if time_ns - now_ns > max_skew_ns:
        raise VerificationError(
            Step.FRESHNESS.text,
            f"certificate time is {(time_ns - now_ns) / 1e9:.0f} s ahead of the local clock",
        )
    return VerifiedCertificate(cert.tree, root_hash, time_ns, subnet_id)


def certificate_from_read_state(body: bytes) -> bytes:
    """The certificate inside a read_state (or call v3) response body `{certificate: blob}`."""
    obj = decode_cbor(body, "read_state response")
    if not isinstance(obj, Mapping) or not isinstance(obj.get("certificate"), bytes):
        raise VerificationError(Step.DECODE.text, "read_state response has no certificate blob")
    return bytes(obj["certificate"])
