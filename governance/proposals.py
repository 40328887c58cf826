"""Governance proposals for a voter's own wallet: controller calldata and proposal ids.

A proposal is (targets, values, calldatas, description); OpenZeppelin's Governor names it
`uint256(keccak256(abi.encode(targets, values, calldatas, keccak256(description))))`.
`ControllerCall` is one call of a `CampaignController` governance function (`FUNCTIONS`:
the four directives, registration, the global pause, measurements and nodes);
`DirectiveCall` is the directive-only form the watcher's tests build. `prepare` turns
calls into a proposal, with OpenZeppelin's `#proposer=0x...` description suffix when a
proposer is named (only that address can then submit it: the Governor's front-running
protection). `decode_controller_calls` checks calls someone else built (every target
the controller, every calldata one of its governance functions with well-formed
arguments) and raises MalformedCallError otherwise; `describe_calls` reads any
proposal's calls for a listing, leaving what it cannot decode as raw calldata. The
function signatures mirror contracts/src/CampaignController.sol (a test holds them to
the compiled ABI).

A fork names the log whose anchored root it starts from by that log's id on the
controller (`governance.chain.chain_log_id(node, log_id)`); its child starts paused, so
a proposal that wants the child to run at once adds a resume of the child after the fork.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

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


class ArgKind(StrEnum):
    """How an argument of a controller function is read: a `campaign` is a bytes32 key
    holding a node campaign id (`campaign_key`); the others are their ABI types."""

    CAMPAIGN = "campaign"
    BYTES32 = "bytes32"
    ADDRESS = "address"
    UINT64 = "uint64"
    BOOL = "bool"
    STRING = "string"


@dataclass(frozen=True)
class Param:
    name: str
    kind: ArgKind

    @property
    def abi_type(self) -> str:
        return "bytes32" if self.kind is ArgKind.CAMPAIGN else self.kind.value


def _params(*pairs: tuple[str, ArgKind]) -> tuple[Param, ...]:
    return tuple(Param(name, kind) for name, kind in pairs)


_C, _B, _A = ArgKind.CAMPAIGN, ArgKind.BYTES32, ArgKind.ADDRESS
# The controller's functions a proposal makes (through the timelock, which holds the
# governance role); the guardian's pause-only powers are among them, as governance has
# them too.
FUNCTIONS: dict[str, tuple[Param, ...]] = {
    "registerCampaign": _params(
        ("campaignId", _C), ("configHash", _B), ("configURI", ArgKind.STRING)
    ),
    "pauseCampaign": _params(("campaignId", _C)),
    "resumeCampaign": _params(("campaignId", _C)),
    "stopCampaign": _params(("campaignId", _C)),
    "forkCampaign": _params(
        ("parent", _C),
        ("child", _C),
        ("logId", _B),
        ("fromTreeSize", ArgKind.UINT64),
        ("checkpointRoot", _B),
        ("configHash", _B),
        ("configURI", ArgKind.STRING),
        ("pauseParent", ArgKind.BOOL),
    ),
    "pauseAll": (),
    "unpauseAll": (),
    "setMeasurement": _params(("measurement", _B), ("approved", ArgKind.BOOL)),
    "approveNode": _params(("node", _A), ("measurement", _B)),
    "revokeNode": _params(("node", _A)),
}
DIRECTIVE_OF = {
    "pauseCampaign": DirectiveKind.PAUSE,
    "resumeCampaign": DirectiveKind.RESUME,
    "stopCampaign": DirectiveKind.STOP,
    "forkCampaign": DirectiveKind.FORK,
}
PROPOSE_SIGNATURE = "propose(address[],uint256[],bytes[],string)"
_PROPOSER = re.compile(r"#proposer=0x([0-9a-fA-F]{40})$")


def signature_of(function: str) -> str:
    return f"{function}({','.join(p.abi_type for p in FUNCTIONS[function])})"


def function_selector(function: str) -> bytes:
    return keccak(text=signature_of(function))[:4]


@dataclass(frozen=True)
class ControllerCall:
    """One call of a controller governance function (`FUNCTIONS`). `args` follow the
    function's parameters, readable: campaign ids as text (their bytes32 keys on the
    chain), bytes32 values as 32 bytes, addresses as 0x text (kept checksummed), sizes
    as int, flags as bool, URIs as text. A call that could not be encoded raises
    MalformedCallError when built."""

    function: str
    args: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        params = FUNCTIONS.get(self.function)
        if params is None:
            raise MalformedCallError(
                f"{self.function!r} is no governance function of the controller "
                f"(one of {', '.join(FUNCTIONS)})"
            )
        if len(self.args) != len(params):
            raise MalformedCallError(
                f"{self.function} takes {len(params)} argument(s) "
                f"({', '.join(p.name for p in params)}), got {len(self.args)}"
            )
        checked = tuple(
            _checked(p, v, self.function) for p, v in zip(params, self.args, strict=True)
        )
        object.__setattr__(self, "args", checked)

    @property
    def signature(self) -> str:
        return signature_of(self.function)

    @property
    def params(self) -> tuple[Param, ...]:
        return FUNCTIONS[self.function]

    def calldata(self) -> bytes:
        values = [
            campaign_key(v) if p.kind is ArgKind.CAMPAIGN else v
            for p, v in zip(self.params, self.args, strict=True)
        ]
        types = [p.abi_type for p in self.params]
        return function_selector(self.function) + encode(types, values)

    def arg(self, name: str) -> Any:
        for p, v in zip(self.params, self.args, strict=True):
            if p.name == name:
                return v
        raise KeyError(name)

    def campaigns(self) -> tuple[str, ...]:
        """The campaign ids the call names, in argument order."""
        return tuple(
            v for p, v in zip(self.params, self.args, strict=True) if p.kind is ArgKind.CAMPAIGN
        )

    def creates(self) -> str | None:
        """The campaign the call creates on the controller (a registration, a fork's child)."""
        if self.function == "registerCampaign":
            return str(self.arg("campaignId"))
        if self.function == "forkCampaign":
            return str(self.arg("child"))
        return None

    def directive(self) -> DirectiveCall | None:
        """The call as a directive (pause, resume, stop, fork); None for the others."""
        kind = DIRECTIVE_OF.get(self.function)
        if kind is None:
            return None
        if kind is not DirectiveKind.FORK:
            return DirectiveCall(kind, str(self.args[0]))
        parent, child, log_id, size, root, config, uri, pause = self.args
        return DirectiveCall(kind, child, parent, size, root, config, uri, pause, log_id)

    def readable(self) -> dict[str, Any]:
        """The arguments by name, as JSON: bytes32 values as 0x hex, the rest as they are."""
        return {
            p.name: "0x" + v.hex() if isinstance(v, bytes) else v
            for p, v in zip(self.params, self.args, strict=True)
        }

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "function": self.function,
            "signature": self.signature,
            "args": self.readable(),
        }
        directive = self.directive()
        if directive is not None:  # the short form the directive-only API answered with
            out |= {"kind": directive.kind.value, "campaign": directive.campaign}
        return out

    @classmethod
    def of(cls, call: DirectiveCall) -> ControllerCall:
        """The controller call a directive makes."""
        name = {k: f for f, k in DIRECTIVE_OF.items()}[call.kind]
        if call.kind is not DirectiveKind.FORK:
            return cls(name, (call.campaign,))
        if call.log_id is None:
            raise MalformedCallError(
                "a fork names the 32-byte id of the log its checkpoint is anchored in "
                "(logIdOf(node, log) on the controller)"
            )
        return cls(
            name,
            (
                call.parent,
                call.campaign,
                call.log_id,
                call.from_tree_size,
                call.checkpoint_root,
                call.config_hash,
                call.config_uri,
                call.pause_parent,
            ),
        )


def _checked(param: Param, value: Any, function: str) -> Any:
    what = f"{function}'s {param.name}"
    if param.kind is ArgKind.CAMPAIGN:
        try:
            campaign_key(value)
        except (ValueError, TypeError, AttributeError) as exc:
            raise MalformedCallError(f"{what} is no campaign id: {exc}") from None
        return value
    if param.kind is ArgKind.BYTES32:
        if not isinstance(value, bytes) or len(value) != 32:
            raise MalformedCallError(f"{what} is 32 bytes")
        return value
    if param.kind is ArgKind.ADDRESS:
        if not isinstance(value, str):
            raise MalformedCallError(f"{what} is a 20-byte 0x address")
        return to_checksum_address(_address(value, what))
    if param.kind is ArgKind.UINT64:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**64:
            raise MalformedCallError(f"{what} is an integer from 0 to 2**64 - 1")
        return value
    if param.kind is ArgKind.BOOL:
        if not isinstance(value, bool):
            raise MalformedCallError(f"{what} is true or false")
        return value
    if not isinstance(value, str):
        raise MalformedCallError(f"{what} is text")
    return value


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

    @property
    def proposer(self) -> str | None:
        """The only address that may submit the proposal (its `#proposer=` suffix)."""
        match = _PROPOSER.search(self.description)
        return to_checksum_address("0x" + match.group(1)) if match else None

    def propose_calldata(self) -> bytes:
        """The Governor's `propose(targets, values, calldatas, description)` call, for a
        wallet that sends raw transaction data to the Governor."""
        args = [list(self.targets), list(self.values), list(self.calldatas), self.description]
        types = ["address[]", "uint256[]", "bytes[]", "string"]
        return keccak(text=PROPOSE_SIGNATURE)[:4] + encode(types, args)

    def as_json(self) -> dict[str, Any]:
        return {
            "targets": list(self.targets),
            "values": [str(v) for v in self.values],
            "calldatas": ["0x" + c.hex() for c in self.calldatas],
            "description": self.description,
            "description_hash": "0x" + self.description_hash.hex(),
            "proposal_id": str(self.proposal_id),
        }


class Encodable(Protocol):
    def calldata(self) -> bytes: ...


def with_proposer(description: str, proposer: str) -> str:
    """`description` ending in OpenZeppelin's `#proposer=0x<address>` suffix: the Governor
    then refuses the proposal from anyone else (no one can front-run the proposer's
    transaction and take the proposal). A description naming another proposer is refused."""
    address = to_checksum_address(_address(proposer, "proposer"))
    match = _PROPOSER.search(description)
    if match is None:
        return f"{description}#proposer={address}"
    if match.group(1).lower() != address[2:].lower():
        raise MalformedCallError(
            f"the description already names proposer 0x{match.group(1)}, not {address}"
        )
    return description


def prepare(
    controller: str,
    calls: Sequence[Encodable],
    description: str,
    *,
    proposer: str | None = None,
) -> Prepared:
    """The proposal that makes `calls` on the controller at `controller`; with
    `proposer`, only that address can submit it (`with_proposer`)."""
    if not calls:
        raise MalformedCallError("a proposal makes at least one call")
    if not description.strip():
        raise MalformedCallError("a proposal needs a description")
    if proposer is not None:
        description = with_proposer(description, proposer)
    address = to_checksum_address(_address(controller, "controller"))
    datas = []
    for call in calls:
        try:
            datas.append(call.calldata())
        except (EncodingError, OverflowError, TypeError, ValueError) as exc:
            raise MalformedCallError(f"cannot encode call {len(datas)}: {exc}") from exc
    return Prepared((address,) * len(calls), (0,) * len(calls), tuple(datas), description)


def decode_controller_calls(
    controller: str, targets: Sequence[str], values: Sequence[int], calldatas: Sequence[bytes]
) -> list[ControllerCall]:
    """The controller calls a proposal makes; MalformedCallError names the first bad one."""
    if not (len(targets) == len(values) == len(calldatas)) or not targets:
        raise MalformedCallError(
            "targets, values and calldatas must be equally long and not empty "
            f"(got {len(targets)}, {len(values)}, {len(calldatas)})"
        )
    return [
        _decode_one(controller, i, target, value, bytes(data))
        for i, (target, value, data) in enumerate(zip(targets, values, calldatas, strict=True))
    ]


def decode_calls(
    controller: str, targets: Sequence[str], values: Sequence[int], calldatas: Sequence[bytes]
) -> list[DirectiveCall]:
    """The directive calls a proposal makes; MalformedCallError names the first bad one
    (a call of another controller function included)."""
    found = []
    for i, call in enumerate(decode_controller_calls(controller, targets, values, calldatas)):
        directive = call.directive()
        if directive is None:
            raise MalformedCallError(f"call {i} ({call.function}) is no controller directive")
        found.append(directive)
    return found


def describe_calls(
    controller: str, targets: Sequence[str], values: Sequence[int], calldatas: Sequence[bytes]
) -> list[dict[str, Any]]:
    """Each call of a proposal as JSON for a listing: target, value and calldata, and,
    for a controller governance call, its function and readable arguments; a call that
    does not decode (another contract, a malformed one) keeps `function` None and says
    why in `error`."""
    described = []
    for i, (target, value, data) in enumerate(zip(targets, values, calldatas, strict=True)):
        entry: dict[str, Any] = {
            "target": target,
            "value": str(value),
            "calldata": "0x" + bytes(data).hex(),
            "function": None,
            "signature": None,
            "args": {},
        }
        try:
            entry["target"] = to_checksum_address(_address(target, f"target {i}"))
            entry |= _decode_one(controller, i, target, value, bytes(data)).as_json()
        except MalformedCallError as exc:
            entry["error"] = str(exc)
        described.append(entry)
    return described


def _decode_one(controller: str, i: int, target: str, value: int, data: bytes) -> ControllerCall:
    want = _address(controller, "controller")
    if _address(target, f"target {i}") != want:
        raise MalformedCallError(f"call {i} targets {target}, not the controller {want}")
    if value != 0:
        raise MalformedCallError(f"call {i} sends value {value}; controller calls send none")
    by_selector = {function_selector(f): f for f in FUNCTIONS}
    function = by_selector.get(data[:4])
    if function is None:
        raise MalformedCallError(
            f"call {i} selector 0x{data[:4].hex()} is no governance function of the controller"
        )
    params = FUNCTIONS[function]
    types = [p.abi_type for p in params]
    try:
        raw = decode(types, data[4:], strict=True)
        if len(encode(types, list(raw))) != len(data) - 4:
            raise MalformedCallError(f"call {i} has trailing bytes after its arguments")
        args = tuple(
            campaign_of_key(v)
            if p.kind is ArgKind.CAMPAIGN
            else bytes(v)
            if isinstance(v, bytes)
            else v
            for p, v in zip(params, raw, strict=True)
        )
    except (DecodingError, ValueError, OverflowError) as exc:
        raise MalformedCallError(f"call {i} ({function}) does not decode: {exc}") from exc
    return ControllerCall(function, args)


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
