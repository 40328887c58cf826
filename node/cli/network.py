"""`asi-node network`: follow the peers of `[network] peers` (sync), show what is kept of
them (peers), and forget one (a flagged peer is refused until then)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from node.network.peers import PeerStatus


def cmd_network(args: argparse.Namespace) -> int:
    from node.cli.home import open_home
    from node.network.peers import PeerBook, PeerState, PeerStatus, peer_url

    node = open_home(args.home)
    book = PeerBook(node.settings.home)
    if args.action == "sync":
        from node.network.follow import Follower

        follower = Follower(node.store, book, node.settings.network)
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
    p.set_defaults(func=cmd_network)
