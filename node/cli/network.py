"""`asi-node network`: follow the peers of `[network] peers`, and with `[network]
directory` those the controller's directory lists (sync), show what is kept of them
(peers), forget one (a flagged peer is refused until then), rank the replicated
discoveries (leaderboard), show one record's provenance and replications (show), publish
this node's API URL in the directory (publish) and list the directory (directory)."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from node.network.directory import Listed
    from node.network.leaderboard import Discovery
    from node.network.peers import PeerStatus
    from node.runtime import Node


def cmd_network(args: argparse.Namespace) -> int:
    from node.cli.home import open_home
    from node.network.peers import PeerBook, PeerState, PeerStatus, peer_url

    node = open_home(args.home)
    book = PeerBook(node.settings.home)
    if args.action == "sync":
        from node.network.anchors import anchors_for, unchecked_note
        from node.network.directory import to_follow
        from node.network.follow import Follower

        follower = Follower(
            node.store,
            book,
            node.settings.network,
            log_store=node.log_db(),
            anchors=anchors_for(node.settings),
        )
        follow, unread = to_follow(node.settings, args.peer)
        if unread is not None:
            print(f"asi-node: warning: {unread}; syncing [network] peers only", file=sys.stderr)
        unchecked = unchecked_note(node.settings)
        if unchecked is not None and follow:
            print(f"asi-node: note: {unchecked}", file=sys.stderr)
        if not follow:
            print(
                "no peers to follow: list their API URLs in [network] peers, or set "
                "[network] directory to follow the nodes the controller lists"
            )
            return 1 if unread is not None else 0
        results = [follower.sync(url, args.now, pin) for url, pin in follow.items()]
        for result in results:
            print(result.line())
        return 0 if all(r.state is PeerState.OK for r in results) and unread is None else 1
    if args.action in ("publish", "directory"):
        return _directory(node, args)
    if args.action == "peers":
        from node.network.directory import to_follow

        follow, unread = to_follow(node.settings)
        if unread is not None:
            print(f"asi-node: warning: {unread}", file=sys.stderr)
        known = {s.url: s for s in book.known()}
        rows = [known.get(url) or PeerStatus(url=url) for url in sorted(set(follow) | set(known))]
        if not rows:
            print("no peers: list their API URLs in [network] peers")
            return 0
        print(_table(rows, set(follow)))
        return 0
    if args.action in ("leaderboard", "show"):
        from node.network import leaderboard

        attested = node.settings.attestation.under_tee
        if args.action == "show":
            print(_show(leaderboard.find(node.store, args.record, attested)))
            return 0
        camps = [node.store.get_campaign(args.campaign)] if args.campaign else None
        ranked = leaderboard.ranked(node.store, camps or node.store.list_campaigns(), attested)
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


def _directory(node: Node, args: argparse.Namespace) -> int:
    from node.errors import ConfigError
    from node.network.directory import check_endpoint, log_name, open_directory

    if args.action == "directory":
        rows = open_directory(node.settings).entries()
        if not rows:
            print(
                "the directory lists no active node: an approved node publishes its API "
                "URL with `asi-node network publish URL`"
            )
            return 0
        print(_listing(rows))
        return 0
    given = args.url or node.settings.network.endpoint
    if not given:
        raise ConfigError(
            "no endpoint to publish: give this node's API URL "
            "(`asi-node network publish URL`) or set [network] endpoint"
        )
    endpoint = check_endpoint(given)
    entry, tx_hash = open_directory(node.settings, create_key=True).publish(
        endpoint, log_name(node.node_key())
    )
    if tx_hash is None:
        print(f"already published: {entry.endpoint} for node {entry.node}")
    else:
        print(
            f"published {entry.endpoint} for node {entry.node}, log id "
            f"0x{entry.chain_log_id.hex()} (transaction 0x{tx_hash.hex()})"
        )
    return 0


def _listing(rows: list[Listed]) -> str:
    lines = [f"{'node':<42} {'log id':<66} {'this':<4} endpoint"]
    for r in rows:
        own = "yes" if r.own else ""
        lines.append(f"{r.entry.node:<42} 0x{r.entry.chain_log_id.hex():<64} {own:<4} {r.url}")
    return "\n".join(lines)


def _table(rows: list[PeerStatus], followed: set[str]) -> str:
    from node.network.peers import PeerState

    now = datetime.now(UTC)
    lines = [f"{'peer':<32} {'state':<12} {'size':>7} {'imported':>8} {'pending':>7}  note"]
    for s in rows:
        note = s.reason
        if s.state is PeerState.UNREACHABLE and s.retry_at is not None:
            note = f"retry in {max(0.0, (s.retry_at - now).total_seconds()):.0f} s; {note}"
        if s.url not in followed:
            note = "(not followed now) " + note
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
    s.add_argument(
        "peer",
        nargs="?",
        help="only this peer's API URL (default: [network] peers, and the directory's nodes "
        "with [network] directory)",
    )
    s.add_argument("--now", action="store_true", help="try unreachable peers before their time")
    nsub.add_parser("peers", help="each peer's state: ok, quarantined, flagged, unreachable")
    f = nsub.add_parser("forget", help="drop what is kept of a peer (clears a flag)")
    f.add_argument("url", help="the peer's API URL")
    b = nsub.add_parser("leaderboard", help="the replicated discoveries, with who replicated them")
    b.add_argument("campaign", nargs="?", help="one campaign (id or name; default: all)")
    w = nsub.add_parser("show", help="a record's provenance and replications")
    w.add_argument("record", help="an experiment id (this node's or a peer's) or a leaf hash")
    u = nsub.add_parser(
        "publish", help="publish this node's API URL and log id in the controller's directory"
    )
    u.add_argument("url", nargs="?", help="the API URL to publish (default: [network] endpoint)")
    nsub.add_parser("directory", help="the controller's directory: each active node's URL, log id")
    p.set_defaults(func=cmd_network)
