"""Governance proposals for a voter's own wallet: controller calldata and proposal ids.

A proposal is (targets, values, calldatas, description); OpenZeppelin's Governor names it
`uint256(keccak256(abi.encode(targets, values, calldatas, keccak256(description))))`.
`prepare` builds one directive call on the `CampaignController`; `decode_calls` checks
calls someone else built (every target the controller, every calldata one of its
directive functions with well-formed arguments) and raises MalformedCallError otherwise.
The function signatures mirror contracts/src/CampaignController.sol.

A fork names the log whose anchored root it starts from by that log's id on the
controller (`governance.chain.chain_log_id(node, log_id)`); its child starts paused, so
a proposal that wants the child to run at once adds a resume of the child after the fork.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi.abi import decode, encode
from eth_abi.exceptions import DecodingError, EncodingError
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from governance.directives import DirectiveKind, campaign_key, campaign_of_key
from governance.errors import MalformedCallError

SIGNATURES = {
    DirectiveKind.PAUSE: ("pauseCampaign", ("bytes32",)),
    DirectiveKind.RESUME: ("resumeCampaign", ("bytes32",)),
    DirectiveKind.STOP: ("stopCampaign", ("bytes32",)),
    DirectiveKind.FORK: (
        "forkCampaign",
        ("bytes32", "bytes32", "bytes32", "uint64", "bytes32", "bytes32", "string", "bool"),
    ),
}


def selector(kind: DirectiveKind) -> bytes:
    name, types = SIGNATURES[kind]
    return keccak(text=f"{name}({','.join(types)})")[:4]


@dataclass(frozen=True)
class DirectiveCall:
    """One controller call a proposal makes, decoded. A fork's `log_id` is the id on the
    controller of the log its checkpoint is anchored in (32 bytes)."""

    kind: DirectiveKind
    campaign: str  # the forked child for a fork
    parent: str | None = None
    from_tree_size: int | None = None
    checkpoint_root: bytes | None = None
    config_hash: bytes | None = None
    config_uri: str = ""
    pause_parent: bool = False
    log_id: bytes | None = None

    def calldata(self) -> bytes:
        if self.kind is DirectiveKind.FORK:
            assert self.parent is not None and self.from_tree_size is not None
            if self.log_id is None or len(self.log_id) != 32:
                raise MalformedCallError(
                    "a fork names the 32-byte id of the log its checkpoint is anchored in "
                    "(logIdOf(node, log) on the controller)"
                )
            args: list[Any] = [
                campaign_key(self.parent),
                campaign_key(self.campaign),
                self.log_id,
                self.from_tree_size,
                _b32(self.checkpoint_root, "checkpoint root"),
                _b32(self.config_hash, "config hash"),
                self.config_uri,
                self.pause_parent,
            ]
        else:
            args = [campaign_key(self.campaign)]
        try:
            return selector(self.kind) + encode(list(SIGNATURES[self.kind][1]), args)
        except (EncodingError, OverflowError, TypeError) as exc:
            raise MalformedCallError(f"cannot encode the {self.kind} call: {exc}") from exc

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "campaign": self.campaign,
            "parent": self.parent,
            "log_id": _hex(self.log_id),
            "from_tree_size": self.from_tree_size,
            "checkpoint_root": _hex(self.checkpoint_root),
            "config_hash": _hex(self.config_hash),
            "config_uri": self.config_uri,
            "pause_parent": self.pause_parent,
        }


@dataclass(frozen=True)
class Prepared:
    targets: tuple[str, ...]
    values: tuple[int, ...]
    calldatas: tuple[bytes, ...]
    description: str

    @property
    def description_hash(self) -> bytes:
        return keccak(text=self.description)

    @property
    def proposal_id(self) -> int:
        encoded = encode(
            ["address[]", "uint256[]", "bytes[]", "bytes32"],
            [list(self.targets), list(self.values), list(self.calldatas), self.description_hash],
        )
        return int.from_bytes(keccak(encoded), "big")

    def as_json(self) -> dict[str, Any]:
        return {
            "targets": list(self.targets),
            "values": [str(v) for v in self.values],
            "calldatas": ["0x" + c.hex() for c in self.calldatas],
            "description": self.description,
            "description_hash": "0x" + self.description_hash.hex(),
            "proposal_id": str(self.proposal_id),
        }


def prepare(controller: str, calls: Sequence[DirectiveCall], description: str) -> Prepared:
    """The proposal that makes `calls` on the controller at `controller`."""
    if not calls:
        raise MalformedCallError("a proposal makes at least one call")
    if not description.strip():
        raise MalformedCallError("a proposal needs a description")
    address = to_checksum_address(_address(controller, "controller"))
    return Prepared(
        (address,) * len(calls), (0,) * len(calls), tuple(c.calldata() for c in calls), description
    )


def decode_calls(
    controller: str, targets: Sequence[str], values: Sequence[int], calldatas: Sequence[bytes]
) -> list[DirectiveCall]:
    """The directive calls a proposal makes; MalformedCallError names the first bad one."""
    if not (len(targets) == len(values) == len(calldatas)) or not targets:
        raise MalformedCallError(
            "targets, values and calldatas must be equally long and not empty "
            f"(got {len(targets)}, {len(values)}, {len(calldatas)})"
        )
    want = _address(controller, "controller")
    by_selector = {selector(k): k for k in SIGNATURES}
    calls = []
    for i, (target, value, data) in enumerate(zip(targets, values, calldatas, strict=True)):
        if _address(target, f"target {i}") != want:
            raise MalformedCallError(f"call {i} targets {target}, not the controller {want}")
        if value != 0:
            raise MalformedCallError(f"call {i} sends value {value}; directives send none")
        kind = by_selector.get(bytes(data[:4]))
        if kind is None:
            raise MalformedCallError(
                f"call {i} selector 0x{bytes(data[:4]).hex()} is no controller directive"
            )
        try:
            args = decode(list(SIGNATURES[kind][1]), bytes(data[4:]), strict=True)
            if len(encode(list(SIGNATURES[kind][1]), list(args))) != len(data) - 4:
                raise MalformedCallError(f"call {i} has trailing bytes after its arguments")
            if kind is DirectiveKind.FORK:
                parent, child, log_id, size, root, config, uri, pause = args
                calls.append(
                    DirectiveCall(
                        kind,
                        campaign_of_key(child),
                        campaign_of_key(parent),
                        int(size),
                        bytes(root),
                        bytes(config),
                        str(uri),
                        bool(pause),
                        bytes(log_id),
                    )
                )
            else:
                calls.append(DirectiveCall(kind, campaign_of_key(args[0])))
        except (DecodingError, ValueError, OverflowError) as exc:
            raise MalformedCallError(f"call {i} ({kind}) does not decode: {exc}") from exc
    return calls


def _address(value: str, what: str) -> str:
    text = value.strip()
    if len(text) != 42 or not text.startswith("0x"):
        raise MalformedCallError(f"{what} {value!r} is not a 20-byte 0x address")
    try:
        bytes.fromhex(text[2:])
    except ValueError:
        raise MalformedCallError(f"{what} {value!r} is not a 20-byte 0x address") from None
    return text.lower()


def _b32(value: bytes | None, what: str) -> bytes:
    if value is None or len(value) != 32:
        raise MalformedCallError(f"the {what} is 32 bytes")
    return value


def _hex(value: bytes | None) -> str | None:
    return None if value is None else "0x" + value.hex()
