"""`asi-node gov ...`: governance for voters and operators, and lineage for `campaign show`.

`directives` and `audit` read the node's own store (audit: no experiment of the campaign
started while governance had it paused; exit 1 if one did). The others talk to a node's
governance API (`--url`, default the configured [api] host and port), which relays to
the Governor:
`proposals` and `show` list them with their decoded calls, `propose` prepares a proposal
for any controller governance function (the node runs it as the timelock first) and says
how to submit it (the calldata for the voter's own wallet, or Tally), `vote` signs an
EIP-712 ballot with the voter's key file and hands it to the relay, `queue` and `execute`
act as a keeper with the operator token. `run` obeys the configured sources and
acknowledges applied directives on the EVM controller. With `--rpc`, `node.cli.gov_rpc`
runs the voter's commands (delegate among them) with no node home.
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
    from governance.ballots import Ballot, GovernorDomain
    from node.runtime import Node
    from node.store import CampaignRow

log = logging.getLogger(__name__)

SUPPORT = {"against": 0, "for": 1, "abstain": 2}
# `gov propose` kinds -> the API's prepare actions (the controller function each makes).
PROPOSE_KINDS = {
    "pause": "pause",  # pauseCampaign
    "resume": "resume",  # resumeCampaign
    "stop": "stop",  # stopCampaign
    "fork": "fork",  # forkCampaign (+ resumeCampaign of the child with --resume-child)
    "register": "register",  # registerCampaign, with the local campaign's config hash
    "pause-all": "pause_all",
    "unpause-all": "unpause_all",
    "set-measurement": "set_measurement",
    "approve-node": "approve_node",
    "revoke-node": "revoke_node",
}
NO_SUBJECT = ("pause-all", "unpause-all")


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


def proposal_id(text: str) -> int:
    """A proposal id as the user typed it (decimal, as listed; 0x hex too)."""
    try:
        value = int(text, 0)
    except ValueError:
        value = -1
    if not 0 <= value < 2**256:
        raise GovRequestError(f"{text!r} is no proposal id (a decimal number, as listed)")
    return value


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
        query = f"?voter={args.voter}" if args.voter else ""
        for p in _call(url, "GET", f"/gov/proposals{query}"):
            for line in proposal_lines(p):
                print(line)
        return 0
    if args.action == "propose":
        notes, body = _propose_body(node, args)
        prepared = _call(url, "POST", "/gov/proposals/prepare", body)
        if args.json:
            print(json.dumps(prepared, indent=2))
            return 0
        for line in notes + prepared_lines(prepared):
            print(line)
        return 0
    if args.action == "show":
        pid = proposal_id(args.proposal)
        query = f"?voter={args.voter}" if args.voter else ""
        for line in proposal_lines(_call(url, "GET", f"/gov/proposals/{pid}{query}")):
            print(line)
        return 0
    if args.action == "delegate":
        raise GovRequestError(
            "gov delegate sends from your key: give --rpc URL --governor ADDR (no node needed)"
        )
    if args.action == "vote":
        return _vote(args, url)
    token = api.operator_token.get_secret_value() if api.operator_token else None
    path = f"/gov/proposals/{proposal_id(args.proposal)}/{args.action}"
    print(json.dumps(_call(url, "POST", path, {}, token=token), indent=2))
    return 0


def call_text(call: dict[str, Any]) -> str:
    if call.get("function") is None:
        return f"{call['target']} data {call['calldata'][:10]}... ({call.get('error')})"
    args = ", ".join(f"{k}={v}" for k, v in call["args"].items())
    return f"{call['function']}({args})"


def proposal_lines(p: dict[str, Any]) -> list[str]:
    """A proposal of GET /gov/proposals as `gov proposals` prints it."""
    votes = p["votes"]
    quorum = p.get("quorum") or "-"
    eta = f"  executable from {p['eta']}" if p.get("eta") else ""
    lines = [
        f"{p['proposal_id']}  {p['state']:<9} for {votes['for']} against {votes['against']} "
        f"abstain {votes['abstain']} (quorum {quorum})  deadline {p['deadline']}{eta}",
        f"  by {p.get('proposer') or '?'}: {p['description'][:72]}",
    ]
    if p.get("has_voted") is not None:
        lines.append("  voted" if p["has_voted"] else "  not voted yet")
    lines += [f"  - {call_text(c)}" for c in p.get("calls", [])]
    return lines


def prepared_lines(prepared: dict[str, Any], via: str = "") -> list[str]:
    """What `gov propose` prints: the calls, the id, and how to submit the proposal;
    `via` the `gov` options of the vote command it suggests (`--rpc` and `--governor`)."""
    lines = [f"proposal {prepared['proposal_id']} (prepared; nothing was sent)"]
    for i, call in enumerate(prepared["calls"], 1):
        ran = (
            "ran as the timelock: succeeds on the latest block"
            if call.get("simulated")
            else "not run: it acts on what an earlier call of this proposal changes"
        )
        lines.append(f"  {i}. {call_text(call)} on {call['target']} ({ran})")
    if prepared.get("proposer"):
        lines.append(f"  only {prepared['proposer']} can submit it (#proposer= in the description)")
    lines += [
        "",
        "Submit it in one of two ways (the description must stay exactly as below; the id "
        "depends on it):",
        f"- your wallet: send a transaction to the Governor {prepared['governor']}, value 0, "
        "with data",
        f"  {prepared['propose_calldata']}",
        "- Tally (tally.xyz), which works with these OpenZeppelin Governor contracts: once the "
        "DAO is added there, create a proposal with these custom actions (value 0 each):",
    ]
    for target, data in zip(prepared["targets"], prepared["calldatas"], strict=True):
        lines.append(f"    target {target} calldata {data}")
    lines += [
        "  and this description:",
        *[f"    {line}" for line in prepared["description"].splitlines() or [""]],
        "",
        f"Then, once voting opens: asi-node gov{via} vote {prepared['proposal_id']} for "
        "--key-file FILE",
    ]
    return lines


def hex32(text: str | None, what: str) -> str | None:
    if text is None:
        return None
    raw = text.removeprefix("0x").removeprefix("sha256:")
    if len(raw) != 64 or any(c not in "0123456789abcdefABCDEF" for c in raw):
        raise GovRequestError(f"{what} {text!r} is not 32 bytes of hex (0x and 64 hex digits)")
    return "0x" + raw.lower()


def check_subject(kind: str, subject: str | None) -> str | None:
    """`gov propose KIND [SUBJECT]`'s subject, refused where the kind takes none or
    needs one."""
    if kind in NO_SUBJECT and subject:
        raise GovRequestError(f"gov propose {kind} takes no campaign (it acts on all of them)")
    if kind not in NO_SUBJECT and not subject:
        what = {
            "set-measurement": "the measurement (0x and 64 hex digits)",
            "approve-node": "the node's address",
            "revoke-node": "the node's address",
        }.get(kind, "the campaign")
        raise GovRequestError(f"gov propose {kind} needs {what}")
    return subject


def _propose_body(node: Node, args: argparse.Namespace) -> tuple[list[str], dict[str, Any]]:
    """Notes for the reader and the body of POST /gov/proposals/prepare for `gov propose`."""
    kind: str = args.kind
    subject = check_subject(kind, args.subject)
    body: dict[str, Any] = {"action": PROPOSE_KINDS[kind], "description": args.description}
    if args.proposer:
        body["proposer"] = args.proposer
    notes: list[str] = []
    if kind in ("pause", "resume", "stop"):
        body["campaign"] = subject
    elif kind == "register":
        body |= _register_fields(node, args, str(subject), notes)
    elif kind == "fork":
        body |= _fork_fields(node, args, str(subject), notes)
    elif kind == "set-measurement":
        body |= {"measurement": hex32(subject, "measurement"), "approved": not args.remove}
    elif kind in ("approve-node", "revoke-node"):
        body["node"] = subject
        if kind == "approve-node" and args.measurement:
            body["measurement"] = hex32(args.measurement, "--measurement")
    return notes, body


def _register_fields(
    node: Node, args: argparse.Namespace, ref: str, notes: list[str]
) -> dict[str, Any]:
    from node.errors import NotFoundError

    given = hex32(args.config_hash, "--config-hash")
    fields: dict[str, Any] = {"config_uri": args.config_uri or ""}
    try:
        camp = node.store.get_campaign(ref)
    except NotFoundError:
        if given is None:
            raise GovRequestError(
                f"no campaign {ref!r} on this node: register one of its campaigns, or give "
                "--config-hash to register another node's campaign by its id"
            ) from None
        return fields | {"campaign": ref, "config_hash": given}
    mine = hex32(camp.config_hash, "the campaign's config hash")
    if given is not None and given != mine:
        raise GovRequestError(
            f"campaign {camp.id} has config hash {mine} on this node, not {given}: nodes run "
            "it only under the hash registered"
        )
    notes.append(f"registering {camp.id} ({camp.name}) with its config hash {mine}")
    return fields | {"campaign": camp.id, "config_hash": mine}


def _fork_fields(
    node: Node, args: argparse.Namespace, parent: str, notes: list[str]
) -> dict[str, Any]:
    if not args.child or args.from_tree_size is None or not args.config_hash:
        raise GovRequestError("gov propose fork needs --child, --from-tree-size and --config-hash")
    log_id = hex32(args.log_id, "--log-id")
    root = hex32(args.checkpoint_root, "--checkpoint-root")
    if log_id is None or root is None:
        # This node's own log: the root it has at that size, the id it anchors under.
        tlog = node.log()
        if root is None:
            if not 1 <= args.from_tree_size <= tlog.size:
                raise GovRequestError(
                    f"this node's log has {tlog.size} entries, so it has no root at size "
                    f"{args.from_tree_size}: give --checkpoint-root (and --log-id)"
                )
            root = "0x" + tlog.root(args.from_tree_size).hex()
            notes.append(f"checkpoint root: this node's log at size {args.from_tree_size}, {root}")
        if log_id is None:
            log_id = _own_chain_log_id(node, tlog.origin)
            notes.append(f"log id: this node's log as its chain key anchors it, {log_id}")
    return {
        "campaign": parent,
        "child": args.child,
        "log_id": log_id,
        "from_tree_size": args.from_tree_size,
        "checkpoint_root": root,
        "config_hash": hex32(args.config_hash, "--config-hash"),
        "config_uri": args.config_uri or "",
        "pause_parent": bool(args.pause_parent),
        "resume_child": bool(args.resume_child),
    }


def _own_chain_log_id(node: Node, origin: str) -> str:
    from governance.chain import address_of, chain_log_id
    from node.anchoring.chain_home import load_key
    from node.errors import ConfigError
    from node.tlog.log import log_id

    try:
        key = load_key(Path(node.settings.home), create=False)
    except ConfigError as exc:
        raise GovRequestError(
            f"{exc}: give --log-id, the controller's logIdOf(node, logName) of the log the "
            "checkpoint is anchored in"
        ) from None
    return "0x" + chain_log_id(address_of(key), log_id(origin)).hex()


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

    if args.typed_data or args.signature:
        raise GovRequestError(
            "--typed-data and --signature go with --rpc URL --governor ADDR (no node needed)"
        )
    if not args.key_file:
        raise GovRequestError("gov vote needs --key-file, the file holding your hex private key")
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
    pid = proposal_id(args.proposal)
    ballot = sign_ballot(key, domain, pid, SUPPORT[args.support], nonce)
    reply = relay_ballot(url, ballot, domain)
    print(f"vote {args.support} on {args.proposal} by {voter} relayed: {reply['tx']}")
    return 0


def relay_ballot(url: str, ballot: Ballot, domain: GovernorDomain) -> dict[str, Any]:
    """POST a signed ballot to a node's relay (`/gov/ballots`); its answer (the tx)."""
    body = {
        "proposal_id": ballot.proposal_id,
        "support": ballot.support,
        "voter": ballot.voter,
        "nonce": ballot.nonce,
        "signature": "0x" + ballot.signature.hex(),
        "chain_id": domain.chain_id,
        "verifying_contract": domain.verifying_contract,
    }
    reply: dict[str, Any] = _call(url, "POST", "/gov/ballots", body)
    return reply


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """The `gov` parser block (sub is the top-level subparsers); returns the `gov` parser."""
    p: argparse.ArgumentParser = sub.add_parser(
        "gov", help="governance: proposals, votes, delegation, directives, keeper actions"
    )
    p.add_argument("--url", help="the node's API (default: [api] host and port)")
    p.add_argument(
        "--rpc",
        help="an EVM JSON-RPC URL: read the Governor and send from your key file, with no "
        "node home (proposals, show, delegate, vote, propose, queue, execute)",
    )
    p.add_argument("--governor", help="with --rpc: the DAO's Governor contract address")
    p.add_argument(
        "--controller",
        help="with --rpc: the CampaignController address (default: the one the Governor's "
        "proposals call)",
    )
    gsub = p.add_subparsers(dest="action", required=True)
    g = gsub.add_parser("directives", help="a campaign's lineage and applied directives")
    g.add_argument("campaign", help="campaign id or name")
    g = gsub.add_parser("run", help="run campaigns under governance (pause/resume/stop/fork)")
    g.add_argument("campaigns", nargs="+", help="campaign ids or names")
    g = gsub.add_parser("audit", help="check that no experiment started while paused")
    g.add_argument("campaign", help="campaign id or name")
    g = gsub.add_parser("proposals", help="proposals with their calls, state, votes, quorum")
    g.add_argument("--voter", help="0x address: say whether it voted on each")
    g = gsub.add_parser("show", help="one proposal: calls, state, votes, quorum, description")
    g.add_argument("proposal", help="proposal id (decimal)")
    g.add_argument("--voter", help="0x address: say whether it voted")
    g = gsub.add_parser("delegate", help="delegate your token votes (--rpc and --key-file)")
    g.add_argument("--to", help="0x address to delegate to (default: yourself)")
    g.add_argument("--key-file", type=Path, required=True, help="your hex private key")
    g = gsub.add_parser(
        "propose",
        help="build a proposal (checked as the timelock); with --rpc and --key-file, send it",
    )
    g.add_argument("kind", choices=list(PROPOSE_KINDS))
    g.add_argument(
        "subject",
        nargs="?",
        help="the campaign id or name (a fork's parent); set-measurement: the 0x "
        "measurement; approve-node, revoke-node: the node's 0x address",
    )
    g.add_argument("--description", required=True)
    g.add_argument("--proposer", help="0x address that will submit it (no one else can)")
    g.add_argument("--key-file", type=Path, help="with --rpc: send propose() from this key")
    g.add_argument("--child", help="fork: the child's name")
    g.add_argument("--from-tree-size", type=int, help="fork: the parent's log position")
    g.add_argument(
        "--checkpoint-root", help="fork: 0x root of the log at that size (default: this node's)"
    )
    g.add_argument(
        "--log-id",
        help="fork: 0x id of the log on the controller, logIdOf(node, logName) (default: "
        "this node's log under its chain key)",
    )
    g.add_argument(
        "--config-hash",
        help="fork: 0x SHA-256 of the child's config; register: only for another node's "
        "campaign (always with --rpc)",
    )
    g.add_argument("--config-uri", help="fork, register: where the config is published")
    g.add_argument("--pause-parent", action="store_true", help="fork: pause the parent too")
    g.add_argument(
        "--resume-child", action="store_true", help="fork: resume the child in the same proposal"
    )
    g.add_argument("--measurement", help="approve-node: the node's 0x TEE measurement")
    g.add_argument("--remove", action="store_true", help="set-measurement: remove it")
    g.add_argument("--json", action="store_true", help="print the prepared proposal as JSON")
    g = gsub.add_parser(
        "vote", help="vote with your key file, or sign a ballot in a wallet (--rpc)"
    )
    g.add_argument("proposal", help="proposal id (decimal)")
    g.add_argument("support", choices=list(SUPPORT))
    g.add_argument(
        "--key-file",
        type=Path,
        help="file holding your hex private key (with --signature: the account paying gas)",
    )
    g.add_argument(
        "--typed-data",
        action="store_true",
        help="with --rpc: print the EIP-712 ballot for a wallet's eth_signTypedData_v4",
    )
    g.add_argument("--signature", help="with --rpc: the wallet's 0x signature of that ballot")
    g.add_argument("--voter", help="with --typed-data or --signature: the wallet's 0x address")
    g.add_argument(
        "--nonce", type=int, help="the ballot's nonce (default: the voter's current one)"
    )
    for action in ("queue", "execute"):
        g = gsub.add_parser(
            action, help=f"{action} a proposal (operator token; with --rpc, from --key-file)"
        )
        g.add_argument("proposal", help="proposal id (decimal)")
        g.add_argument("--key-file", type=Path, help="with --rpc: the account that sends it")
    p.set_defaults(func=cmd_gov)
    return p
