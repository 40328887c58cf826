"""The ICP anchor publisher: moves the outbox's `icp` rows into the anchor canister.

The second anchoring target beside the EVM chain (`node.anchoring.evm`). The log's checkpoints
are queued for it exactly as for the chain (`feed`), and each `step` goes through every
log's pending roots in tree-size order (the canister takes only growing sizes) through
`governance.icp.IcpAnchorTarget`:

- the update call's certified reply: the row is confirmed, with the log's anchor count
  and the certificate's time as its receipt (a retry after a lost answer finds the root
  in the canister's certified state and counts too);
- the replica unreachable, an HTTP error or no answer in time (`IcpNetworkError`): the
  root stays queued and is retried with exponential backoff; the pass stops there;
- the canister refuses (`IcpRejectError`: the node's principal not authorised, a bad
  log id) or an answer fails verification: the root stays queued, the error is
  recorded in the row and logged as an error for the operator, and it is retried with
  backoff, so a node that the SNS authorises later catches up by itself;
- the IC already holds a different root at that size (`IcpConflictError`): the row is
  marked failed (the log has two histories; an operator must look).

Nothing is ever dropped; later sizes of a log wait behind an earlier one that failed.
`open_icp_publisher` builds one from the `[icp]` settings.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

from attestation.errors import VerificationError
from attestation.icp import MAINNET_ROOT_KEY_DER
from attestation.icp.principal import from_text, to_text
from governance.icp import (
    AnchorCanister,
    HttpTransport,
    IcpAnchorTarget,
    IcpClient,
    IcpConflictError,
    IcpError,
    IcpNetworkError,
    IcpRejectError,
    NodeIdentity,
    log_label,
)
from node.anchoring.evm import Backoff, StepReport, feed_outbox
from node.errors import ConfigError
from node.settings import IcpSettings
from node.store import Outbox, OutboxRow, Store
from node.store.outbox import OutboxStatus

log = logging.getLogger(__name__)

TARGET = "icp"


class IcpPublisher:
    """Publishes the `icp` rows of an outbox through an `IcpAnchorTarget`."""

    def __init__(
        self,
        outbox: Outbox,
        target: IcpAnchorTarget,
        *,
        backoff: Backoff | None = None,
        now: Callable[[], datetime] | None = None,
        label: str | None = None,
    ) -> None:
        if outbox.target != TARGET:
            raise ValueError(
                f"the ICP publisher needs the {TARGET!r} outbox, not {outbox.target!r}"
            )
        self.outbox = outbox
        self.target = target
        self.backoff = backoff or Backoff()
        self._now = now or (lambda: datetime.now(UTC))
        canister = target.canister
        self._label = label or f"icp canister {to_text(canister.canister_id)}"
        self.principal = canister.client.identity.principal_text

    @property
    def label(self) -> str:
        return self._label

    def submit(self, log_id: bytes, tree_size: int, root: bytes) -> OutboxRow:
        return self.outbox.enqueue(log_id, tree_size, root)

    def feed(self, checkpoints: Iterable[tuple[bytes, int, bytes]]) -> int:
        """Queue the checkpoints past what each log has queued (as the EVM publisher)."""
        return feed_outbox(self.outbox, checkpoints)

    def step(self) -> StepReport:
        """One pass: each log's due pending roots, lowest size first (module docstring)."""
        report = StepReport()
        now = self._now()
        blocked: set[bytes] = set()
        for row in self.outbox.rows(OutboxStatus.PENDING):
            if row.log_id in blocked:
                continue
            if row.next_attempt_at > now or not self._publish(row, report):
                blocked.add(row.log_id)  # sizes must grow: later ones wait for this one
            if not report.reachable:
                break
        return report

    def _publish(self, row: OutboxRow, report: StepReport) -> bool:
        name = log_label(row.log_id)
        try:
            receipt = self.target.publish(name, row.tree_size, row.root)
        except IcpConflictError as exc:
            self.outbox.failed(row, str(exc))
            report.failed += 1
            report.errors.append(str(exc))
            log.error("icp anchor conflicts", extra={"tree_size": row.tree_size, "error": str(exc)})
            return False
        except IcpNetworkError as exc:
            report.reachable = False
            self._retry(row, report, str(exc), alert=False)
            return False
        except IcpRejectError as exc:
            why = f"{exc}; node principal {self.principal}"
            self._retry(row, report, why, alert=True)
            return False
        except (IcpError, VerificationError) as exc:  # an answer we cannot trust or read
            self._retry(row, report, f"{type(exc).__name__}: {exc}", alert=True)
            return False
        self.outbox.published(
            row, anchor_count=receipt.anchor_count, certified_at_ns=receipt.certified_at_ns
        )
        report.confirmed += 1
        log.info(
            "icp anchor confirmed",
            extra={"tree_size": row.tree_size, "anchor_count": receipt.anchor_count},
        )
        return True

    def _retry(self, row: OutboxRow, report: StepReport, error: str, *, alert: bool) -> None:
        at = self._now() + self.backoff.delay(row.attempts + 1)
        self.outbox.retry(row, error, at)
        report.retried += 1
        report.errors.append(error)
        extra = {"tree_size": row.tree_size, "error": error, "retry_at": at.isoformat()}
        if alert:
            log.error("icp anchor refused; the root stays queued", extra=extra)
        else:
            log.warning("icp unreachable; the root stays queued", extra=extra)


def icp_client(settings: IcpSettings, home: Path) -> IcpClient:
    """An IC client for `[icp] url`, signing as the node's ICP identity
    (`<home>/<identity_path>`, created on first use), verifying certificates under
    `root_key_path` (default: the mainnet root key). ConfigError names a bad setting."""
    if not settings.url:
        raise ConfigError("[icp] url is not set")
    if settings.root_key_path:
        try:
            root_key = Path(settings.root_key_path).read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"[icp] root_key_path {settings.root_key_path}: {exc.strerror}"
            ) from None
    else:
        root_key = MAINNET_ROOT_KEY_DER
    try:
        identity = NodeIdentity.load_or_create(home / settings.identity_path)
    except IcpError as exc:
        raise ConfigError(str(exc)) from None
    return IcpClient(
        HttpTransport(settings.url),
        identity,
        root_key_der=root_key,
        max_age_ns=int(settings.max_certificate_age_s * 1e9),
        poll_timeout_s=settings.call_timeout_s,
    )


def open_icp_publisher(
    settings: IcpSettings, home: Path, store: Store, *, backoff: Backoff | None = None
) -> IcpPublisher:
    """The publisher for `[icp] url` and `anchor_canister` (client: `icp_client`)."""
    if not settings.url or not settings.anchor_canister:
        raise ConfigError("ICP anchoring needs [icp] url and anchor_canister")
    client = icp_client(settings, home)
    canister = AnchorCanister(client, from_text(settings.anchor_canister))
    publisher = IcpPublisher(
        Outbox(store, TARGET),
        IcpAnchorTarget(canister),
        backoff=backoff,
        label=f"icp canister {settings.anchor_canister} at {settings.url}",
    )
    log.info(
        "icp anchoring ready",
        extra={"canister": settings.anchor_canister, "principal": client.identity.principal_text},
    )
    return publisher
