"""The node's Internet Computer client: the one module that imports ic-py.

It holds the node's ICP identity (an Ed25519 key; ic-py signs requests and encodes
Candid), speaks the IC's HTTP interface itself (call, read_state polling, query) so
that timeouts and errors stay under our control, and trusts nothing it has not
verified: every certificate goes through `attestation.icp.verify_certificate`
(hash tree, BLS12-381, delegation and canister ranges, freshness), and a query answer
counts only when the canister's certified data covers it through a witness.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cbor2
import httpx
from ic.candid import Types, decode, encode
from ic.identity import Identity
from ic.principal import Principal
from ic.utils import to_request_id

from attestation.icp import VerificationError, VerifiedCertificate, verify_certificate
from attestation.icp.certificate import certificate_from_read_state, decode_cbor, decode_leb128
from attestation.icp.errors import Step
from attestation.icp.hashtree import Outcome, lookup, parse_tree

log = logging.getLogger(__name__)

REQUEST_DOMAIN = b"\x0aic-request"
SELF_DESCRIBE = b"\xd9\xd9\xf7"
INGRESS_EXPIRY_NS = 4 * 60 * 10**9


class IcpError(Exception):
    """Root of the ICP client's errors; the message says what went wrong and what to do."""

    retryable = False


class IcpNetworkError(IcpError):
    """The boundary node could not be reached, timed out or answered with an HTTP error.

    Transient: keep the root in the outbox and retry later; check the configured URL
    if it persists.
    """

    retryable = True


class IcpTimeoutError(IcpNetworkError):
    """An update call was accepted but no final status was certified within the wait.

    The call may still execute: retry later (anchoring is idempotent per tree size).
    """


class IcpRejectError(IcpError):
    """The IC or the canister rejected the call (reject code and message attached).

    Not retryable as is: fix the cause the message names (an unauthorised node
    principal, a tree size that does not grow, a wrong canister id).
    """

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class IcpReplyError(IcpError):
    """A reply could not be read: not CBOR, not the expected Candid, or inconsistent.

    The canister or boundary node does not speak the expected interface: check the
    canister id and its version; retrying will not help.
    """


# --- identity ------------------------------------------------------------------------


class NodeIdentity:
    """The node's ICP identity: an Ed25519 key whose self-authenticating principal the
    anchor canister's controller authorises."""

    def __init__(self, identity: Identity) -> None:
        self._identity = identity

    @classmethod
    def generate(cls) -> NodeIdentity:
        return cls(Identity(type="ed25519"))

    @classmethod
    def load_or_create(cls, path: Path) -> NodeIdentity:
        """Read the PEM key at `path`, creating it (mode 0600) on first use."""
        if path.exists():
            try:
                return cls(Identity.from_pem(path.read_text()))
            except Exception as exc:  # ecdsa raises several types for a bad PEM
                raise IcpError(f"{path} is not an Ed25519 PEM key ({exc}); restore it") from None
        identity = cls.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(identity._identity.to_pem())
        return identity

    @property
    def principal(self) -> bytes:
        return bytes(self._identity.sender().bytes)

    @property
    def principal_text(self) -> str:
        return str(self._identity.sender().to_str())

    def envelope(self, content: dict[str, Any]) -> tuple[bytes, bytes]:
        """The request id and the signed CBOR envelope of a request's content."""
        request_id = bytes(to_request_id(content))
        public_key, signature = self._identity.sign(REQUEST_DOMAIN + request_id)
        body = {"content": content, "sender_pubkey": public_key, "sender_sig": signature}
        return request_id, SELF_DESCRIBE + cbor2.dumps(body)


# --- transport -----------------------------------------------------------------------


class Transport(Protocol):
    def post(self, path: str, body: bytes) -> tuple[int, bytes]: ...


class HttpTransport:
    """POSTs CBOR to a boundary node (or local replica) with a timeout."""

    def __init__(self, base_url: str, timeout_s: float = 10.0) -> None:
        self._client = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_s)

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        try:
            response = self._client.post(
                path, content=body, headers={"Content-Type": "application/cbor"}
            )
        except httpx.HTTPError as exc:
            raise IcpNetworkError(f"POST {path} failed: {type(exc).__name__}: {exc}") from exc
        return response.status_code, response.content

    def close(self) -> None:
        self._client.close()


# --- client --------------------------------------------------------------------------


def _text(raw: bytes) -> str:
    return str(Principal(bytes=raw).to_str())


def _mapping(body: bytes, what: str) -> dict[str, Any]:
    try:
        obj = decode_cbor(body, what)
    except VerificationError as exc:
        raise IcpReplyError(exc.reason) from None
    if not isinstance(obj, dict):
        raise IcpReplyError(f"{what} is not a CBOR map")
    return obj


@dataclass(frozen=True)
class Reply:
    """The Candid bytes a canister replied, with the certificate that vouches for them
    (None for a query, whose answer is only as good as a witness it carries)."""

    arg: bytes
    certificate: VerifiedCertificate | None


class IcpClient:
    """Calls canisters and verifies what comes back. Every argument is injected so tests
    can run against a loopback replica with their own root key and clock."""

    def __init__(
        self,
        transport: Transport,
        identity: NodeIdentity,
        *,
        root_key_der: bytes,
        clock_ns: Callable[[], int] = time.time_ns,
        sleep: Callable[[float], None] = time.sleep,
        max_age_ns: int = 5 * 60 * 10**9,
        poll_interval_s: float = 1.0,
        poll_timeout_s: float = 60.0,
    ) -> None:
        self.transport = transport
        self.identity = identity
        self.root_key_der = root_key_der
        self.clock_ns = clock_ns
        self.sleep = sleep
        self.max_age_ns = max_age_ns
        self.poll_interval_s = poll_interval_s
        self.poll_timeout_s = poll_timeout_s

    def _content(self, request_type: str, **fields: Any) -> dict[str, Any]:
        return {
            "request_type": request_type,
            "sender": self.identity.principal,
            "ingress_expiry": self.clock_ns() + INGRESS_EXPIRY_NS,
            **fields,
        }

    def _post(self, path: str, body: bytes) -> tuple[int, bytes]:
        status, payload = self.transport.post(path, body)
        if status >= 500 or status in (408, 429):
            raise IcpNetworkError(f"POST {path}: HTTP {status}: {payload[:200]!r}")
        if status >= 400:
            raise IcpRejectError(f"POST {path}: HTTP {status}: {payload[:200]!r}")
        return status, payload

    def verify(self, certificate: bytes, canister_id: bytes) -> VerifiedCertificate:
        return verify_certificate(
            certificate,
            root_key_der=self.root_key_der,
            canister_id=canister_id,
            now_ns=self.clock_ns(),
            max_age_ns=self.max_age_ns,
        )

    def read_state(
        self, canister_id: bytes, paths: Sequence[Sequence[bytes]]
    ) -> VerifiedCertificate:
        """A verified certificate for `paths` of the state tree (as seen by `canister_id`)."""
        _, body = self.identity.envelope(
            self._content("read_state", paths=[list(p) for p in paths])
        )
        _, payload = self._post(f"/api/v2/canister/{_text(canister_id)}/read_state", body)
        try:
            certificate = certificate_from_read_state(payload)
        except VerificationError as exc:
            raise IcpReplyError(f"read_state answer: {exc.reason}") from None
        return self.verify(certificate, canister_id)

    def call(self, canister_id: bytes, method: str, arg: bytes) -> Reply:
        """An update call: submit, then wait for a certified reply (or reject)."""
        request_id, body = self.identity.envelope(
            self._content(
                "call",
                canister_id=canister_id,
                method_name=method,
                arg=arg,
                nonce=os.urandom(8),
            )
        )
        status, payload = self._post(f"/api/v3/canister/{_text(canister_id)}/call", body)
        if status == 200 and payload:
            answer = _mapping(payload, f"call {method} answer")
            if answer.get("status") == "non_replicated_rejection":
                raise IcpRejectError(
                    f"{method} rejected: {answer.get('reject_message')!r}",
                    answer.get("reject_code"),
                )
            if isinstance(answer.get("certificate"), bytes):
                cert = self.verify(answer["certificate"], canister_id)
                final = self._final_status(cert, request_id, method)
                if final is not None:
                    return final
        return self._poll(canister_id, request_id, method)

    def _poll(self, canister_id: bytes, request_id: bytes, method: str) -> Reply:
        polls = max(1, int(self.poll_timeout_s / self.poll_interval_s))
        for attempt in range(polls):
            if attempt:
                self.sleep(self.poll_interval_s)
            cert = self.read_state(canister_id, [[b"request_status", request_id]])
            final = self._final_status(cert, request_id, method)
            if final is not None:
                return final
        raise IcpTimeoutError(
            f"{method}: no certified answer after {polls} polls over "
            f"{self.poll_timeout_s:.0f} s (request {request_id.hex()})"
        )

    @staticmethod
    def _final_status(cert: VerifiedCertificate, request_id: bytes, method: str) -> Reply | None:
        """The reply once the certified status is final; None while still in progress."""
        base = [b"request_status", request_id]
        found = cert.lookup([*base, b"status"])
        if found.outcome is not Outcome.FOUND or found.value is None:
            return None  # not yet known to the replica, or pruned: ask again
        status = found.value.decode("ascii", "replace")
        if status in ("received", "processing"):
            return None
        if status == "replied":
            return Reply(cert.value([*base, b"reply"]), cert)
        if status == "rejected":
            code = decode_leb128(cert.value([*base, b"reject_code"]), "reject_code", Step.LOOKUP)
            message = cert.value([*base, b"reject_message"]).decode("utf-8", "replace")
            raise IcpRejectError(f"{method} rejected (code {code}): {message}", code)
        if status == "done":
            raise IcpReplyError(f"{method}: the reply was already removed (status done)")
        raise IcpReplyError(f"{method}: unknown request status {status!r}")

    def query(self, canister_id: bytes, method: str, arg: bytes) -> Reply:
        """A query: fast and uncertified; callers must check a witness in the reply."""
        _, body = self.identity.envelope(
            self._content("query", canister_id=canister_id, method_name=method, arg=arg)
        )
        _, payload = self._post(f"/api/v2/canister/{_text(canister_id)}/query", body)
        answer = _mapping(payload, f"query {method} answer")
        if answer.get("status") == "rejected":
            raise IcpRejectError(
                f"{method} rejected (code {answer.get('reject_code')}): "
                f"{answer.get('reject_message')}",
                answer.get("reject_code"),
            )
        reply = answer.get("reply")
        if answer.get("status") != "replied" or not isinstance(reply, dict):
            raise IcpReplyError(f"query {method} answer has no reply")
        if not isinstance(reply.get("arg"), bytes):
            raise IcpReplyError(f"query {method} reply has no arg blob")
        return Reply(reply["arg"], None)


# --- the anchor canister -------------------------------------------------------------

_ANCHOR_ERROR = Types.Variant(
    {
        "bad_log_id": Types.Null,
        "bad_root": Types.Record({"length": Types.Nat}),
        "not_authorised": Types.Null,
        "not_controller": Types.Null,
        "size_not_growing": Types.Record({"latest": Types.Nat64}),
    }
)
_ANCHOR_RESULT = Types.Variant({"ok": Types.Nat, "err": _ANCHOR_ERROR})
_ENTRY = Types.Record(
    {
        "root": Types.Vec(Types.Nat8),
        "time_ns": Types.Nat64,
        "tree_size": Types.Nat64,
        "writer": Types.Principal,
    }
)
_LATEST = Types.Record(
    {
        "anchor": Types.Opt(_ENTRY),
        "certificate": Types.Opt(Types.Vec(Types.Nat8)),
        "witness": Types.Vec(Types.Nat8),
    }
)


def _candid(arg: bytes, expected: Any, what: str) -> Any:
    try:
        values = decode(arg, expected)
    except Exception as exc:  # ic-py raises bare ValueError/TypeError/IndexError
        raise IcpReplyError(f"{what} is not the expected Candid ({exc})") from None
    if not isinstance(values, list) or len(values) != 1 or "value" not in values[0]:
        raise IcpReplyError(f"{what} does not hold exactly one Candid value")
    return values[0]["value"]


def _blob(value: Any, what: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, list) and all(isinstance(b, int) and 0 <= b < 256 for b in value):
        return bytes(value)
    raise IcpReplyError(f"{what} is not a blob")


@dataclass(frozen=True)
class CertifiedAnchor:
    """A log root the anchor canister certified, checked back to the IC root key."""

    log_id: str
    tree_size: int
    root: bytes
    certified_at_ns: int


class AnchorCanister:
    """The anchor canister (contracts/icp/anchor.did) as the node uses it."""

    def __init__(self, client: IcpClient, canister_id: bytes) -> None:
        self.client = client
        self.canister_id = canister_id

    def anchor(self, log_id: str, tree_size: int, root: bytes) -> int:
        """Append a root; returns the log's anchor count. IcpRejectError if the canister
        refuses (the message names why), IcpNetworkError if it could not be reached."""
        arg = encode(
            [
                {"type": Types.Text, "value": log_id},
                {"type": Types.Nat64, "value": tree_size},
                {"type": Types.Vec(Types.Nat8), "value": root},
            ]
        )
        reply = self.client.call(self.canister_id, "anchor", arg)
        result = _candid(reply.arg, _ANCHOR_RESULT, "anchor reply")
        if not isinstance(result, dict) or len(result) != 1:
            raise IcpReplyError("anchor reply is not a result variant")
        if "ok" in result:
            return int(result["ok"])
        error = result.get("err")
        kind = next(iter(error)) if isinstance(error, dict) and error else "unknown"
        detail = error.get(kind) if isinstance(error, dict) else None
        raise IcpRejectError(f"anchor canister refused {log_id}@{tree_size}: {kind} {detail or ''}")

    def latest(self, log_id: str) -> CertifiedAnchor | None:
        """The log's latest anchor, verified through certificate + witness; None if the
        certified tree proves the log has none. VerificationError if anything fails."""
        reply = self.client.query(
            self.canister_id, "latest", encode([{"type": Types.Text, "value": log_id}])
        )
        value = _candid(reply.arg, _LATEST, "latest reply")
        if not isinstance(value, dict) or not isinstance(value.get("certificate"), list):
            raise IcpReplyError("latest reply is not the expected record")
        if not value["certificate"]:
            raise VerificationError(Step.DECODE, "the canister returned no certificate")
        certificate = _blob(value["certificate"][0], "certificate")
        witness_cbor = _blob(value.get("witness"), "witness")
        cert = self.client.verify(certificate, self.canister_id)
        witness = parse_tree(decode_cbor(witness_cbor, "witness"))
        cert.certified_data(self.canister_id, witness)
        label = log_id.encode()
        size = lookup([b"anchors", label, b"size"], witness)
        root = lookup([b"anchors", label, b"root"], witness)
        if size.outcome is Outcome.ABSENT and root.outcome is Outcome.ABSENT:
            return None
        if size.value is None or root.value is None or len(size.value) != 8:
            raise VerificationError(
                Step.CERTIFIED_DATA,
                f"the witness does not reveal anchors/{log_id} (size: {size.outcome.value}, "
                f"root: {root.outcome.value})",
            )
        return CertifiedAnchor(log_id, int.from_bytes(size.value, "big"), root.value, cert.time_ns)
