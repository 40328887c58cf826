"""Progress lines on the terminal: each experiment's events, and what the anchors did."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from node.runtime import Node

PROGRESS_EVERY_S = 30.0  # a progress line per experiment at most this often (not on a terminal)


def event_line(kind: str, data: dict[str, Any]) -> str | None:
    """The progress line of a campaign event (one per proposal, start, finish and score,
    and the training heartbeats); None for events that print nothing."""
    if kind == "started":
        return (
            f"  [{data['seq']:>3}] start  {data['candidate']} ({data['role']}, seed {data['seed']})"
        )
    elif kind == "finished":
        metrics = data.get("metrics") or {}
        timings = data.get("timings") or {}
        if data["status"] == "done":
            score = metrics.get("mean_acc", metrics.get("heldout_loss", float("nan")))
            return (
                f"  [{data['seq']:>3}] done   {data['candidate']}: score {score:.3f}, "
                f"state {int(metrics.get('state_size', 0))}, {timings.get('total_s', 0):.0f}s"
            )
        else:
            return f"  [{data['seq']:>3}] failed {data['candidate']}: {data['message']}"
    elif kind == "proposed":
        return f"  propose {data['candidate']}: {data['motivation'][:110]}"
    elif kind == "scored":
        return f"        fitness {data['candidate']} (seed {data['seed']}): {data['fitness']:+.3f}"
    elif kind == "rerun":
        return f"        re-run {data['candidate']} on seed {data['seed']} before promotion"
    elif kind == "rerun_skipped":
        return f"        no re-runs for {data['candidate']}: re-run budget ({data['limit']}) spent"
    elif kind == "recovered":
        return f"  resumed: {len(data['experiments'])} interrupted experiment(s) queued again"
    elif kind == "interrupted":
        return f"  [{data['seq']:>3}] interrupted {data['candidate']}: queued again"
    elif kind == "no_proposal":
        return f"  researcher: {data['reason']}"
    elif kind == "duplicate":
        return f"  researcher: {data['sent_back']} near-duplicate(s) sent back"
    elif kind == "matched":
        return (
            f"        baseline {data['baseline']} matched to {data['candidate']}'s "
            f"{data['params']:,} non-embedding parameters"
        )
    elif kind == "unmatched":
        return f"        no {data['baseline']} matched to {data['candidate']}: {data['why']}"
    elif kind == "repaired":
        return f"  engineer: repaired as {data['candidate']} in {data['rounds']} round(s)"
    elif kind == "progress":
        loss = data.get("loss")
        return (
            f"  [{data['seq']:>3}] step {data['step']}/{data['steps']} "
            f"loss {'-' if loss is None else f'{loss:.2f}'} "
            f"{_count(data.get('tok_s') or 0.0)} tok/s eta {_duration(data.get('eta_s'))}"
        )
    return None


def _count(value: float) -> str:
    """1234 as 1.2k, 3.4e6 as 3.4M."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.1f}{suffix}"
    return f"{value:.0f}"


def _duration(seconds: float | None) -> str:
    """190 as 3m10s, 7260 as 2h01m; "-" when unknown."""
    if seconds is None:
        return "-"
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


class EventPrinter:
    """Prints event lines; progress lines at most every `every_s` per experiment. On a
    terminal the latest progress line is one status line, rewritten in place and cleared
    before the next other line."""

    def __init__(
        self,
        out: TextIO | None = None,
        every_s: float = PROGRESS_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.out = out or sys.stdout
        self.tty = self.out.isatty()
        self.every_s = every_s
        self.clock = clock
        self._shown: dict[str, float] = {}  # experiment id -> when its progress last printed
        self._status = False  # a status line is on screen (terminal only)
        self._lock = threading.Lock()  # events come from every run's threads

    def line(self, kind: str, line: str, experiment: str | None = None) -> None:
        """Print `line`, an event of `kind` (of `experiment`, for progress)."""
        with self._lock:
            self._line(kind, line, experiment)

    def _line(self, kind: str, line: str, experiment: str | None) -> None:
        if kind == "progress" and experiment is not None:
            if self.tty:
                self.out.write(f"\r\x1b[K{line}")
                self.out.flush()
                self._status = True
                return
            now = self.clock()
            last = self._shown.get(experiment)
            if last is not None and now - last < self.every_s:
                return
            self._shown[experiment] = now
        elif experiment is not None:
            self._shown.pop(experiment, None)  # it finished: the next run prints at once
        if self._status:
            self.out.write("\r\x1b[K")
            self._status = False
        self.out.write(line + "\n")
        self.out.flush()

    def event(self, kind: str, data: dict[str, Any]) -> None:
        """An `on_event` sink: the event's line, if it has one."""
        text = event_line(kind, data)
        if text is not None:
            self.line(kind, text, data.get("experiment"))


def print_anchors(node: Node) -> None:
    """What the anchor followers left behind, per target, and how to audit it."""
    if node.anchor_summary is None:
        return
    a = node.anchor_summary
    print(
        f"anchors: {a.confirmed} checkpoint(s) confirmed on {a.chain}"
        + (f", {a.pending} still queued" if a.pending else "")
        + (f", {a.failed} FAILED (see `asi-node chain status`)" if a.failed else "")
    )
    for a in node.anchor_summaries[1:]:  # the ICP anchor canister, when configured
        print(
            f"anchors: {a.confirmed} checkpoint(s) confirmed on {a.chain}"
            + (f", {a.pending} still queued (see the log for why)" if a.pending else "")
            + (f", {a.failed} FAILED" if a.failed else "")
        )
    rpc = node.settings.chain.rpc_url or "embedded"
    h = f"asi-node --home {node.settings.home}"
    icp = f" --icp {node.settings.icp.url}" if node.icp_anchoring else ""
    print(f"check it: {h} log export log.json && {h} audit log.json --rpc {rpc}{icp}")
