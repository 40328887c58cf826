"""A loopback stand-in for an IC replica, speaking the HTTP interface's real CBOR formats.

It checks each request's Ed25519 signature over its request id (computed here
independently of ic-py), runs a small model of the anchor canister, and answers with
certificates signed by its own BLS12-381 root key, as a local replica does (it has its
own root key too). It never delegates: delegated certificates are covered by the
recorded mainnet vectors.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_der_public_key
from ic.candid import Types, decode, encode
from ic.utils import labelHash
from py_ecc.bls.hash_to_curve import hash_to_G1
from py_ecc.bls.point_compression import compress_G1, compress_G2
from py_ecc.optimized_bls12_381.optimized_curve import G2, multiply

from attestation.icp.bls import DER_PREFIX, DST
from attestation.icp.certificate import STATE_ROOT_DOMAIN
from attestation.icp.hashtree import Empty, Fork, HashTree, Labeled, Leaf, Pruned, reconstruct

SECRET = 0x2B3C4D5E6F708192A3B4C5D6E7F8091A2B3C4D5E6F708192A3B4C5D6E7F80  # test key only
SUBNET_SECRET = 0x1122334455667788990011223344556677889900112233445566778899AA  # test key only
SUBNET_ID = bytes.fromhex("d77b2a2f7199b9a8aec93fe6fb588661358cf12223e9a3af7b4ebac402")


def _g2_bytes(point: Any) -> bytes:
    z1, z2 = compress_G2(point)
    return z1.to_bytes(48, "big") + z2.to_bytes(48, "big")


ROOT_KEY_DER = DER_PREFIX + _g2_bytes(multiply(G2, SECRET))
SUBNET_KEY_DER = DER_PREFIX + _g2_bytes(multiply(G2, SUBNET_SECRET))


def sign(message: bytes, secret: int = SECRET) -> bytes:
    point = multiply(hash_to_G1(message, DST, hashlib.sha256), secret)  # type: ignore[arg-type]
    return int(compress_G1(point)).to_bytes(48, "big")


def leb128(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _hash_value(value: Any) -> bytes:
    if isinstance(value, bytes):
        return hashlib.sha256(value).digest()
    if isinstance(value, str):
        return hashlib.sha256(value.encode()).digest()
    if isinstance(value, int):
        return hashlib.sha256(leb128(value)).digest()
    if isinstance(value, list | tuple):
        return hashlib.sha256(b"".join(_hash_value(v) for v in value)).digest()
    raise TypeError(f"cannot hash {type(value).__name__}")


def request_id(content: dict[str, Any]) -> bytes:
    """The representation-independent hash of a request's content."""
    pairs = sorted(hashlib.sha256(k.encode()).digest() + _hash_value(v) for k, v in content.items())
    return hashlib.sha256(b"".join(pairs)).digest()


def labeled_forks(items: list[tuple[bytes, HashTree]]) -> HashTree:
    """A balanced fork over sorted labeled subtrees (the canister's layout)."""
    if not items:
        return Empty()
    if len(items) == 1:
        return Labeled(*items[0])
    mid = len(items) // 2
    return Fork(labeled_forks(items[:mid]), labeled_forks(items[mid:]))


def encode_tree(tree: HashTree) -> Any:
    if isinstance(tree, Empty):
        return [0]
    if isinstance(tree, Fork):
        return [1, encode_tree(tree.left), encode_tree(tree.right)]
    if isinstance(tree, Labeled):
        return [2, tree.label, encode_tree(tree.subtree)]
    if isinstance(tree, Leaf):
        return [3, tree.value]
    return [4, tree.digest]


ANCHOR_ERROR = Types.Variant(
    {
        "bad_log_id": Types.Null,
        "bad_directive": Types.Text,
        "bad_root": Types.Record({"length": Types.Nat}),
        "not_authorised": Types.Null,
        "not_controller": Types.Null,
        "size_not_growing": Types.Record({"latest": Types.Nat64}),
    }
)
ENTRY = Types.Record(
    {
        "root": Types.Vec(Types.Nat8),
        "time_ns": Types.Nat64,
        "tree_size": Types.Nat64,
        "writer": Types.Principal,
    }
)


@dataclass
class AnchorModel:
    """The anchor canister's rules (contracts/icp/src/AnchorState.mo), in Python."""

    writers: set[bytes] = field(default_factory=set)
    logs: dict[str, list[tuple[int, bytes]]] = field(default_factory=dict)

    def anchor(self, caller: bytes, arg: bytes) -> bytes:
        values = [v["value"] for v in decode(arg)]
        log_id, size, root = values[0], values[1], bytes(values[2])
        result: dict[str, Any]
        if caller not in self.writers:
            result = {"err": {"not_authorised": None}}
        elif self.logs.get(log_id) and size <= self.logs[log_id][-1][0]:
            result = {"err": {"size_not_growing": {"latest": self.logs[log_id][-1][0]}}}
        else:
            self.logs.setdefault(log_id, []).append((size, root))
            result = {"ok": len(self.logs[log_id])}
        kind = Types.Variant({"ok": Types.Nat, "err": ANCHOR_ERROR})
        return bytes(encode([{"type": kind, "value": result}]))

    def tree(self, reveal: str | None = None) -> HashTree:
        items: list[tuple[bytes, HashTree]] = []
        for log_id in sorted(self.logs, key=str.encode):
            size, root = self.logs[log_id][-1]
            sub = Fork(
                Labeled(b"root", Leaf(root)), Labeled(b"size", Leaf(size.to_bytes(8, "big")))
            )
            items.append((log_id.encode(), sub if log_id == reveal else Pruned(reconstruct(sub))))
        return Labeled(b"anchors", labeled_forks(items))


# The SNS governance canister's types the node reads (sns_governance.did, a subset of
# ProposalData's fields plus some the node ignores, so its untyped decoding skips them).
SNS_GENERIC = Types.Record({"function_id": Types.Nat64, "payload": Types.Vec(Types.Nat8)})
SNS_ACTION = Types.Variant(
    {
        "Motion": Types.Record({"motion_text": Types.Text}),
        "ExecuteGenericNervousSystemFunction": SNS_GENERIC,
    }
)
SNS_PROPOSAL = Types.Record(
    {"url": Types.Text, "title": Types.Text, "action": Types.Opt(SNS_ACTION), "summary": Types.Text}
)
SNS_PROPOSAL_DATA = Types.Record(
    {
        "id": Types.Opt(Types.Record({"id": Types.Nat64})),
        "payload_text_rendering": Types.Opt(Types.Text),
        "action": Types.Nat64,
        "decided_timestamp_seconds": Types.Nat64,
        "executed_timestamp_seconds": Types.Nat64,
        "failed_timestamp_seconds": Types.Nat64,
        "proposal": Types.Opt(SNS_PROPOSAL),
        "is_eligible_for_rewards": Types.Bool,
    }
)
SNS_ERROR = Types.Record({"error_message": Types.Text, "error_type": Types.Int32})


@dataclass
class SnsModel:
    """An SNS governance canister's proposals, answering `list_proposals` (newest first)
    and `get_proposal`; put it in `Replica.methods` with `methods()`."""

    proposals: dict[int, dict[str, Any]] = field(default_factory=dict)

    def add_generic(self, pid: int, function_id: int, payload: bytes, executed_s: int) -> None:
        """An ExecuteGenericNervousSystemFunction proposal, adopted and executed at
        `executed_s` (0: still open)."""
        action = {
            "ExecuteGenericNervousSystemFunction": {"function_id": function_id, "payload": payload}
        }
        self.proposals[pid] = {
            "id": [{"id": pid}],
            "payload_text_rendering": ["rendered"],
            "action": function_id,
            "decided_timestamp_seconds": executed_s,
            "executed_timestamp_seconds": executed_s,
            "failed_timestamp_seconds": 0,
            "proposal": [{"url": "", "title": f"p{pid}", "action": [action], "summary": ""}],
            "is_eligible_for_rewards": True,
        }

    def list_proposals(self, arg: bytes) -> bytes:
        newest = [self.proposals[i] for i in sorted(self.proposals, reverse=True)]
        response = Types.Record({"proposals": Types.Vec(SNS_PROPOSAL_DATA)})
        return bytes(encode([{"type": response, "value": {"proposals": newest}}]))

    def get_proposal(self, arg: bytes) -> bytes:
        request = decode(arg)[0]["value"]
        (wanted,) = request[f"_{labelHash('proposal_id')}"]
        pid = wanted[f"_{labelHash('id')}"]
        result = Types.Variant({"Error": SNS_ERROR, "Proposal": SNS_PROPOSAL_DATA})
        if pid in self.proposals:
            value: dict[str, Any] = {"Proposal": self.proposals[pid]}
        else:
            value = {"Error": {"error_message": f"no proposal {pid}", "error_type": 4}}
        response = Types.Record({"result": Types.Opt(result)})
        return bytes(encode([{"type": response, "value": {"result": [value]}}]))

    def methods(self) -> dict[str, Callable[[bytes], bytes]]:
        return {"list_proposals": self.list_proposals, "get_proposal": self.get_proposal}


@dataclass
class Replica:
    """Replica state plus switches a test flips to provoke each flow."""

    canister_id: bytes
    time_ns: int
    model: AnchorModel = field(default_factory=AnchorModel)
    sync_calls: bool = False  # v3: answer a call with its certificate at once
    polls_before_final: int = 1  # read_state answers "processing" this many times first
    http_errors: list[int] = field(default_factory=list)  # statuses to answer next, in order
    down_for: set[str] = field(default_factory=set)  # request kinds answered 503 while listed
    query_override: Callable[[bytes], bytes] | None = None
    methods: dict[str, Callable[[bytes], bytes]] = field(default_factory=dict)  # other canisters
    # Sign as an application subnet does: with a subnet key the root key delegated,
    # for canisters in these ranges (sharded layout, as mainnet serves it since 2025).
    delegated_ranges: list[tuple[bytes, bytes]] | None = None
    requests: dict[bytes, dict[str, Any]] = field(default_factory=dict)
    seen_paths: list[str] = field(default_factory=list)

    def certificate(self, extra: list[tuple[bytes, HashTree]]) -> bytes:
        data = reconstruct(self.model.tree())
        canister = Labeled(
            b"canister",
            Labeled(self.canister_id, Labeled(b"certified_data", Leaf(data))),
        )
        items = sorted([(b"time", Leaf(leb128(self.time_ns))), *extra], key=lambda i: i[0])
        tree = Fork(canister, labeled_forks(items))
        if self.delegated_ranges is None:
            signature = sign(STATE_ROOT_DOMAIN + reconstruct(tree))
            body: dict[str, Any] = {"tree": encode_tree(tree), "signature": signature}
        else:
            signature = sign(STATE_ROOT_DOMAIN + reconstruct(tree), SUBNET_SECRET)
            body = {"tree": encode_tree(tree), "signature": signature}
            body["delegation"] = {"subnet_id": SUBNET_ID, "certificate": self._delegation()}
        return b"\xd9\xd9\xf7" + cbor2.dumps(body)

    def _delegation(self) -> bytes:
        assert self.delegated_ranges is not None
        ranges = b"\xd9\xd9\xf7" + cbor2.dumps([list(r) for r in self.delegated_ranges])
        shard = Labeled(self.delegated_ranges[0][0], Leaf(ranges))
        subnet = Labeled(SUBNET_ID, Labeled(b"public_key", Leaf(SUBNET_KEY_DER)))
        tree = labeled_forks(
            [
                (b"canister_ranges", Labeled(SUBNET_ID, shard)),
                (b"subnet", subnet),
                (b"time", Leaf(leb128(self.time_ns))),
            ]
        )
        signature = sign(STATE_ROOT_DOMAIN + reconstruct(tree))
        return b"\xd9\xd9\xf7" + cbor2.dumps({"tree": encode_tree(tree), "signature": signature})

    def status_tree(self, rid: bytes) -> HashTree:
        entry = self.requests.get(rid)
        if entry is None:
            return Empty()
        if entry["polls"] < self.polls_before_final:
            entry["polls"] += 1
            fields = [(b"status", Leaf(b"processing"))]
        elif "reply" in entry:
            fields = [(b"reply", Leaf(entry["reply"])), (b"status", Leaf(b"replied"))]
        else:
            fields = [
                (b"reject_code", Leaf(leb128(entry["code"]))),
                (b"reject_message", Leaf(entry["message"].encode())),
                (b"status", Leaf(b"rejected")),
            ]
        return labeled_forks([(rid, labeled_forks(fields))])

    def handle(self, path: str, body: bytes) -> tuple[int, bytes]:
        self.seen_paths.append(path)
        if self.http_errors:
            return self.http_errors.pop(0), b"service unavailable"
        envelope = cbor2.loads(body)
        content = dict(envelope["content"])
        if content["request_type"] in self.down_for:
            return 503, b"service unavailable"
        rid = request_id(content)
        key = load_der_public_key(envelope["sender_pubkey"])
        assert isinstance(key, Ed25519PublicKey)
        key.verify(envelope["sender_sig"], b"\x0aic-request" + rid)  # raises if forged
        kind = content["request_type"]
        if kind == "call":
            entry: dict[str, Any] = {"polls": 0}
            if content["method_name"] in self.methods:
                entry["reply"] = self.methods[content["method_name"]](content["arg"])
            elif content["method_name"] == "anchor":
                entry["reply"] = self.model.anchor(content["sender"], content["arg"])
            else:
                entry.update(
                    code=3, message=f"Canister has no update method '{content['method_name']}'"
                )
            self.requests[rid] = entry
            if self.sync_calls:
                entry["polls"] = self.polls_before_final
                cert = self.certificate([(b"request_status", self.status_tree(rid))])
                return 200, cbor2.dumps({"status": "replied", "certificate": cert})
            return 202, b""
        if kind == "read_state":
            rid_asked = bytes(content["paths"][0][1])
            cert = self.certificate([(b"request_status", self.status_tree(rid_asked))])
            return 200, cbor2.dumps({"certificate": cert})
        if kind == "query":
            if self.query_override is not None:
                return 200, self.query_override(content["arg"])
            if content["method_name"] in self.methods:
                arg = self.methods[content["method_name"]](content["arg"])
                return 200, cbor2.dumps({"status": "replied", "reply": {"arg": arg}})
            log_id = decode(content["arg"])[0]["value"]
            entries = self.model.logs.get(log_id, [])
            anchor = (
                [
                    {
                        "root": entries[-1][1],
                        "time_ns": self.time_ns,
                        "tree_size": entries[-1][0],
                        "writer": "aaaaa-aa",
                    }
                ]
                if entries
                else []
            )
            witness = b"\xd9\xd9\xf7" + cbor2.dumps(encode_tree(self.model.tree(log_id)))
            latest = Types.Record(
                {
                    "anchor": Types.Opt(ENTRY),
                    "certificate": Types.Opt(Types.Vec(Types.Nat8)),
                    "witness": Types.Vec(Types.Nat8),
                }
            )
            value = {"anchor": anchor, "certificate": [self.certificate([])], "witness": witness}
            arg = bytes(encode([{"type": latest, "value": value}]))
            return 200, cbor2.dumps({"status": "replied", "reply": {"arg": arg}})
        return 400, b"unknown request type"


class Server:
    """Serves a Replica on 127.0.0.1 on a free port, in a thread."""

    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, payload = outer.replica.handle(self.path, body)
                self.send_response(status)
                self.send_header("Content-Type", "application/cbor")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
