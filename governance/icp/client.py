"""The IC HTTP interface client: node identity, call + read_state polling, query.

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
from ic.identity import Identity
from ic.principal import Principal
from ic.utils import to_request_id

from attestation.errors import VerificationError
from attestation.icp import VerifiedCertificate, verify_certificate
from attestation.icp.certificate import certificate_from_read_state, decode_cbor, decode_leb128
from attestation.icp.hashtree import Outcome
from attestation.icp.steps import Step
from governance.icp.errors import (
    IcpError,
    IcpNetworkError,
    IcpRejectError,
    IcpReplyError,
    IcpTimeoutError,
)

log = logging.getLogger(__name__)

REQUEST_DOMAIN = b"\x0aic-request"
SELF_DESCRIBE = b"\xd9\xd9\xf7"
INGRESS_EXPIRY_NS = 4 * 60 * 10**9


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


def _text(raw: bytes) -> str:
    return str(Principal(bytes=raw).to_str())


def _mapping(body: bytes, what: str) -> dict[str, Any]:
    try:
        obj = decode_cbor(body, what)
    except VerificationError as exc:
        raise IcpReplyError(exc.detail) from None
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
        if status >= 400:
            log.warning("icp http error", extra={"path": path, "status": status})
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
        # v3, as the recorded mainnet answer used: its delegations carry sharded ranges.
        _, payload = self._post(f"/api/v3/canister/{_text(canister_id)}/read_state", body)
        try:
            certificate = certificate_from_read_state(payload)
        except VerificationError as exc:
            raise IcpReplyError(f"read_state answer: {exc.detail}") from None
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
            log.debug("icp call pending", extra={"method": method, "attempt": attempt})
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
