"""The chain client: the only module that imports web3.

It connects to a JSON-RPC endpoint by URL, or to an embedded in-process EVM (eth-tester
on py-evm) for the demo and the fast tests; checks the chain id and that each contract
address holds the code compiled from `contracts/`; deploys the contract set; signs
transactions with a local key (nonce, EIP-1559 fees and gas estimated here); reads
events (in block windows that narrow while an endpoint refuses a wide eth_getLogs range);
and translates every web3, provider and eth-tester failure into the `ChainError`
tree, decoding reverts into the contracts' custom errors.

On top of that: `Controller` (anchors, the node allow-list and directory, acknowledgements) and
`ControllerReader` (the controller as a directive source's reader). A node anchors its log
(`log_id`, the SHA-256 of its origin line) under `chain_log_id(node, log_id)`, an id bound
to its address that no other account can write to. The Governor relay
and the node's acknowledgements are in `governance.relay`.
"""

from __future__ import annotations

import ast
import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, NewType, cast

import requests
from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_account.typed_transactions.typed_transaction import TypedTransaction
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from hexbytes import HexBytes
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import (
    ContractCustomError,
    ContractLogicError,
    TransactionNotFound,
    Web3RPCError,
)

from governance.deploy_config import DEV_PARAMS, DEV_SUPPLY, Allocation, Clock, DaoParams
from governance.errors import (
    ChainError,
    ChainUnavailableError,
    ContractMismatchError,
    NonceError,
    NotAnEvmNodeError,
    SourceError,
    TransactionRevertedError,
    UnfundedAccountError,
    WrongChainError,
)
from governance.evm_source import ControllerEvent

log = logging.getLogger(__name__)

Address = NewType("Address", str)  # checksummed 0x address
Wei = NewType("Wei", int)

CONTRACT_NAMES = ("GovToken", "DaoTimelock", "DaoGovernor", "CampaignController")
DEFAULT_PRIORITY_FEE = Wei(1_000_000_000)
GAS_MARGIN = 1.2  # estimates can fall short when state changes between estimate and mining
REPLACEMENT_BUMP = 1.125  # geth and anvil want >= 10% higher fees to replace a pending tx
_ERROR_STRING = bytes.fromhex("08c379a0")  # Error(string)
_PANIC = bytes.fromhex("4e487b71")  # Panic(uint256)
LOG_WINDOW = 5_000  # blocks per eth_getLogs request at first (public endpoints cap ranges)


@dataclass(frozen=True)
class Artifact:
    """One compiled contract: ABI, creation code, runtime code and its immutable ranges."""

    name: str
    abi: list[dict[str, Any]]
    bytecode: bytes
    deployed_bytecode: bytes
    immutable_ranges: tuple[tuple[int, int], ...]

    def runtime_matches(self, code: bytes) -> bool:
        """Whether deployed `code` is this contract: equal outside the immutable ranges."""
        if len(code) != len(self.deployed_bytecode):
            return False
        expected, got = bytearray(self.deployed_bytecode), bytearray(code)
        for start, length in self.immutable_ranges:
            expected[start : start + length] = bytes(length)
            got[start : start + length] = bytes(length)
        return expected == got


@cache
def artifact(name: str) -> Artifact:
    """The committed artifact `governance/artifacts/<name>.json` (see contracts/README.md)."""
    if name not in CONTRACT_NAMES:
        raise ValueError(f"unknown contract {name!r}; expected one of {CONTRACT_NAMES}")
    text = resources.files("governance").joinpath("artifacts", f"{name}.json").read_text()
    raw = json.loads(text)
    return Artifact(
        name=name,
        abi=raw["abi"],
        bytecode=bytes.fromhex(raw["bytecode"][2:]),
        deployed_bytecode=bytes.fromhex(raw["deployedBytecode"][2:]),
        immutable_ranges=tuple((int(s), int(n)) for s, n in raw["immutableRanges"]),
    )


@cache
def _error_table() -> dict[bytes, tuple[str, list[str]]]:
    """Custom-error selector -> (name, argument types), over every contract's ABI."""
    table: dict[bytes, tuple[str, list[str]]] = {}
    for name in CONTRACT_NAMES:
        for item in artifact(name).abi:
            if item.get("type") == "error":
                types = [_abi_type(i) for i in item["inputs"]]
                selector = keccak(text=f"{item['name']}({','.join(types)})")[:4]
                table[selector] = (item["name"], types)
    return table


def _abi_type(item: Mapping[str, Any]) -> str:
    if item["type"].startswith("tuple"):
        inner = ",".join(_abi_type(c) for c in item["components"])
        return f"({inner}){item['type'][5:]}"
    return str(item["type"])


def decode_revert(data: bytes) -> str:
    """A revert payload as text: `Name(arg, ...)` for a custom error, else the message."""
    if not data:
        return "reverted without a reason"
    selector, body = data[:4], data[4:]
    try:
        if selector == _ERROR_STRING:
            return str(abi_decode(["string"], body)[0])
        if selector == _PANIC:
            return f"Panic(0x{abi_decode(['uint256'], body)[0]:02x})"
        if selector in _error_table():
            name, types = _error_table()[selector]
            args = abi_decode(types, body)
            return f"{name}({', '.join(_show(a, t) for a, t in zip(args, types, strict=True))})"
    except Exception:  # a malformed payload still gets reported, as hex
        pass
    return f"unknown error 0x{data.hex()}"


def _show(value: Any, abi_type: str) -> str:
    if abi_type == "address":
        return str(to_checksum_address(value))
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return str(value)


@dataclass(frozen=True)
class SignedTx:
    """A signed transaction not yet known to be mined; its hash is fixed before sending."""

    tx_hash: bytes
    raw: bytes
    nonce: int
    sender: Address


@dataclass(frozen=True)
class Receipt:
    tx_hash: bytes
    block_number: int
    block_hash: bytes
    gas_used: int
    succeeded: bool


@dataclass(frozen=True)
class AnchorEvent:
    """One `LogRootAnchored` event as read from the chain: `log_id` is the node's name for
    its log, `chain_log_id` the id it is anchored under (bound to `node`)."""

    log_id: bytes
    chain_log_id: bytes
    tree_size: int
    root: bytes
    node: Address
    block_number: int
    block_hash: bytes
    tx_hash: bytes


@dataclass(frozen=True)
class LogHead:
    """A log's last anchor on the chain: its tree size and root (0 and zeros: none yet)."""

    tree_size: int
    root: bytes


@dataclass(frozen=True)
class AckEvent:
    """One `DirectiveAcknowledged` event: a node applied a campaign's directive `epoch`."""

    campaign_key: bytes
    epoch: int
    node: Address
    entry_hash: bytes
    block_number: int
    tx_hash: bytes


@dataclass(frozen=True)
class DirectoryEntry:
    """A node's entry in the controller's directory: its API's base URL and the id its
    log is anchored under (`chain_log_id(node, log name)`)."""

    node: Address
    endpoint: str
    chain_log_id: bytes


@dataclass(frozen=True)
class Deployment:
    """Where the contract set lives; saved as `<home>/chain.json`."""

    chain_id: int
    addresses: Mapping[str, Address]
    deployer: Address
    block_number: int

    def to_json(self) -> str:
        return json.dumps(
            {
                "chain_id": self.chain_id,
                "addresses": dict(self.addresses),
                "deployer": self.deployer,
                "block_number": self.block_number,
            },
            indent=2,
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> Deployment:
        raw = json.loads(text)
        missing = [n for n in CONTRACT_NAMES if n not in raw.get("addresses", {})]
        if missing:
            raise ValueError(f"deployment record lacks addresses for {', '.join(missing)}")
        return cls(
            chain_id=int(raw["chain_id"]),
            addresses={k: Address(to_checksum_address(v)) for k, v in raw["addresses"].items()},
            deployer=Address(to_checksum_address(raw["deployer"])),
            block_number=int(raw["block_number"]),
        )


def new_private_key() -> bytes:
    """A fresh secp256k1 key for a node's chain account."""
    key: bytes = Account.create().key
    return key


def address_of(private_key: bytes) -> Address:
    return Address(Account.from_key(private_key).address)


class Chain:
    """A connection to one EVM chain. Build it with `Chain.connect` or `Chain.embedded`."""

    def __init__(self, w3: Web3, chain_id: int, label: str) -> None:
        self._w3 = w3
        self.chain_id = chain_id
        self.label = label
        self.faucet_key: bytes | None = None
        self.log_window = LOG_WINDOW
        self._journal: Path | None = None

    @classmethod
    def connect(
        cls, rpc_url: str, *, expected_chain_id: int | None = None, timeout_s: float = 10.0
    ) -> Chain:
        """Connect to `rpc_url` and check that it is an EVM node on the expected chain.

        Raises ChainUnavailableError (nothing answered), NotAnEvmNodeError (something
        answered, but not JSON-RPC with eth_chainId) or WrongChainError.
        """
        if not rpc_url.startswith(("http://", "https://")):
            raise NotAnEvmNodeError(f"{rpc_url!r}: expected an http:// or https:// JSON-RPC URL")
        w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": timeout_s}))
        chain = cls(w3, 0, rpc_url)
        try:
            chain_id = int(w3.eth.chain_id)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise ChainUnavailableError(
                f"no answer from the RPC endpoint {rpc_url}: {exc}"
            ) from None
        except Exception as exc:
            raise NotAnEvmNodeError(
                f"{rpc_url} did not answer eth_chainId like an Ethereum JSON-RPC node "
                f"({type(exc).__name__}: {_short(exc)})"
            ) from None
        chain.chain_id = chain_id
        if expected_chain_id is not None and chain_id != expected_chain_id:
            raise WrongChainError(
                f"{rpc_url} serves chain id {chain_id}, but chain id {expected_chain_id} "
                "is expected"
            )
        return chain

    @classmethod
    def embedded(cls, journal: Path | None = None, *, record: bool = True) -> Chain:
        """An in-process EVM (eth-tester, py-evm). `faucet_key` holds funded ether.

        With `journal`, every transaction accepted is appended to that file (one signed
        transaction in hex per line), and a journal left by an earlier process is replayed
        first: the chain's state, contract addresses and events come back as they were
        (block hashes and timestamps differ). Each replayed transaction is still checked
        by the EVM: its sender is recovered from its signature. With `record` false the
        journal is only replayed (an auditor's read-only view).
        """
        from eth_tester import EthereumTester, PyEVMBackend
        from web3.providers.eth_tester import EthereumTesterProvider

        backend = PyEVMBackend()
        tester = EthereumTester(backend)
        w3 = Web3(EthereumTesterProvider(tester))
        chain = cls(w3, int(w3.eth.chain_id), "embedded")
        chain.faucet_key = backend.account_keys[0].to_bytes()
        if journal is not None:
            if journal.exists():
                for number, line in enumerate(journal.read_text().splitlines(), 1):
                    try:
                        raw = bytes.fromhex(line.strip())
                    except ValueError:
                        raise ChainError(
                            f"{journal}: line {number} is not a hex transaction; the embedded "
                            "chain's journal is damaged (move it aside to start a new chain)"
                        ) from None
                    chain.broadcast(raw)
            chain._journal = journal if record else None
            chain.label = f"embedded ({journal})"
        return chain

    def call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one web3 call, translating its failures into ChainError."""
        try:
            return fn(*args, **kwargs)
        except ChainError:
            raise
        except Exception as exc:
            raise translate(exc, f"{what} on {self.label}") from exc

    def head(self) -> int:
        return int(self.call("reading the block number", lambda: self._w3.eth.block_number))

    def events(
        self,
        event: Any,
        what: str,
        *,
        from_block: int = 0,
        to_block: int | str = "latest",
        filters: Mapping[str, Any] | None = None,
    ) -> list[Any]:
        """Every log of the contract event `event` (optionally filtered on indexed
        arguments) from `from_block` to `to_block`, in chain order.

        Read in windows of `log_window` blocks: public endpoints refuse a wide eth_getLogs
        range or a large answer. A refused window is split in halves, and the narrower
        window kept for later reads, until a single block is refused: that error is
        raised. An endpoint that does not answer raises at once."""
        last = self.head() if to_block == "latest" else int(to_block)
        extra = {} if filters is None else {"argument_filters": dict(filters)}
        found: list[Any] = []
        start = from_block
        while start <= last:
            end = min(last, start + self.log_window - 1)
            try:
                found += self.call(what, event.get_logs, from_block=start, to_block=end, **extra)
            except ChainUnavailableError:
                raise
            except ChainError as exc:
                if end == start:
                    raise
                self.log_window = (end - start + 1) // 2
                log.info(
                    "eth_getLogs range narrowed",
                    extra={"chain": self.label, "blocks": self.log_window, "error": str(exc)},
                )
                continue
            start = end + 1
        return found

    def block_hash(self, number: int) -> bytes | None:
        """The hash of block `number` on the current canonical chain, or None past the head."""
        try:
            block = self._w3.eth.get_block(number)
        except Exception as exc:
            if _is_not_found(exc):
                return None
            raise translate(exc, f"reading block {number} on {self.label}") from exc
        return bytes(block["hash"])

    def timestamp(self) -> int:
        """The latest block's timestamp: the chain's clock (timelock delays count in it)."""
        block = self.call("reading the latest block", self._w3.eth.get_block, "latest")
        return int(block["timestamp"])

    def block_timestamp(self, number: int) -> int:
        """The timestamp of block `number` (seconds since the epoch, the chain's clock)."""
        block = self.call(f"reading block {number}", self._w3.eth.get_block, number)
        return int(block["timestamp"])

    def balance(self, address: str) -> Wei:
        return Wei(int(self.call("reading a balance", self._w3.eth.get_balance, address)))

    def nonce(self, address: str, *, pending: bool = False) -> int:
        """The next nonce of `address`: counting mined transactions, or pending ones too."""
        tag = "pending" if pending else "latest"
        return int(self.call("reading a nonce", self._w3.eth.get_transaction_count, address, tag))

    def code(self, address: str) -> bytes:
        return bytes(self.call("reading contract code", self._w3.eth.get_code, address))

    def call_as(
        self, sender: str | None, to: str, data: bytes, *, block: int | str = "latest"
    ) -> bytes:
        """What `data` sent to `to` from `sender` returns, run as an eth_call at `block`
        (nothing is signed or sent); a revert raises TransactionRevertedError naming the
        contract's error."""
        params: dict[str, Any] = {"to": checksum_address(to), "data": "0x" + data.hex()}
        if sender is not None:
            params["from"] = checksum_address(sender)
        tester = getattr(self._w3.provider, "ethereum_tester", None)
        if tester is not None and sender is not None and block == "latest":
            return self._embedded_call_as(tester, params["from"], params["to"], data)
        return bytes(self.call(f"calling {params['to']}", self._w3.eth.call, params, block))

    def _embedded_call_as(self, tester: Any, sender: str, to: str, data: bytes) -> bytes:
        """`call_as` on the embedded EVM. py-evm makes an eth_call's sender pay for its gas,
        which JSON-RPC nodes do not (a call from a contract such as the timelock, which
        holds no ether, would fail there): the call runs on the latest state with the
        sender's balance raised, and that state is thrown away afterwards."""
        from eth_tester.backends.pyevm.main import (  # the embedded chain only
            EVMSpoofTransaction,
            _get_vm_for_block_number,
        )

        what = f"calling {to} as {sender} on {self.label}"
        backend = tester.backend
        raw = tester.normalizer.normalize_inbound_transaction(
            {"from": sender, "to": to, "data": "0x" + data.hex(), "gas": 30_000_000, "value": 0}
        )
        try:
            unsigned = backend._get_normalized_and_unsigned_evm_transaction(raw, "latest")
            transaction = EVMSpoofTransaction(unsigned, from_=raw["from"])
            state = _get_vm_for_block_number(backend.chain, "latest").state
            snapshot = state.snapshot()
            try:
                state.set_balance(raw["from"], 10**30)
                computation = state.apply_transaction(transaction)
            finally:
                state.revert(snapshot)
        except Exception as exc:
            raise translate(exc, what) from exc
        if computation.is_error:
            reason = decode_revert(bytes(computation.output))
            raise TransactionRevertedError(f"{what}: the contract reverted with {reason}", reason)
        return bytes(computation.output)

    def receipt(self, tx_hash: bytes) -> Receipt | None:
        """The receipt of `tx_hash` on the current chain, or None if it is not mined there."""
        try:
            r = self._w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
        except Exception as exc:
            if _is_not_found(exc):
                return None
            raise translate(exc, f"reading the receipt of 0x{tx_hash.hex()}") from exc
        if r is None or r.get("blockNumber") is None:
            return None
        return Receipt(
            tx_hash=bytes(r["transactionHash"]),
            block_number=int(r["blockNumber"]),
            block_hash=bytes(r["blockHash"]),
            gas_used=int(r["gasUsed"]),
            succeeded=int(r["status"]) == 1,
        )

    def contract(self, name: str, address: str, *, check_code: bool = True) -> Contract:
        """A handle on contract `name` at `address`, refusing an address with other code."""
        art = artifact(name)
        checksummed = checksum_address(address)
        if check_code:
            code = self.code(checksummed)
            if not code:
                raise ContractMismatchError(
                    f"{checksummed} on {self.label} holds no contract; expected {name}"
                )
            if not art.runtime_matches(code):
                raise ContractMismatchError(
                    f"{checksummed} on {self.label} holds a contract that is not asi-node's "
                    f"{name} (its code differs from the committed artifact)"
                )
        contract: Contract = self._w3.eth.contract(address=cast(Any, checksummed), abi=art.abi)
        return contract

    def fees(self) -> dict[str, int]:
        """EIP-1559 fee fields: twice the latest base fee plus the priority fee."""
        block = self.call("reading the latest block", self._w3.eth.get_block, "latest")
        base = int(block.get("baseFeePerGas") or 0)
        try:
            tip = int(self._w3.eth.max_priority_fee)
        except Exception:  # eth-tester and some nodes lack eth_maxPriorityFeePerGas
            tip = DEFAULT_PRIORITY_FEE
        return {"maxFeePerGas": 2 * base + tip, "maxPriorityFeePerGas": tip}

    def sign(
        self,
        key: bytes,
        call: Any,
        *,
        nonce: int | None = None,
        gas: int | None = None,
        value: int = 0,
        replaces: bytes | None = None,
    ) -> SignedTx:
        """Estimate, price and sign `call` (a contract function call or constructor).

        With `replaces` (a signed transaction still unmined), both fee fields are at least
        `REPLACEMENT_BUMP` times the old ones, so nodes accept it in the old one's place.
        A call that would revert raises TransactionRevertedError naming the contract's
        error; an account that cannot pay raises UnfundedAccountError. Nothing is sent.
        """
        acct: LocalAccount = Account.from_key(key)
        sender = Address(acct.address)
        if nonce is None:
            nonce = self.nonce(sender, pending=True)
        tx_fields: dict[str, Any] = {"from": sender, "nonce": nonce, "value": value}
        tx_fields.update(self.fees())
        if replaces is not None:
            old = TypedTransaction.from_bytes(HexBytes(replaces)).as_dict()
            for name in ("maxFeePerGas", "maxPriorityFeePerGas"):
                bumped = int(int(old[name]) * REPLACEMENT_BUMP) + 1
                tx_fields[name] = max(tx_fields[name], bumped)
        tx_fields["chainId"] = self.chain_id
        if gas is None:
            estimate = self.call(
                "estimating gas", call.estimate_gas, {"from": sender, "value": value}
            )
            gas = int(estimate * GAS_MARGIN)
        tx_fields["gas"] = gas
        cost = gas * tx_fields["maxFeePerGas"] + value
        balance = self.balance(sender)
        if balance < cost:
            raise UnfundedAccountError(
                f"account {sender} on {self.label} holds {balance} wei but the transaction "
                f"may cost up to {cost} wei; fund it and retry"
            )
        tx = self.call("building a transaction", call.build_transaction, tx_fields)
        signed = acct.sign_transaction(tx)
        return SignedTx(
            tx_hash=bytes(signed.hash),
            raw=bytes(signed.raw_transaction),
            nonce=nonce,
            sender=sender,
        )

    def transfer(self, key: bytes, to: str, value: int) -> Receipt:
        """Send `value` wei from `key`'s account to `to` and wait for it to be mined."""
        acct: LocalAccount = Account.from_key(key)
        fees = self.fees()
        tx: dict[str, Any] = {
            "to": checksum_address(to),
            "value": value,
            "gas": 21_000,
            "nonce": self.nonce(acct.address, pending=True),
            "chainId": self.chain_id,
            **fees,
        }
        signed = acct.sign_transaction(tx)
        return self.wait(self.broadcast(bytes(signed.raw_transaction)))

    def broadcast(self, raw: bytes) -> bytes:
        """Send a signed transaction; returns its hash. Resending a known one is harmless."""
        try:
            tx_hash = bytes(self._w3.eth.send_raw_transaction(raw))
        except Exception as exc:
            text = _short(exc).lower()
            if "already known" in text or "already imported" in text:
                return bytes(keccak(raw))
            raise translate(exc, f"sending a transaction to {self.label}") from exc
        if self._journal is not None:
            with self._journal.open("a") as fh:
                fh.write(raw.hex() + "\n")
        return tx_hash

    def wait(self, tx_hash: bytes, timeout_s: float = 60.0) -> Receipt:
        """Wait until `tx_hash` is mined; raise TransactionRevertedError if it failed."""
        self.call(
            "waiting for a receipt",
            self._w3.eth.wait_for_transaction_receipt,
            tx_hash,
            timeout=timeout_s,
            poll_latency=0.05,
        )
        receipt = self.receipt(tx_hash)
        if receipt is None:
            raise ChainError(f"transaction 0x{tx_hash.hex()} vanished after being mined")
        if not receipt.succeeded:
            raise TransactionRevertedError(
                f"transaction 0x{tx_hash.hex()} reverted in block {receipt.block_number}"
            )
        return receipt

    def send(self, key: bytes, call: Any, *, value: int = 0) -> Receipt:
        """Sign, send and wait for one transaction."""
        return self.wait(self.broadcast(self.sign(key, call, value=value).raw))

    def rpc(self, method: str, params: Sequence[Any]) -> Any:
        """A raw JSON-RPC request (tests use it for anvil's evm_* methods)."""
        response = self.call(method, self._w3.provider.make_request, method, list(params))
        if "error" in response:
            raise ChainError(f"{method} failed on {self.label}: {response['error']}")
        return response.get("result")


class Controller:
    """The CampaignController at one address, its code checked against the artifact."""

    def __init__(self, chain: Chain, address: str, *, check_code: bool = True) -> None:
        self.chain = chain
        self.contract = chain.contract("CampaignController", address, check_code=check_code)
        self.address = Address(self.contract.address)

    def anchor_call(self, log_id: bytes, tree_size: int, root: bytes, prev_root: bytes) -> Any:
        return self.contract.functions.anchorLogRoot(
            _bytes32(log_id, "log id"),
            tree_size,
            _bytes32(root, "root"),
            _bytes32(prev_root, "previous root"),
        )

    def prepare_anchor(
        self,
        key: bytes,
        log_id: bytes,
        tree_size: int,
        root: bytes,
        prev_root: bytes,
        *,
        nonce: int | None = None,
        replaces: bytes | None = None,
    ) -> SignedTx:
        """Sign `anchorLogRoot(log_id, tree_size, root, prev_root)` from `key`'s account:
        `prev_root` is the root last anchored for this log (32 zero bytes for its first
        anchor). A call that would revert is raised, not signed."""
        call = self.anchor_call(log_id, tree_size, root, prev_root)
        return self.chain.sign(key, call, nonce=nonce, replaces=replaces)

    def log_head(self, log_id: bytes, node: str) -> LogHead:
        """The last anchor of `node`'s log `log_id`."""
        call = self.contract.functions.logHead(chain_log_id(node, log_id)).call
        _, size, root = self.chain.call("reading logHead", call)
        return LogHead(int(size), bytes(root))

    def anchored_root(self, log_id: bytes, node: str, tree_size: int) -> bytes | None:
        """The root `node` anchored for its log `log_id` at `tree_size`, or None."""
        call = self.contract.functions.anchoredRoot(chain_log_id(node, log_id), tree_size).call
        root = bytes(self.chain.call("reading anchoredRoot", call))
        return None if root == bytes(32) else root

    def node_approved(self, address: str) -> bool:
        """Whether `address` may anchor and acknowledge now: approved, and not suspended
        by the removal of its TEE measurement."""
        return bool(
            self.chain.call(
                "reading isNodeActive",
                self.contract.functions.isNodeActive(checksum_address(address)).call,
            )
        )

    def anchors(
        self,
        log_id: bytes,
        *,
        node: str | None = None,
        from_block: int = 0,
        to_block: int | str = "latest",
    ) -> list[AnchorEvent]:
        """Every `LogRootAnchored` event of log `log_id` in the block range, in chain
        order: those of `node`'s log, or of every account that anchored under that name."""
        filters: dict[str, Any] = {"logName": _bytes32(log_id, "log id")}
        if node is not None:
            filters["node"] = checksum_address(node)
        logs = self.chain.events(
            self.contract.events.LogRootAnchored(),
            "reading anchor events",
            from_block=from_block,
            to_block=to_block,
            filters=filters,
        )
        return [
            AnchorEvent(
                log_id=bytes(e["args"]["logName"]),
                chain_log_id=bytes(e["args"]["logId"]),
                tree_size=int(e["args"]["treeSize"]),
                root=bytes(e["args"]["root"]),
                node=Address(e["args"]["node"]),
                block_number=int(e["blockNumber"]),
                block_hash=bytes(e["blockHash"]),
                tx_hash=bytes(e["transactionHash"]),
            )
            for e in logs
        ]

    def acknowledge_call(self, campaign_key: bytes, epoch: int, entry_hash: bytes) -> Any:
        return self.contract.functions.acknowledge(
            _bytes32(campaign_key, "campaign key"), epoch, _bytes32(entry_hash, "entry hash")
        )

    def acknowledged_epoch(self, campaign_key: bytes, node: str) -> int:
        """The last epoch of the campaign that `node` acknowledged (0: none)."""
        call = self.contract.functions.acknowledgedEpoch(
            _bytes32(campaign_key, "campaign key"), checksum_address(node)
        ).call
        return int(self.chain.call("reading acknowledgedEpoch", call))

    def acknowledgements(
        self,
        *,
        campaign_key: bytes | None = None,
        node: str | None = None,
        from_block: int = 0,
    ) -> list[AckEvent]:
        """`DirectiveAcknowledged` events, optionally of one campaign and one node, in order."""
        filters: dict[str, Any] = {}
        if campaign_key is not None:
            filters["campaignId"] = _bytes32(campaign_key, "campaign key")
        if node is not None:
            filters["node"] = checksum_address(node)
        logs = self.chain.events(
            self.contract.events.DirectiveAcknowledged(),
            "reading acknowledgement events",
            from_block=from_block,
            filters=filters,
        )
        return [
            AckEvent(
                campaign_key=bytes(e["args"]["campaignId"]),
                epoch=int(e["args"]["epoch"]),
                node=Address(e["args"]["node"]),
                entry_hash=bytes(e["args"]["logEntryHash"]),
                block_number=int(e["blockNumber"]),
                tx_hash=bytes(e["transactionHash"]),
            )
            for e in logs
        ]

    def approved_nodes(self, *, from_block: int = 0) -> set[Address]:
        """The active nodes as the events leave them: approvals, minus later revocations
        and minus nodes whose measurement was removed after their approval."""
        events = []
        for name in ("NodeApproved", "NodeRevoked", "MeasurementSet"):
            event = getattr(self.contract.events, name)()
            logs = self.chain.events(event, f"reading {name} events", from_block=from_block)
            events += [(int(e["blockNumber"]), int(e["logIndex"]), name, e["args"]) for e in logs]
        measurement_of: dict[Address, bytes] = {}  # approved nodes -> their measurement
        for _, _, name, args in sorted(events, key=lambda e: (e[0], e[1])):
            if name == "NodeApproved":
                measurement_of[Address(args["node"])] = bytes(args["measurement"])
            elif name == "NodeRevoked":
                measurement_of.pop(Address(args["node"]), None)
            elif not args["approved"]:
                removed = bytes(args["measurement"])
                for node in [n for n, m in measurement_of.items() if m == removed]:
                    del measurement_of[node]
        return set(measurement_of)

    def publish_call(self, endpoint: str, log_id: bytes) -> Any:
        """`publishNode(endpoint, log_id)`: the sender's directory entry, its log `log_id`
        listed as `chain_log_id(sender, log_id)`."""
        return self.contract.functions.publishNode(endpoint, _bytes32(log_id, "log id"))

    def check_publish(self, sender: str, endpoint: str, log_id: bytes) -> None:
        """Run `publishNode(endpoint, log_id)` from `sender` as an eth_call (nothing is
        signed or sent, no ether needed): TransactionRevertedError names what the
        controller refuses (`NodeNotApproved`, `NodeSuspended`, `InvalidArgument`)."""
        data = self.contract.encode_abi("publishNode", args=[endpoint, _bytes32(log_id, "log id")])
        self.chain.call_as(sender, self.address, bytes.fromhex(data.removeprefix("0x")))

    def directory(self) -> list[DirectoryEntry]:
        """The directory's entries of the nodes active now, in publishing order."""
        rows = self.chain.call("reading directory", self.contract.functions.directory().call)
        return [_entry(row) for row in rows]

    def node_entry(self, address: str) -> DirectoryEntry | None:
        """What `address` published (whether or not it is active now), or None."""
        call = self.contract.functions.nodeEntry(checksum_address(address)).call
        entry = _entry(self.chain.call("reading nodeEntry", call))
        return None if int(entry.node, 16) == 0 else entry

    def find_anchor(
        self, log_id: bytes, tree_size: int, *, node: str, from_block: int = 0
    ) -> AnchorEvent | None:
        """`node`'s anchor of its log `log_id` at `tree_size`, or None."""
        for anchor in self.anchors(log_id, node=node, from_block=from_block):
            if anchor.tree_size == tree_size:
                return anchor
        return None

    def read_events(
        self,
        names: str | Sequence[str],
        *,
        from_block: int = 0,
        to_block: int | str = "latest",
        filters: Mapping[str, Any] | None = None,
    ) -> list[ControllerEvent]:
        """Every event of the controller named (one, optionally filtered on its indexed
        arguments, or several, read together: one eth_getLogs per block window) in the
        block range, decoded, in chain order."""
        wanted = [names] if isinstance(names, str) else list(names)
        if len(wanted) == 1:
            source: Any = getattr(self.contract.events, wanted[0])()
        elif filters:
            raise ValueError("argument filters apply to one event at a time")
        else:
            source = _AnyEvent(self.chain, self.contract, wanted)
        logs = self.chain.events(
            source,
            f"reading {', '.join(wanted)} events",
            from_block=from_block,
            to_block=to_block,
            filters=filters,
        )
        found = [
            ControllerEvent(
                name=str(e["event"]),
                block=int(e["blockNumber"]),
                log_index=int(e["logIndex"]),
                tx_hash="0x" + bytes(e["transactionHash"]).hex(),
                args=dict(e["args"]),
            )
            for e in logs
        ]
        return sorted(found, key=lambda e: (e.block, e.log_index))

    def campaign_epoch(self, campaign_key: bytes, *, block: int | str = "latest") -> int:
        """The campaign's epoch (how many directives it has had) as of `block`; 0 for a
        campaign the controller does not know."""
        call = self.contract.functions.campaign(_bytes32(campaign_key, "campaign key")).call
        try:
            found = self.chain.call("reading a campaign", call, block_identifier=block)
        except TransactionRevertedError as exc:
            if exc.reason.startswith("UnknownCampaign("):
                return 0
            raise
        return int(found[1])  # (status, epoch, configHash, ...)

    def global_epoch(self, *, block: int | str = "latest") -> int:
        """How many times the global pause was set or lifted, as of `block`."""
        call = self.contract.functions.globalEpoch().call
        return int(self.chain.call("reading globalEpoch", call, block_identifier=block))

    def node_active_at(self, address: str, *, block: int | str = "latest") -> bool:
        """`isNodeActive(address)` as of `block` (old blocks need an archive node)."""
        call = self.contract.functions.isNodeActive(checksum_address(address)).call
        return bool(self.chain.call("reading isNodeActive", call, block_identifier=block))

    def acknowledged_epoch_at(
        self, campaign_key: bytes, node: str, *, block: int | str = "latest"
    ) -> int:
        """The last epoch of the campaign `node` acknowledged, as of `block` (0: none)."""
        call = self.contract.functions.acknowledgedEpoch(
            _bytes32(campaign_key, "campaign key"), checksum_address(node)
        ).call
        return int(self.chain.call("reading acknowledgedEpoch", call, block_identifier=block))

    def log_head_at(self, log_id: bytes, node: str, *, block: int | str = "latest") -> LogHead:
        """The last anchor of `node`'s log `log_id` as of `block`."""
        call = self.contract.functions.logHead(chain_log_id(node, log_id)).call
        _, size, root = self.chain.call("reading logHead", call, block_identifier=block)
        return LogHead(int(size), bytes(root))


class _AnyEvent:
    """Several events of one contract as one source for `Chain.events`: one eth_getLogs
    per window for all of them, each log decoded by its own event's ABI."""

    def __init__(self, chain: Chain, contract: Contract, names: Sequence[str]) -> None:
        self._w3 = chain._w3
        self._address = contract.address
        self._events = {
            bytes(HexBytes(getattr(contract.events, n).topic)): getattr(contract.events, n)()
            for n in names
        }

    def get_logs(self, *, from_block: int, to_block: int) -> list[Any]:
        topics = ["0x" + topic.hex() for topic in self._events]
        params = {
            "address": self._address,
            "fromBlock": from_block,
            "toBlock": to_block,
            "topics": [topics],
        }
        raw = self._w3.eth.get_logs(cast(Any, params))
        return [self._events[bytes(log["topics"][0])].process_log(log) for log in raw]


class ControllerReader:
    """The controller as `governance.evm_source.ControllerReader`: head, decoded events,
    `effectiveStatus` (0 for a campaign it does not know); chain failures become
    `SourceError`, so the watcher keeps its last state and reads again next poll.

    `effectiveStatus` is read at the block `head` last returned, the block the source
    reads events up to: a directive mined in between shows in neither until the next
    poll, never in the status alone (which would stop a run with no directive to name as
    its cause)."""

    EVENTS = (
        "DirectiveIssued",
        "CampaignForked",
        "GlobalPauseSet",
        "NodeApproved",
        "NodeRevoked",
        "MeasurementSet",
    )

    def __init__(self, controller: Controller, *, max_head_age_s: float = 0.0) -> None:
        self.controller = controller
        self.max_head_age_s = max_head_age_s  # 0: any age
        self._at: int | None = None  # the block of the last `head`

    def head(self) -> int:
        """The newest block; SourceError if the endpoint is down, or its newest block is
        older than `max_head_age_s` (a stalled or lagging endpoint answers "nothing new")."""
        chain = self.controller.chain
        try:
            self._at = chain.head()
            age = time.time() - chain.timestamp() if self.max_head_age_s else 0.0
        except ChainError as exc:
            raise SourceError(f"the EVM controller's chain cannot be read: {exc}") from exc
        if age > self.max_head_age_s > 0:
            raise SourceError(
                f"{chain.label}'s newest block is {age:.0f} s old (the limit is "
                f"{self.max_head_age_s:.0f} s): the endpoint is stalled or lagging"
            )
        return self._at

    def events(self, from_block: int, to_block: int) -> list[ControllerEvent]:
        out: list[ControllerEvent] = []
        for name in self.EVENTS:
            event = getattr(self.controller.contract.events, name)()
            try:
                logs = self.controller.chain.events(
                    event, f"reading {name} events", from_block=from_block, to_block=to_block
                )
            except ChainError as exc:
                raise SourceError(f"the EVM controller's events cannot be read: {exc}") from exc
            out += [
                ControllerEvent(
                    name=name,
                    block=int(e["blockNumber"]),
                    log_index=int(e["logIndex"]),
                    tx_hash="0x" + bytes(e["transactionHash"]).hex(),
                    args=dict(e["args"]),
                )
                for e in logs
            ]
        return out

    def effective_status(self, campaign_key: bytes) -> int:
        call = self.controller.contract.functions.effectiveStatus(campaign_key).call
        at: int | str = self._at if self._at is not None else "latest"
        try:
            return int(
                self.controller.chain.call("reading effectiveStatus", call, block_identifier=at)
            )
        except TransactionRevertedError as exc:
            if exc.reason.startswith("UnknownCampaign("):
                return 0
            raise SourceError(f"effectiveStatus reverted: {exc}") from exc
        except ChainError as exc:
            raise SourceError(f"the EVM controller cannot be read: {exc}") from exc

    def config_hash(self, campaign_key: bytes) -> bytes:
        """The config hash the campaign is registered with (call only for a known one)."""
        call = self.controller.contract.functions.campaign(campaign_key).call
        at: int | str = self._at if self._at is not None else "latest"
        try:
            found = self.controller.chain.call("reading a campaign", call, block_identifier=at)
        except ChainError as exc:
            raise SourceError(f"the EVM controller cannot be read: {exc}") from exc
        return bytes(found[2])  # (status, epoch, configHash, ...)

    def node_active(self, node: str) -> bool:
        """Whether the node may act: approved, its TEE measurement not removed since."""
        call = self.controller.contract.functions.isNodeActive(checksum_address(node)).call
        at: int | str = self._at if self._at is not None else "latest"
        try:
            return bool(
                self.controller.chain.call("reading isNodeActive", call, block_identifier=at)
            )
        except ChainError as exc:
            raise SourceError(f"the EVM controller cannot be read: {exc}") from exc

    def finalized(self) -> int | None:
        """The newest block the endpoint calls final (the `finalized` tag); None when it
        does not know the tag (then confirmations alone decide)."""
        try:
            block = self.controller.chain.call(
                "reading the finalized block", self.controller.chain._w3.eth.get_block, "finalized"
            )
        except ChainUnavailableError as exc:
            raise SourceError(f"the EVM chain cannot be read: {exc}") from exc
        except ChainError:
            return None
        return int(block["number"])

    def issued(self, tx_hash: str) -> bool:
        """Whether the transaction is (still) in the chain and succeeded: a directive that
        a reorganisation removed is not."""
        try:
            receipt = self.controller.chain.receipt(bytes.fromhex(tx_hash.removeprefix("0x")))
        except ChainError as exc:
            raise SourceError(f"the EVM chain cannot be read: {exc}") from exc
        return receipt is not None and receipt.succeeded


def deploy(
    chain: Chain,
    deployer_key: bytes,
    *,
    nodes: Sequence[str] = (),
    guardian: str | None = None,
    params: DaoParams = DEV_PARAMS,
    distribution: Sequence[Allocation] = (),
) -> Deployment:
    """Deploy token, timelock, governor and controller; approve `nodes`; hand over.

    The token's supply is minted to the `distribution`'s holders (with none, the
    deployer holds `DEV_SUPPLY`: the dev profile). The governor and timelock take
    `params` (the dev profile's fast ones by default; `asi-node chain deploy` checks a
    production set with `deploy_config.check_production`). The guardian (default: the
    deployer) may pause on the controller and cancel proposals on the governor. The
    deployer approves the given node addresses (with no TEE measurement), then grants the
    controller's governance and admin roles to the timelock and renounces its own, as it
    does the timelock's admin role: afterwards only a DAO vote governs.
    """
    deployer = address_of(deployer_key)
    guardian_address = checksum_address(guardian) if guardian else deployer
    holders = [checksum_address(a.address) for a in distribution] or [deployer]
    amounts = [a.amount for a in distribution] or [DEV_SUPPLY]
    start = chain.head()

    def create(name: str, *args: Any) -> Address:
        art = artifact(name)
        factory = chain._w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
        receipt = chain.send(deployer_key, factory.constructor(*args))
        raw = chain.call(
            "reading a receipt", chain._w3.eth.get_transaction_receipt, receipt.tx_hash
        )
        return Address(raw["contractAddress"])

    timestamps = params.clock is Clock.TIMESTAMP
    token = create("GovToken", "asi-node governance", "ASIG", holders, amounts, timestamps)
    timelock = create("DaoTimelock", params.timelock_delay_s, [], ["0x" + "00" * 20], deployer)
    governor = create(
        "DaoGovernor",
        token,
        timelock,
        params.voting_delay,
        params.voting_period,
        params.proposal_threshold,
        params.quorum_percent,
        params.late_quorum_extension,
        guardian_address,
    )
    controller = create("CampaignController", deployer, guardian_address)
    tl = chain.contract("DaoTimelock", timelock)
    ctl = chain.contract("CampaignController", controller)
    proposer = tl.functions.PROPOSER_ROLE().call()
    canceller = tl.functions.CANCELLER_ROLE().call()
    admin = tl.functions.DEFAULT_ADMIN_ROLE().call()
    gov_role = ctl.functions.GOVERNANCE_ROLE().call()
    for node in nodes:
        chain.send(deployer_key, ctl.functions.approveNode(checksum_address(node), bytes(32)))
    chain.send(deployer_key, tl.functions.grantRole(proposer, governor))
    chain.send(deployer_key, tl.functions.grantRole(canceller, governor))
    chain.send(deployer_key, tl.functions.renounceRole(admin, deployer))
    chain.send(deployer_key, ctl.functions.grantRole(gov_role, timelock))
    chain.send(deployer_key, ctl.functions.grantRole(admin, timelock))
    chain.send(deployer_key, ctl.functions.renounceRole(gov_role, deployer))
    chain.send(deployer_key, ctl.functions.renounceRole(admin, deployer))
    deployment = Deployment(
        chain_id=chain.chain_id,
        addresses={
            "GovToken": token,
            "DaoTimelock": timelock,
            "DaoGovernor": governor,
            "CampaignController": controller,
        },
        deployer=deployer,
        block_number=start,
    )
    log.info("contracts deployed", extra={"chain_id": chain.chain_id, "controller": controller})
    return deployment


def translate(exc: BaseException, what: str) -> ChainError:
    """A web3, provider or eth-tester failure during `what`, as one of ours."""
    data = _revert_data(exc)
    if data is not None:
        reason = decode_revert(data)
        return TransactionRevertedError(f"{what}: the contract reverted with {reason}", reason)
    text = _short(exc)
    lowered = text.lower()
    if isinstance(
        exc, requests.ConnectionError | requests.Timeout | ConnectionError | TimeoutError
    ):
        return ChainUnavailableError(f"{what}: the RPC endpoint did not answer ({text})")
    if isinstance(exc, requests.HTTPError):
        return ChainUnavailableError(f"{what}: the RPC endpoint returned an HTTP error ({text})")
    if "insufficient funds" in lowered or "cannot afford" in lowered:
        return UnfundedAccountError(f"{what}: the sending account cannot pay for gas ({text})")
    if "nonce too low" in lowered or "nonce too high" in lowered:
        return NonceError(f"{what}: {text}")
    if "execution reverted" in lowered or isinstance(exc, ContractLogicError):
        return TransactionRevertedError(f"{what}: the contract reverted ({text})", text)
    if type(exc).__name__ == "TimeExhausted":
        return ChainUnavailableError(f"{what}: no receipt in time ({text})")
    return ChainError(f"{what} failed: {type(exc).__name__}: {text}")


def _revert_data(exc: BaseException) -> bytes | None:
    """The raw revert payload carried by `exc`, in whichever shape its layer used."""
    if isinstance(exc, ContractCustomError | ContractLogicError):
        data = exc.data
        if isinstance(data, str) and data.startswith("0x"):
            return bytes.fromhex(data[2:])
        if isinstance(data, bytes):
            return data
        if isinstance(data, dict) and isinstance(data.get("data"), str):
            return bytes.fromhex(data["data"].removeprefix("0x"))
    if isinstance(exc, Web3RPCError) and isinstance(exc.rpc_response, dict):
        error = exc.rpc_response.get("error")
        if isinstance(error, dict) and isinstance(error.get("data"), str):
            payload = error["data"]
            if re.fullmatch(r"0x[0-9a-fA-F]*", payload):
                return bytes.fromhex(payload[2:])
    if type(exc).__name__ == "TransactionFailed":  # eth-tester: "execution reverted: b'...'"
        text = str(exc.args[0]) if exc.args else ""
        match = re.search(r"(b'.*'|b\".*\")\s*$", text, re.DOTALL)
        if match:
            try:
                value = ast.literal_eval(match.group(1))
            except (ValueError, SyntaxError):
                return None
            return value if isinstance(value, bytes) else None
        return b"" if "execution reverted" in text else None
    return None


def _is_not_found(exc: BaseException) -> bool:
    if isinstance(exc, TransactionNotFound):
        return True
    name = type(exc).__name__
    return name in {"BlockNotFound", "TransactionNotFound"} or "not found" in _short(exc).lower()


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 300 else text[:300] + "..."


def checksum_address(address: str) -> Address:
    try:
        return Address(to_checksum_address(address))
    except (ValueError, TypeError):
        raise ContractMismatchError(f"{address!r} is not an EVM address") from None


def chain_log_id(node: str, log_id: bytes) -> bytes:
    """The id under which `node` anchors its log `log_id`: the controller's
    `logIdOf(node, logName)`, keccak256 of the ABI-encoded address and name."""
    encoded = abi_encode(
        ["address", "bytes32"], [checksum_address(node), _bytes32(log_id, "log id")]
    )
    return bytes(keccak(encoded))


def _entry(row: Sequence[Any]) -> DirectoryEntry:
    node, endpoint, log_id = row
    return DirectoryEntry(Address(to_checksum_address(node)), str(endpoint), bytes(log_id))


def _bytes32(value: bytes, what: str) -> bytes:
    if len(value) != 32:
        raise ValueError(f"{what} must be 32 bytes, got {len(value)}")
    return value
