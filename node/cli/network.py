"""`asi-node network`: follow the peers of `[network] peers` (sync), show what is kept of
them (peers), forget one (a flagged peer is refused until then), rank the replicated
discoveries (leaderboard) and show one record's provenance and replications (show)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from node.network.leaderboard import Discovery
    from node.network.peers import PeerStatus


def cmd_network(args: argparse.Namespace) -> int:
    from node.cli.home import open_home
    from node.network.peers import PeerBook, PeerState, PeerStatus, peer_url

    node = open_home(args.home)
    book = PeerBook(node.settings.home)
    if args.action == "sync":
        from node.network.follow import Follower

        follower = Follower(node.store, book, node.settings.network, log_store=node.log_db())
        urls = [args.peer] if args.peer else node.settings.network.peers
        if not urls:
            print("no peers to follow: list their API URLs in [network] peers")
            return 0
        results = [follower.sync(url, force=args.now) for url in urls]
        for result in results:
            print(result.line())
        return 0 if all(r.state is PeerState.OK for r in results) else 1
    if args.action == "peers":
        configured = {peer_url(u) for u in node.settings.network.peers}
        known = {s.url: s for s in book.known()}
        rows = [known.get(url) or PeerStatus(url=url) for url in sorted(configured | set(known))]
        if not rows:
            print("no peers: list their API URLs in [network] peers")
            return 0
        print(_table(rows, configured))
        return 0
    if args.action in ("leaderboard", "show"):
        from node.network import leaderboard

        if args.action == "show":
            print(_show(leaderboard.find(node.store, args.record)))
            return 0
        camps = [node.store.get_campaign(args.campaign)] if args.campaign else None
        ranked = leaderboard.ranked(node.store, camps or node.store.list_campaigns())
        if not ranked:
            print("no replicated discoveries yet")
            return 0
        print(_board(ranked))
        return 0
    if book.forget(args.url):
        print(f"forgot {peer_url(args.url)}: its next sync audits its log from scratch")
    else:
        print(f"nothing kept of {peer_url(args.url)}")
    return 0


def _table(rows: list[PeerStatus], configured: set[str]) -> str:
    from node.network.peers import PeerState

    now = datetime.now(UTC)
    lines = [f"{'peer':<32} {'state':<12} {'size':>7} {'imported':>8} {'pending':>7}  note"]
    for s in rows:
        note = s.reason
        if s.state is PeerState.UNREACHABLE and s.retry_at is not None:
            note = f"retry in {max(0.0, (s.retry_at - now).total_seconds()):.0f} s; {note}"
        if s.url not in configured:
            note = "(not in [network] peers) " + note
        lines.append(
            f"{s.url:<32} {s.state:<12} {s.size:>7} {s.imported:>8} {len(s.pending):>7}  {note}"
        )
    return "\n".join(lines)


def _board(rows: list[Discovery]) -> str:
    lines = [f"{'#':>3} {'fitness':>8}  {'name':<24} {'record':<16} {'by':<28} replicated by"]
    for n, d in enumerate(rows, 1):
        fitness = f"{d.fitness:+.4f}" if d.fitness is not None else "-"
        lines.append(
            f"{n:>3} {fitness:>8}  {d.name:<24} {d.experiment_id:<16} {d.discovered_by:<28} "
            + ", ".join(d.replicated_by)
        )
    return "\n".join(lines)


def _show(d: Discovery) -> str:
    fitness = f"{d.fitness:+.4f}" if d.fitness is not None else "-"
    lines = [
        f"record      {d.experiment_id} (campaign {d.campaign_id}, candidate {d.candidate_id})",
        f"name        {d.name}",
        f"discovered  {d.discovered_by}, fitness {fitness}",
        f"leaf hash   {d.leaf_hash or '-'}",
        "status      "
        + ("replicated by " + ", ".join(d.replicated_by) if d.replicated else "unreplicated"),
    ]
    for r in d.replications:
        mean = f"{r.fitness:+.4f}" if r.fitness is not None else "-"
        where = f" (synced from {r.peer})" if r.peer else ""
        lines.append(
            f"  {r.outcome}: {r.node_id}{where}, mean fitness {mean}, runs "
            + ", ".join(r.experiment_ids)
        )
    return "\n".join(lines)


def add_parser(sub: Any) -> None:
    """The `network` command (sub is the top-level subparsers)."""
    p = sub.add_parser("network", help="follow peers' logs and import their verified results")
    nsub = p.add_subparsers(dest="action", required=True)
    s = nsub.add_parser("sync", help="audit each peer's new log entries and import from it")
    s.add_argument("peer", nargs="?", help="only this peer's API URL (default: [network] peers)")
    s.add_argument("--now", action="store_true", help="try unreachable peers before their time")
    nsub.add_parser("peers", help="each peer's state: ok, quarantined, flagged, unreachable")
    f = nsub.add_parser("forget", help="drop what is kept of a peer (clears a flag)")
    f.add_argument("url", help="the peer's API URL")
    b = nsub.add_parser("leaderboard", help="the replicated discoveries, with who replicated them")
    b.add_argument("campaign", nargs="?", help="one campaign (id or name; default: all)")
    w = nsub.add_parser("show", help="a record's provenance and replications")
    w.add_argument("record", help="an experiment id (this node's or a peer's) or a leaf hash")
    p.set_defaults(func=cmd_network)
