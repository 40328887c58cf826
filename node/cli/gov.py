"""`asi-node gov ...`: governance for voters and operators, and lineage for `campaign show`.

`directives` and `audit` read the node's own store (audit: no experiment of the campaign
started while governance had it paused; exit 1 if one did). The others talk to a node's
governance API (`--url`, default the configured [api] host and port), which relays to
the Governor:
`proposals` lists them, `propose` prepares calldata and the proposal id for the voter's
own wallet, `vote` signs an EIP-712 ballot with the voter's key file and hands it to the
relay, `queue` and `execute` act as a keeper with the operator token. `run` obeys the
configured sources and acknowledges applied directives on the EVM controller.
"""

from __future__ import annotations

import argparse
import json
import logging
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node.errors import AsiNodeError

if TYPE_CHECKING:
    from node.runtime import Node
    from node.store import CampaignRow

log = logging.getLogger(__name__)

SUPPORT = {"against": 0, "for": 1, "abstain": 2}


class GovRequestError(AsiNodeError):
    """The node's governance API refused the request or could not be reached.

    The message carries its answer (a 4xx names what was wrong with the request): fix
    that, or check `--url` and that `asi-node serve` runs there.
    """


def lineage_lines(node: Node, camp: CampaignRow) -> list[str]:
    """Lines for `campaign show` and `gov directives`: fork lineage (at a size of the
    node's log) and applied directives with their log entries."""
    from node.store import DirectiveLedger

    ledger = DirectiveLedger(node.store)
    lines = []
    if camp.parent_campaign_id is not None:
        parent = node.store.get_campaign(camp.parent_campaign_id)
        lines.append(f"forked from {parent.id} ({parent.name}) at {_position(camp.fork_tree_size)}")
    for child in ledger.children(camp.id):
        lines.append(f"forked to {child.id} ({child.name}) at {_position(child.fork_tree_size)}")
    for d in ledger.list_applied():  # refused forks are filed under the child they named
        if d.kind == "fork" and "refused" in d.detail and d.detail.get("parent") == camp.id:
            lines.append(
                f"fork to {d.campaign_id} refused (epoch {d.epoch} from {d.source}): "
                f"{d.detail['refused']}"
            )
    for d in ledger.list_applied(camp.id):
        ack = f"acknowledged {d.ack_ref}" if d.ack_ref else "not yet acknowledged"
        scope = "all campaigns" if d.campaign_id == "*" else "this campaign"
        logged = d.detail.get("log_index")
        entry = f", log entry {logged}" if logged is not None else ""
        lines.append(
            f"directive {d.kind} epoch {d.epoch} from {d.source} ({scope}) "
            f"at {d.applied_at:%Y-%m-%d %H:%M:%S}{entry}, {ack}"
        )
        if "refused" in d.detail:
            lines.append(f"  refused: {d.detail['refused']}")
    return lines


def _position(tree_size: int | None) -> str:
    if tree_size is None:
        return "its latest state (no log position)"
    return f"log size {tree_size}"


def _call(
    url: str, method: str, path: str, body: dict[str, Any] | None = None, token: str | None = None
) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url.rstrip("/") + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return json.loads(reply.read() or b"null")
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:500]
        raise GovRequestError(f"{method} {path} answered {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise GovRequestError(f"cannot reach the node API at {url}: {exc}") from None


def cmd_gov(args: argparse.Namespace) -> int:
    from node.runtime import open_node

    node = open_node(args.home)
    api = node.settings.api
    url = args.url or f"http://{api.host}:{api.port}"
    if args.action == "directives":
        camp = node.store.get_campaign(args.campaign)
        print(f"campaign {camp.id} ({camp.name}): {camp.status}")
        for line in lineage_lines(node, camp):
            print(line)
        return 0
    if args.action == "run":
        return _run(node, args.campaigns)
    if args.action == "audit":
        from node.governed.records import paused_starts

        camp = node.store.get_campaign(args.campaign)
        found = paused_starts(node.store, camp.id)
        for v in found:
            print(f"experiment {v.experiment_id} (#{v.seq}) started {v.started_at}: {v.directive}")
        print(f"campaign {camp.id}: {len(found)} experiment(s) started while paused")
        return 1 if found else 0
    if args.action == "proposals":
        for p in _call(url, "GET", "/gov/proposals"):
            votes = p["votes"]
            print(
                f"{p['proposal_id']}  {p['state']:<9} for {votes['for']} against "
                f"{votes['against']} abstain {votes['abstain']}  deadline {p['deadline']}  "
                f"{p['description'][:60]}"
            )
        return 0
    if args.action == "propose":
        body: dict[str, Any] = {
            "action": args.directive,
            "campaign": args.campaign,
            "description": args.description,
        }
        for key in ("child", "from_tree_size", "checkpoint_root", "config_hash", "config_uri"):
            if getattr(args, key) is not None:
                body[key] = getattr(args, key)
        if args.pause_parent:
            body["pause_parent"] = True
        print(json.dumps(_call(url, "POST", "/gov/proposals/prepare", body), indent=2))
        return 0
    if args.action == "vote":
        return _vote(args, url)
    token = api.operator_token.get_secret_value() if api.operator_token else None
    path = f"/gov/proposals/{args.proposal}/{args.action}"
    print(json.dumps(_call(url, "POST", path, {}, token=token), indent=2))
    return 0


def _run(node: Node, campaigns: list[str]) -> int:
    from node.cli.daemon import obey, stop_on_signals
    from node.cli.progress import print_anchors
    from node.governed.obey import sources_from_settings

    sources = sources_from_settings(node.settings, node.store)
    if not sources:
        raise GovRequestError(
            "no governance source is configured: set [icp] url, sns_governance_canister and "
            "the sns_*_function ids, or chain.rpc_url after `asi-node chain deploy`"
        )
    with stop_on_signals() as stop, node.anchoring_followers(node.anchors_by_default):
        obey(node, campaigns, sources, stop)
    print_anchors(node)
    return 0


def _vote(args: argparse.Namespace, url: str) -> int:
    from governance.ballots import GovernorDomain, sign_ballot, voter_address

    try:
        key = bytes.fromhex(Path(args.key_file).read_text().strip().removeprefix("0x"))
    except (OSError, ValueError) as exc:
        raise GovRequestError(
            f"cannot read a hex private key from {args.key_file}: {exc}"
        ) from None
    d = _call(url, "GET", "/gov/domain")
    domain = GovernorDomain(d["name"], int(d["chainId"]), d["verifyingContract"], d["version"])
    voter = voter_address(key)
    nonce = int(_call(url, "GET", f"/gov/voters/{voter}/nonce")["nonce"])
    ballot = sign_ballot(key, domain, int(args.proposal), SUPPORT[args.support], nonce)
    body = {
        "proposal_id": ballot.proposal_id,
        "support": ballot.support,
        "voter": ballot.voter,
        "nonce": ballot.nonce,
        "signature": "0x" + ballot.signature.hex(),
        "chain_id": domain.chain_id,
        "verifying_contract": domain.verifying_contract,
    }
    reply = _call(url, "POST", "/gov/ballots", body)
    print(f"vote {args.support} on {args.proposal} by {voter} relayed: {reply['tx']}")
    return 0


def add_parser(sub: Any) -> None:
    """The `gov` parser block (sub is the top-level subparsers)."""
    p = sub.add_parser("gov", help="governance: directives, proposals, votes, keeper actions")
    p.add_argument("--url", help="the node's API (default: [api] host and port)")
    gsub = p.add_subparsers(dest="action", required=True)
    g = gsub.add_parser("directives", help="a campaign's lineage and applied directives")
    g.add_argument("campaign", help="campaign id or name")
    g = gsub.add_parser("run", help="run campaigns under governance (pause/resume/stop/fork)")
    g.add_argument("campaigns", nargs="+", help="campaign ids or names")
    g = gsub.add_parser("audit", help="check that no experiment started while paused")
    g.add_argument("campaign", help="campaign id or name")
    gsub.add_parser("proposals", help="proposals with state, votes and deadlines")
    g = gsub.add_parser("propose", help="calldata and proposal id for your wallet to propose")
    g.add_argument("directive", choices=["pause", "resume", "stop", "fork"])
    g.add_argument("campaign", help="campaign id or name (a fork's parent)")
    g.add_argument("--description", required=True)
    g.add_argument("--child", help="fork: the child's name")
    g.add_argument("--from-tree-size", type=int, help="fork: the parent's log position")
    g.add_argument("--checkpoint-root", help="fork: 0x root of the log at that position")
    g.add_argument("--config-hash", help="fork: 0x SHA-256 of the child's config JSON")
    g.add_argument("--config-uri", help="fork: where the child's config is published")
    g.add_argument("--pause-parent", action="store_true", help="fork: pause the parent too")
    g = gsub.add_parser("vote", help="sign a ballot with your key file and relay it")
    g.add_argument("proposal", help="proposal id (decimal)")
    g.add_argument("support", choices=list(SUPPORT))
    g.add_argument("--key-file", required=True, help="file holding your hex private key")
    for action in ("queue", "execute"):
        g = gsub.add_parser(action, help=f"{action} a proposal (operator token, as a keeper)")
        g.add_argument("proposal", help="proposal id (decimal)")
    p.set_defaults(func=cmd_gov)
