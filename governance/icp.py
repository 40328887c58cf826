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
from ic.utils import labelHash, to_request_id

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


# --- SNS governance ------------------------------------------------------------------
# Candid is decoded without an expected type (ProposalData has dozens of fields and an
# open-ended Action variant); fields are then read by their Candid label hashes.


def _untyped(arg: bytes, what: str) -> Any:
    try:
        values = decode(arg)
    except Exception as exc:  # ic-py raises bare ValueError/TypeError/IndexError
        raise IcpReplyError(f"{what} is not Candid ({exc})") from None
    if not isinstance(values, list) or len(values) != 1:
        raise IcpReplyError(f"{what} does not hold exactly one Candid value")
    return values[0]["value"]


def _field(record: Any, name: str, what: str) -> Any:
    if not isinstance(record, dict):
        raise IcpReplyError(f"{what} is not a Candid record")
    key = f"_{labelHash(name)}"
    if key in record:
        return record[key]
    if name in record:
        return record[name]
    raise IcpReplyError(f"{what} lacks the field {name}")


def _opt(value: Any, what: str) -> Any:
    if not isinstance(value, list) or len(value) > 1:
        raise IcpReplyError(f"{what} is not a Candid opt")
    return value[0] if value else None


def _nat(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise IcpReplyError(f"{what} is not a natural number")
    return value


@dataclass(frozen=True)
class SnsProposal:
    """The parts of an SNS ProposalData the node acts on."""

    id: int
    title: str
    function_id: int | None  # set for ExecuteGenericNervousSystemFunction proposals
    payload: bytes | None
    decided_s: int
    executed_s: int
    failed_s: int
    certified: bool  # read through an update call whose reply the IC certified


def _proposal(data: Any, certified: bool) -> SnsProposal:
    what = "ProposalData"
    pid = _opt(_field(data, "id", what), "ProposalData.id")
    if pid is None:
        raise IcpReplyError("ProposalData has no id")
    proposal = _opt(_field(data, "proposal", what), "ProposalData.proposal")
    title, function_id, payload = "", None, None
    if proposal is not None:
        title = str(_field(proposal, "title", "Proposal"))
        action = _opt(_field(proposal, "action", "Proposal"), "Proposal.action")
        generic = f"_{labelHash('ExecuteGenericNervousSystemFunction')}"
        if isinstance(action, dict) and generic in action:
            call = action[generic]
            function_id = _nat(_field(call, "function_id", "generic function"), "function_id")
            payload = _blob(_field(call, "payload", "generic function"), "payload")
    return SnsProposal(
        id=_nat(_field(pid, "id", "ProposalId"), "ProposalId.id"),
        title=title,
        function_id=function_id,
        payload=payload,
        decided_s=_nat(_field(data, "decided_timestamp_seconds", what), "decided"),
        executed_s=_nat(_field(data, "executed_timestamp_seconds", what), "executed"),
        failed_s=_nat(_field(data, "failed_timestamp_seconds", what), "failed"),
        certified=certified,
    )


_PROPOSAL_ID = Types.Record({"id": Types.Nat64})


class SnsGovernance:
    """Reads an SNS governance canister's proposals (sns_governance.did)."""

    def __init__(self, client: IcpClient, canister_id: bytes) -> None:
        self.client = client
        self.canister_id = canister_id

    def list_proposals(self, limit: int = 50, before: int | None = None) -> list[SnsProposal]:
        """Newest first, by query (fast, uncertified)."""
        # include_topics is an opt field and left out: Candid reads it as null.
        kind = Types.Record(
            {
                "include_reward_status": Types.Vec(Types.Int32),
                "before_proposal": Types.Opt(_PROPOSAL_ID),
                "limit": Types.Nat32,
                "exclude_type": Types.Vec(Types.Nat64),
                "include_status": Types.Vec(Types.Int32),
            }
        )
        value = {
            "include_reward_status": [],
            "before_proposal": [] if before is None else [{"id": before}],
            "limit": limit,
            "exclude_type": [],
            "include_status": [],
        }
        reply = self.client.query(
            self.canister_id, "list_proposals", encode([{"type": kind, "value": value}])
        )
        response = _untyped(reply.arg, "list_proposals reply")
        proposals = _field(response, "proposals", "ListProposalsResponse")
        if not isinstance(proposals, list):
            raise IcpReplyError("ListProposalsResponse.proposals is not a vector")
        return [_proposal(p, certified=False) for p in proposals]

    def get_proposal(self, proposal_id: int, *, certified: bool) -> SnsProposal:
        """One proposal; with `certified` through an update call, whose reply the IC
        certifies (the node requires that before acting on a resume or a fork)."""
        kind = Types.Record({"proposal_id": Types.Opt(_PROPOSAL_ID)})
        arg = encode([{"type": kind, "value": {"proposal_id": [{"id": proposal_id}]}}])
        if certified:
            reply = self.client.call(self.canister_id, "get_proposal", arg)
        else:
            reply = self.client.query(self.canister_id, "get_proposal", arg)
        response = _untyped(reply.arg, "get_proposal reply")
        result = _opt(_field(response, "result", "GetProposalResponse"), "result")
        if not isinstance(result, dict) or len(result) != 1:
            raise IcpReplyError(f"get_proposal {proposal_id}: no result")
        error = result.get(f"_{labelHash('Error')}")
        if error is not None:
            message = _field(error, "error_message", "GovernanceError")
            raise IcpRejectError(f"get_proposal {proposal_id}: {message}")
        data = result.get(f"_{labelHash('Proposal')}")
        if data is None:
            raise IcpReplyError(f"get_proposal {proposal_id}: unexpected result variant")
        return _proposal(data, certified=certified)


def decode_directive_payload(payload: bytes) -> tuple[str, str, bytes | None]:
    """(campaign id, directive name, fork config SHA-256) from a generic-function payload:
    Candid `record { campaign_id : text; directive : text; config_sha256 : opt blob }`."""
    value = _untyped(payload, "directive payload")
    campaign = _field(value, "campaign_id", "directive payload")
    directive = _field(value, "directive", "directive payload")
    config = _opt(_field(value, "config_sha256", "directive payload"), "config_sha256")
    if not isinstance(campaign, str) or not isinstance(directive, str):
        raise IcpReplyError("directive payload: campaign_id and directive must be text")
    return campaign, directive, None if config is None else _blob(config, "config_sha256")


def encode_directive_payload(
    campaign_id: str, directive: str, config_sha256: bytes | None
) -> bytes:
    """The payload a proposer puts in the SNS proposal (the inverse of the decoder)."""
    kind = Types.Record(
        {
            "campaign_id": Types.Text,
            "directive": Types.Text,
            "config_sha256": Types.Opt(Types.Vec(Types.Nat8)),
        }
    )
    value = {
        "campaign_id": campaign_id,
        "directive": directive,
        "config_sha256": [] if config_sha256 is None else [config_sha256],
    }
    return bytes(encode([{"type": kind, "value": value}]))
