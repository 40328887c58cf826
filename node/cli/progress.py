"""Progress lines on the terminal: each experiment's events, and what the anchors did."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from node.runtime import Node


def event_line(kind: str, data: dict[str, Any]) -> str | None:
    """The progress line of a campaign event (one per proposal, start, finish and score);
    None for events that print nothing."""
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
    return None


def print_event(kind: str, data: dict[str, Any]) -> None:
    line = event_line(kind, data)
    if line is not None:
        print(line, flush=True)


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
