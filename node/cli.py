"""The `asi-node` command line: init, demo, campaigns, experiments, the HTTP API, attestation."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attestation.errors import TrustError
from governance.errors import GovernanceError
from node.errors import AsiNodeError, ConfigError
from node.settings import Settings, init_home

if TYPE_CHECKING:
    from fastapi import FastAPI

    from attestation.tee.policy import Policy
    from governance.relay import ChainGovernor
    from node.audit_icp import IcpFinding
    from node.runtime import Node
    from node.store import OutboxRow

# Commands import the loop (and so torch) only when they run: `init` and `--help` stay quick.

DEMO_NAME = "demo"
DEMO_LLM_NAME = "demo-llm"


def _print_event(kind: str, data: dict[str, Any]) -> None:
    """Progress lines for long work: one per proposal, start, finish and score."""
    if kind == "started":
        print(
            f"  [{data['seq']:>3}] start  {data['candidate']} "
            f"({data['role']}, seed {data['seed']})",
            flush=True,
        )
    elif kind == "finished":
        metrics = data.get("metrics") or {}
        timings = data.get("timings") or {}
        if data["status"] == "done":
            score = metrics.get("mean_acc", metrics.get("heldout_loss", float("nan")))
            print(
                f"  [{data['seq']:>3}] done   {data['candidate']}: score {score:.3f}, "
                f"state {int(metrics.get('state_size', 0))}, {timings.get('total_s', 0):.0f}s",
                flush=True,
            )
        else:
            print(f"  [{data['seq']:>3}] failed {data['candidate']}: {data['message']}", flush=True)
    elif kind == "proposed":
        print(f"  propose {data['candidate']}: {data['motivation'][:110]}", flush=True)
    elif kind == "scored":
        print(
            f"        fitness {data['candidate']} (seed {data['seed']}): {data['fitness']:+.3f}",
            flush=True,
        )
    elif kind == "rerun":
        print(
            f"        re-run {data['candidate']} on seed {data['seed']} before promotion",
            flush=True,
        )
    elif kind == "rerun_skipped":
        print(f"        no re-runs for {data['candidate']}: re-run budget ({data['limit']}) spent")
    elif kind == "recovered":
        print(
            f"  resumed: {len(data['experiments'])} interrupted experiment(s) queued again",
            flush=True,
        )
    elif kind == "interrupted":
        print(f"  [{data['seq']:>3}] interrupted {data['candidate']}: queued again", flush=True)
    elif kind == "no_proposal":
        print(f"  researcher: {data['reason']}", flush=True)
    elif kind == "duplicate":
        print(f"  researcher: {data['sent_back']} near-duplicate(s) sent back", flush=True)
    elif kind == "repaired":
        print(
            f"  engineer: repaired as {data['candidate']} in {data['rounds']} round(s)",
            flush=True,
        )


def _run_campaign(
    node: Node, campaign_ref: str, llm: Any = None, anchor: bool | None = None
) -> int:
    """Run until done or Ctrl-C; a second Ctrl-C is not needed: in-flight work is killed."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        print(
            f"\nasi-node: stopping ({signal.Signals(signum).name}); run again to resume", flush=True
        )
        stop.set()

    old_int = signal.signal(signal.SIGINT, on_signal)
    old_term = signal.signal(signal.SIGTERM, on_signal)
    try:
        summary = node.run_campaign(
            campaign_ref, on_event=_print_event, stop=stop, llm=llm, anchor=anchor
        )
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
    print(
        f"campaign {campaign_ref}: {summary.reason} after {summary.finished} "
        f"experiment(s), {summary.wall_s:.0f}s"
    )
    if summary.reason == "paused":
        print(f"paused: {summary.detail}")
    _print_llm_line(node, campaign_ref)
    if node.anchor_summary is not None:
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
    print()
    print(_board(node, campaign_ref))
    return 0 if summary.reason != "stopped" else 130


def _print_llm_line(node: Node, campaign_ref: str) -> None:
    """The campaign's LLM use; nothing for an offline campaign that made no calls."""
    camp = node.store.get_campaign(campaign_ref)
    usage = node.store.llm_usage(camp.id)
    if usage.calls or json.loads(camp.config_json).get("researcher") == "llm":
        print("LLM: " + usage.line())


def _board(node: Node, campaign_ref: str) -> str:
    from node import leaderboard

    camp = node.store.get_campaign(campaign_ref)
    reference = json.loads(camp.config_json).get("reference")
    rows = leaderboard.for_campaign(node.store, camp)
    return f"leaderboard of {camp.name} ({camp.id}, reference {reference}):\n" + (
        leaderboard.render(rows)
    )


def cmd_init(args: argparse.Namespace) -> int:
    from node.records import EVENT_KIND, event_statement
    from node.runtime import open_node

    home = init_home(args.home, force=args.force)
    node = open_node(home)
    existed = node.key_path.exists()
    tlog = node.log()  # creates the key if the home has none
    if tlog.size == 0:
        tlog.append(EVENT_KIND, event_statement(tlog.node_id, "node_key_created"))
        tlog.checkpoint()
    print(f"node home ready: {home}")
    print(f"node key {'kept' if existed else 'created'}: {tlog.node_id} ({node.key_path})")
    return 0


def cmd_node(args: argparse.Namespace) -> int:
    from node.runtime import open_node

    node = open_node(args.home)
    tlog = node.log()
    print(f"node id (key fingerprint): {tlog.node_id}")
    print(f"public key (C2SP verifier key): {tlog.vkey}")
    print(f"log origin: {tlog.origin}")
    print(f"log id: 0x{log_id_hex(tlog.origin)}")
    cp = tlog.latest_checkpoint()
    print(f"log size: {tlog.size}")
    if cp is not None:
        print(f"latest checkpoint: size {cp.tree_size}, root {cp.root_hash.hex()}")
    return 0


def log_id_hex(origin: str) -> str:
    from node.translog import log_id

    return log_id(origin).hex()


def cmd_log(args: argparse.Namespace) -> int:
    from node.runtime import open_node

    node = open_node(args.home)
    tlog = node.log()
    tlog.checkpoint()  # the bundle covers everything appended so far
    bundle = tlog.export()
    write_file(args.path, bundle.to_bytes())
    print(
        f"wrote {args.path}: {len(bundle.entries)} entries, {len(bundle.checkpoints)} "
        f"checkpoints, node {tlog.node_id}"
    )
    return 0


def write_file(path: Path, data: bytes, *, mkdir: bool = False) -> None:
    """Write an output file whole or not at all (a temporary file beside it, renamed);
    ConfigError names the path when it cannot be written."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        if mkdir:
            path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        tmp.replace(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None


def cmd_audit(args: argparse.Namespace) -> int:
    from attestation.audit import audit
    from node.audit_source import read_source

    icp = _icp_audit_target(args) if args.icp else None  # a user mistake stops us first
    data = read_source(args.source)
    seen = [read_source(str(path)).decode("utf-8", "replace") for path in args.checkpoint]
    report = audit(data, args.source, trusted_fingerprint=args.key, seen_checkpoints=seen)
    if args.rpc and report.ok:
        _audit_anchors(report, args)
    finding = None
    if icp is not None and report.ok and report.log is not None:
        finding = _audit_icp(report, data, *icp)
    if args.json:
        out = report.as_json()
        if finding is not None:
            out["icp_anchor"] = finding.as_json()
        print(json.dumps(out, indent=2))
    else:
        print(report.render())
    return 0 if report.ok else 1


def _icp_audit_target(args: argparse.Namespace) -> tuple[str, str, bytes, float]:
    """(url, canister, root key, max age) for `audit --icp`: flags, else the [icp] settings."""
    from attestation.icp import MAINNET_ROOT_KEY_DER
    from node.settings import load_settings

    icp = load_settings(args.home).icp
    canister = args.canister or icp.anchor_canister
    if not canister:
        raise ConfigError("audit --icp needs the anchor canister: give --canister ID")
    key_path = args.root_key or (Path(icp.root_key_path) if icp.root_key_path else None)
    if key_path is None:
        return args.icp, canister, MAINNET_ROOT_KEY_DER, icp.max_certificate_age_s
    try:
        return args.icp, canister, key_path.read_bytes(), icp.max_certificate_age_s
    except OSError as exc:
        raise ConfigError(f"--root-key {key_path}: {exc.strerror}") from None


def _audit_icp(
    report: Any, data: bytes, url: str, canister: str, key: bytes, age: float
) -> IcpFinding:
    """One more audit step: the log's certified anchor on the IC matches the log."""
    from attestation.audit import StepResult
    from node.audit_icp import STEP_NAME, check_icp_anchor

    finding = check_icp_anchor(
        data, report.log.origin, url=url, canister=canister, root_key_der=key, max_age_s=age
    )
    report.steps.append(StepResult(len(report.steps) + 1, STEP_NAME, finding.ok, finding.detail))
    report.ok = report.ok and finding.ok
    return finding


def _audit_anchors(report: Any, args: argparse.Namespace) -> None:
    """One more audit step: every checkpoint of the bundle anchored on the chain, with its
    root, by a node on the allow-list (`--approved-node`, or the controller's own)."""
    from attestation.audit import StepResult
    from governance.anchor_audit import verify_with_allow_list
    from governance.chain import Chain, Controller
    from governance.errors import GovernanceError
    from node.chain_home import EMBEDDED, load_deployment, open_audit_chain
    from node.settings import load_settings
    from node.translog import log_id

    number, name = len(report.steps) + 1, "chain anchors"
    try:
        home = Path(load_settings(args.home).home)
        if args.rpc == EMBEDDED:
            chain, deployment = open_audit_chain(EMBEDDED, home)
        else:
            chain, deployment = Chain.connect(args.rpc, expected_chain_id=args.chain_id), None
        address = args.controller
        if address is None:
            address = (deployment or load_deployment(home)).addresses["CampaignController"]
        verified, _ = verify_with_allow_list(
            Controller(chain, address),
            log_id(report.log.origin),
            [(cp.size, cp.root_hash) for cp in report.log.checkpoints],
            args.approved_node or None,
        )
    except (GovernanceError, AsiNodeError) as exc:
        report.ok = False
        report.steps.append(StepResult(number, name, False, str(exc)))
        return
    nodes = ", ".join(sorted({v.node for v in verified}))
    report.steps.append(
        StepResult(
            number,
            name,
            True,
            f"{len(verified)} checkpoint(s) anchored on chain {chain.chain_id} "
            f"({chain.label}) by approved node {nodes}",
        )
    )


def cmd_demo(args: argparse.Namespace) -> int:
    from node.campaign import demo_config
    from node.runtime import open_node

    if args.researcher != "llm" and (args.llm_url or args.model):
        raise _config_error("--llm-url and --model go with --researcher llm")
    node = open_node(args.home, create=True)
    llm = None
    name = DEMO_NAME
    if args.researcher == "llm":
        llm = _demo_llm(node, args.llm_url, args.model)
        name = DEMO_LLM_NAME
    existing = [c for c in node.store.list_campaigns() if c.name == name]
    if existing:
        camp = existing[0]
        print(f"resuming demo campaign {camp.id} in {node.settings.home}")
    else:
        config = demo_config(args.researcher)
        camp = node.store.create_campaign(name, config.model_dump(mode="json"))
        print(f"created demo campaign {camp.id} in {node.settings.home}")
    # The demo anchors its log: on the embedded chain unless chain.rpc_url names one.
    return _run_campaign(node, camp.id, llm, anchor=True)


def _demo_llm(node: Node, url: str | None, model: str | None) -> Any:
    """The demo's LLM setup, checked against the endpoint before anything runs."""
    from node.errors import ConfigError
    from node.llm_loop import LLMSetup, check_endpoints, first_model

    settings = node.settings
    if url is None and not settings.llm.base_url:
        raise ConfigError("--researcher llm needs --llm-url URL (or [llm] base_url in config)")
    if model is None and not settings.llm.model:
        key = settings.llm.api_key.get_secret_value() if settings.llm.api_key else ""
        model = first_model(url or settings.llm.base_url, key)
        if model is None:
            raise ConfigError(
                f"{url or settings.llm.base_url} lists no models (or cannot be reached); "
                "name one with --model"
            )
        print(f"using model {model} (the first the endpoint lists; --model to choose)")
    setup = LLMSetup.from_settings(settings, url, model)
    for line in check_endpoints(setup):
        print(f"LLM endpoint ok: {line}")
    return setup


def cmd_campaign(args: argparse.Namespace) -> int:
    from node.campaign import CampaignConfig, load_config, parse_config
    from node.runtime import open_node

    node = open_node(args.home)
    if args.action == "create":
        config = load_config(args.config) if args.config else CampaignConfig()
        if args.preset or args.candidates is not None:
            updates: dict[str, Any] = {}
            if args.preset:
                updates["preset"] = args.preset
            if args.candidates is not None:
                updates["budget"] = config.budget.model_copy(
                    update={"max_candidates": args.candidates}
                )
            config = parse_config(config.model_copy(update=updates).model_dump(), "campaign create")
        camp = node.store.create_campaign(args.name, config.model_dump(mode="json"))
        print(f"created campaign {camp.id} ({camp.name}), config {camp.config_hash}")
        return 0
    if args.action == "list":
        for c in node.store.list_campaigns():
            done = node.store.count_experiments(c.id, status="done")
            print(
                f"{c.id}  {c.name:<24} {c.status:<8} {done:>4} done  {c.created_at:%Y-%m-%d %H:%M}"
            )
        return 0
    if args.action == "show":
        camp = node.store.get_campaign(args.campaign)
        print(f"campaign {camp.id} ({camp.name}): {camp.status}")
        stops = node.store.list_events(camp.id, kind="run_stopped")
        why = json.loads(stops[-1].payload_json).get("detail") if stops else None
        if camp.status == "paused" and why:
            print(f"paused: {why}")
        from node.gov_cli import lineage_lines

        for line in lineage_lines(node, camp):
            print(line)
        print(f"config {camp.config_hash}")
        print(json.dumps(json.loads(camp.config_json), indent=2))
        _print_llm_line(node, camp.id)
        print()
        print(_board(node, camp.id))
        return 0
    return _run_campaign(node, args.campaign)


def cmd_experiments(args: argparse.Namespace) -> int:
    from node.runtime import open_node

    node = open_node(args.home)
    if args.action == "list":
        camp = node.store.get_campaign(args.campaign)
        for e in node.store.list_experiments(camp.id, status=args.status):
            cand = node.store.get_candidate(e.candidate_id)
            fit = f"{e.fitness:+.3f}" if e.fitness is not None else "-"
            print(
                f"{e.id}  #{e.seq:<4} {cand.name[:36]:<36} {e.role:<9} seed {e.seed:<3} "
                f"{e.status:<11} {e.failure_class or '':<18} {fit}"
            )
        return 0
    exp = node.store.get_experiment(args.experiment)
    cand = node.store.get_candidate(exp.candidate_id)
    print(
        f"experiment {exp.id} (#{exp.seq}) of campaign {exp.campaign_id}: {exp.status}"
        + (f" ({exp.failure_class})" if exp.failure_class else "")
    )
    print(f"candidate {cand.name} [{cand.origin}] {cand.digest}")
    print(f"motivation: {cand.motivation}")
    for label, raw in (
        ("screening", exp.screen_json),
        ("training", exp.train_json),
        ("metrics", exp.metrics_json),
        ("timings", exp.timings_json),
    ):
        if raw:
            print(f"{label}:")
            print(json.dumps(json.loads(raw), indent=2))
    if exp.llm_json:
        llm = json.loads(exp.llm_json)
        print(
            f"llm: {llm['calls']} call(s) ({llm['failed']} failed), "
            f"{llm['prompt_tokens'] + llm['completion_tokens']} tokens "
            f"({llm['prompt_tokens']} prompt, {llm['completion_tokens']} completion), "
            f"{llm['seconds']:.1f}s, ${llm['cost_usd']:.4f}"
            + (f"; models {', '.join(llm['models'])}" if llm["models"] else "")
        )
    if exp.fitness is not None:
        print(f"fitness {exp.fitness:+.4f} ({exp.fitness_version})")
    if exp.analysis:
        print(f"analysis: {exp.analysis}")
    print("code:")
    print(node.store.get_code(cand.digest))
    if args.transcript:
        _print_transcript(node, exp.campaign_id, exp.id)
    return 0


def _print_transcript(node: Node, campaign_id: str, experiment_id: str) -> None:
    """What the LLM agents were sent and answered for one experiment, as kept locally."""
    for x in node.store.list_llm_exchanges(campaign_id, experiment_id):
        print()
        print(
            f"--- {x.role} {x.purpose} ({x.model}, {x.status}, {x.prompt_tokens}+"
            f"{x.completion_tokens} tokens, {x.latency_s:.1f}s)"
            + (f": {x.error}" if x.error else "")
        )
        for message in json.loads(x.prompt):
            print(f"[{message['role']}]")
            print(message["content"])
        print("[reply]")
        print(x.completion)


def cmd_cognition(args: argparse.Namespace) -> int:
    from loop.cognition import CognitionError, Entry, append_user_entry, entry_from
    from node.llm_loop import COGNITION_FILE, load_cognition
    from node.settings import load_settings

    settings = load_settings(args.home)
    user_file = settings.home / COGNITION_FILE
    if args.action == "add":
        fields = ("source", "title", "topic", "insight", "symptoms", "guidance")
        try:
            entry = entry_from({f: getattr(args, f) for f in fields}, "the new entry")
        except CognitionError as exc:
            raise _config_error(str(exc)) from None
        if not settings.home.is_dir():
            raise _config_error(f"{settings.home} is not a node home yet: run `asi-node init`")
        append_user_entry(user_file, entry)
        print(f"added {entry.source} to {user_file}")
        return 0
    base = load_cognition(user_file)
    found: list[Entry]
    if args.action == "list":
        found = [e for e in base.entries if args.topic is None or e.topic == args.topic]
        for e in found:
            print(f"{e.source:<18} {e.topic:<18} {e.title}")
        print(f"{len(found)} entr{'y' if len(found) == 1 else 'ies'}")
        return 0
    for entry, score in base.search_scored(args.query, args.k):
        print(f"{score:6.2f} {entry.render()}")
    return 0


def _config_error(message: str) -> Exception:
    from node.errors import ConfigError

    return ConfigError(message)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from node.runtime import open_node

    node = open_node(args.home)
    host = args.host or node.settings.api.host
    port = args.port or node.settings.api.port
    _check_listen(host, port)
    uvicorn.run(serve_app(node), host=host, port=port, log_level="warning")
    return 0


def _check_listen(host: str, port: int) -> None:
    """ConfigError naming why `host:port` cannot be listened on (a bad host, a port in
    use), before anything starts."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ConfigError(
            f"cannot listen on {host}:{port}: the host does not resolve ({exc})"
        ) from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def _port(text: str) -> int:
    """argparse type: a TCP port, 1 to 65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is outside 1-65535")
    return port


def serve_app(node: Node) -> FastAPI:
    """The app `serve` runs: the node's store, operator token and TEE evidence, and the
    Governor of the deployment when a chain is configured (`serve_governor`)."""
    from node.api import create_app
    from node.attestation_api import evidence_path

    return create_app(
        node.store,
        governor=serve_governor(node),
        operator_token=node.settings.api.operator_token,
        attestation_evidence=evidence_path(node.settings),
    )


def serve_governor(node: Node) -> ChainGovernor | None:
    """The Governor the /gov proposal, ballot and keeper routes relay through.

    None (those routes answer 503) without `chain.rpc_url`, or, with a warning, when no
    deployment is recorded in the home. Otherwise the chain is connected and checked
    (chain id, contract code) and `api.relayer_key_path` (default: the node's chain key)
    pays the gas; it needs no votes, and a warning says so if it has some.
    """
    from governance.relay import ChainGovernor
    from node.chain_home import DEPLOYMENT_FILE, connect_deployed, load_key, read_key_file

    settings = node.settings
    if not settings.chain.rpc_url:
        return None
    home = Path(settings.home)
    if not (home / DEPLOYMENT_FILE).exists():
        print(
            f"asi-node: warning: chain.rpc_url is set but {home / DEPLOYMENT_FILE} does not "
            "exist (run `asi-node chain deploy`); the /gov proposal, ballot and keeper routes "
            "answer 503",
            file=sys.stderr,
        )
        return None
    chain, deployment = connect_deployed(settings.chain, home)
    path = settings.api.relayer_key_path
    key = read_key_file(home / path) if path else load_key(home)
    governor = ChainGovernor.from_deployment(chain, deployment, key)
    if governor.relayer_votes():
        print(
            f"asi-node: warning: the relayer {governor.relayer} holds voting power; it only "
            "pays gas, so relay from an account without votes (api.relayer_key_path)",
            file=sys.stderr,
        )
    if not chain.balance(governor.relayer):
        print(
            f"asi-node: warning: the relayer {governor.relayer} holds no ether on chain "
            f"{chain.chain_id}; relayed ballots and keeper calls fail until it is funded",
            file=sys.stderr,
        )
    return governor


def cmd_icp(args: argparse.Namespace) -> int:
    """The node's ICP principal, certificate checks, certified anchors read back."""
    from attestation.icp import MAINNET_ROOT_KEY_DER, VerificationError, verify_certificate
    from attestation.icp.certificate import certificate_from_read_state, decode_cbor
    from attestation.icp.principal import from_text, to_text
    from governance.icp import AnchorCanister, HttpTransport, IcpClient, IcpError, NodeIdentity
    from node.settings import load_settings

    settings = load_settings(args.home)
    icp = settings.icp
    root_key_path = getattr(args, "root_key", None)
    root_key_path = root_key_path or (Path(icp.root_key_path) if icp.root_key_path else None)
    try:
        root_key = root_key_path.read_bytes() if root_key_path else MAINNET_ROOT_KEY_DER
        if args.action == "principal":
            identity = NodeIdentity.load_or_create(settings.home / icp.identity_path)
            print(identity.principal_text)
            return 0
        if args.action == "verify":
            data = args.certificate.read_bytes()
            obj = decode_cbor(data, str(args.certificate))
            if isinstance(obj, Mapping) and set(obj) == {"certificate"}:
                data = certificate_from_read_state(data)  # a read_state response body
            cert = verify_certificate(
                data,
                root_key_der=root_key,
                canister_id=from_text(args.canister),
                now_ns=args.at if args.at is not None else time.time_ns(),
                max_age_ns=int(args.max_age * 1e9),
            )
            signer = f"subnet {to_text(cert.subnet_id)}" if cert.subnet_id else "the root key"
            print(f"valid: certified at {cert.time_ns} ns, signed by {signer}")
            print(f"root hash {cert.root_hash.hex()}")
            return 0
        url = args.url or icp.url
        canister = args.canister or icp.anchor_canister
        if not url or not canister:
            print(
                "asi-node: error: give --url and --canister, or set [icp] url and anchor_canister",
                file=sys.stderr,
            )
            return 2
        client = IcpClient(
            HttpTransport(url),
            NodeIdentity.load_or_create(settings.home / icp.identity_path),
            root_key_der=root_key,
            max_age_ns=int(icp.max_certificate_age_s * 1e9),
        )
        anchor = AnchorCanister(client, from_text(canister)).latest(args.log_id)
    except VerificationError as exc:
        print(f"asi-node: not verified: {exc}", file=sys.stderr)
        return 1
    except (IcpError, ValueError, OSError) as exc:
        print(f"asi-node: error: {exc}", file=sys.stderr)
        return 2
    if anchor is None:
        print(f"{args.log_id}: no anchor (certified absent)")
    else:
        print(
            f"{args.log_id}: size {anchor.tree_size} root {anchor.root.hex()} "
            f"(certified at {anchor.certified_at_ns} ns)"
        )
    return 0


def _attest_policy(args: argparse.Namespace, settings: Settings) -> Policy:
    from attestation.tee.policy import Policy

    if args.policy is not None:
        return Policy.load(args.policy)
    section = settings.attestation
    if section.measurements:
        return Policy.from_mapping(
            {"allow_debug": section.allow_debug, "measurements": section.measurements},
            f"{settings.config_path} [attestation]",
        )
    return Policy(allow_debug=section.allow_debug, any_measurement=True)


def _parse_at(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"--at {text!r}: expected a date like 2025-06-01 or an ISO time"
        ) from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def cmd_attest(args: argparse.Namespace) -> int:
    import rfc8785

    from attestation.tee.binding import BindingDocument
    from attestation.tee.collect import collect_evidence
    from attestation.tee.errors import TeeError, VerificationError
    from attestation.tee.evidence import verify_file
    from node.attestation_api import evidence_path
    from node.settings import load_settings

    settings = load_settings(args.home)
    try:
        if args.action == "collect":
            from attestation.audit import ATTESTATION_EVENT
            from node.records import EVENT_KIND, event_statement
            from node.runtime import open_node

            node = open_node(args.home)
            log_key = node.node_key().public.raw.hex()
            config = settings.model_dump(mode="json", exclude={"home"})
            principal = args.icp_principal
            if principal is None:  # the node's own ICP identity (issue 8), created if absent
                from governance.icp import NodeIdentity

                identity_path = node.settings.home / node.settings.icp.identity_path
                principal = NodeIdentity.load_or_create(identity_path).principal_text
            binding = BindingDocument.fresh(
                log_public_key=log_key,
                evm_address=args.evm_address,
                icp_principal=principal,
                config_hash=hashlib.sha256(rfc8785.dumps(config)).hexdigest(),
            )
            section = settings.attestation
            provider = args.provider or section.provider
            bundle = collect_evidence(
                provider,
                binding,
                collected_at=datetime.now(UTC).isoformat(timespec="seconds"),
                tsm_root=Path(section.tsm_path),
                sev_device=Path(section.sev_guest_device),
                gpus=args.gpus or section.gpus,
            )
            out = args.out or evidence_path(settings)
            write_file(out, (json.dumps(bundle.to_json(), indent=2) + "\n").encode(), mkdir=True)
            tlog = node.log()
            index = tlog.append(
                EVENT_KIND,
                event_statement(tlog.node_id, ATTESTATION_EVENT, evidence=bundle.to_json()),
            )
            tlog.checkpoint()
            print(f"logged as entry {index} of the node's log (node {tlog.node_id})")
            if provider == "none":
                print("provider none: no TEE evidence; this node is UNATTESTED and says so")
            else:
                print(f"collected {provider} evidence ({len(bundle.gpus)} GPU report(s))")
            print(f"binding nonce {binding.nonce}; written to {out}")
            return 0
        try:
            data = args.file.read_bytes()
            certs = [path.read_bytes() for path in args.certs or []]
        except OSError as exc:
            raise ConfigError(f"{exc.filename}: cannot read: {exc.strerror}") from None
        at = _parse_at(args.at)
        policy = _attest_policy(args, settings)
        print(f"verifying {args.file} at {at:%Y-%m-%d %H:%M} UTC; policy: {policy.describe()}")
        if policy.any_measurement:
            print("  note: no measurement allow-list ([attestation] measurements or --policy)")
        try:
            verdict = verify_file(
                data, policy=policy, at=at, certificates=certs, log_public_key=args.log_key
            )
        except VerificationError as exc:
            for step in exc.passed:
                print(f"  ok    {step}")
            print(f"  FAIL  {exc.step}: {exc.reason}")
            print(f"result: REJECTED at step {exc.step}")
            return 1
        for step in verdict.steps:
            print(f"  ok    {step}")
        if not verdict.attested:
            print("result: UNATTESTED (provider none): the node runs without a TEE")
            return 3
        print(f"result: VERIFIED {verdict.kind}")
        return 0
    except TeeError as exc:
        print(f"asi-node: error: {exc}", file=sys.stderr)
        return 2


def cmd_chain(args: argparse.Namespace) -> int:
    from governance.chain import Chain, address_of
    from node.chain_home import (
        deploy_for_node,
        load_key,
        read_key_file,
        save_deployment,
    )
    from node.runtime import open_node
    from node.store import Outbox

    node = open_node(args.home, create=True)
    home = Path(node.settings.home)
    if args.action == "deploy":
        deployer_key = read_key_file(args.deployer_key_file)
        chain = Chain.connect(args.rpc, expected_chain_id=args.chain_id)
        node_key = load_key(home)
        deployment = deploy_for_node(
            chain,
            deployer_key,
            node_key,
            guardian=args.guardian,
            extra_nodes=tuple(args.approve or ()),
            fund_node_wei=int(args.fund_node_eth * 10**18),
        )
        path = save_deployment(home, deployment)
        print(f"deployed on chain {deployment.chain_id} ({args.rpc}); recorded in {path}")
        for name, address in deployment.addresses.items():
            print(f"  {name:<20} {address}")
        print(f"  node address         {address_of(node_key)} (approved)")
        return 0
    if args.rpc:
        chain_settings = node.settings.chain.model_copy(update={"rpc_url": args.rpc})
        node.settings = node.settings.model_copy(update={"chain": chain_settings})
    anchoring = node.anchoring()  # the embedded chain when no RPC URL is set
    print(
        f"chain {anchoring.chain.chain_id} at {anchoring.chain.label}, "
        f"head {anchoring.chain.head()}"
    )
    print(f"controller {anchoring.controller.address}; node {anchoring.publisher.address} approved")
    print("outbox: " + _outbox_line(Outbox(node.store).rows(), ("pending", "sent")))
    icp = node.settings.icp
    icp_rows = Outbox(node.store, "icp").rows()
    if icp.anchor_canister or icp_rows:
        where = f"canister {icp.anchor_canister} at {icp.url}" if icp.anchor_canister else "off"
        print(f"icp outbox ({where}): " + _outbox_line(icp_rows, ("pending",)))
    return 0


def _outbox_line(rows: list[OutboxRow], open_states: tuple[str, ...]) -> str:
    """Counts per status, the latest confirmed size and why the oldest open root waits."""
    states = (*open_states, "confirmed", "failed")
    line = ", ".join(f"{sum(r.status == s for r in rows)} {s}" for s in states)
    confirmed = [r.tree_size for r in rows if r.status == "confirmed"]
    if confirmed:
        line += f"; latest confirmed size {max(confirmed)}"
    waiting = [r for r in rows if r.status in open_states and r.last_error]
    if waiting:
        line += f"; size {waiting[0].tree_size} waits: {waiting[0].last_error}"
    return line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="asi-node", description=__doc__)
    parser.add_argument(
        "--home", type=Path, default=None, help="node home (default: $ASI_NODE_HOME or ~/.asi-node)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail to stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("init", help="create the node home: config, database, workspaces")
    p.add_argument("--force", action="store_true", help="overwrite an existing config")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("demo", help="run (or resume) the demo campaign on embedded defaults")
    p.add_argument(
        "--researcher", choices=["offline", "llm"], default="offline", help="who proposes"
    )
    p.add_argument("--llm-url", help="OpenAI-compatible base URL (llm researcher)")
    p.add_argument("--model", help="model name (default: [llm] model, or the first listed)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("campaign", help="create, list, show or run campaigns")
    csub = p.add_subparsers(dest="action", required=True)
    c = csub.add_parser("create", help="create a campaign")
    c.add_argument("name")
    c.add_argument("--config", type=Path, help="campaign config TOML")
    c.add_argument("--preset", choices=["quick", "full"], help="training recipe")
    c.add_argument("--candidates", type=int, help="number of generated candidates")
    csub.add_parser("list", help="list campaigns")
    c = csub.add_parser("show", help="config and leaderboard of a campaign")
    c.add_argument("campaign", help="campaign id or name")
    c = csub.add_parser("run", help="run a campaign until its budget is spent (resumes)")
    c.add_argument("campaign", help="campaign id or name")
    p.set_defaults(func=cmd_campaign)

    p = sub.add_parser("experiments", help="list or show experiments")
    esub = p.add_subparsers(dest="action", required=True)
    e = esub.add_parser("list", help="experiments of a campaign")
    e.add_argument("campaign", help="campaign id or name")
    e.add_argument("--status", choices=["queued", "running", "done", "failed", "interrupted"])
    e = esub.add_parser("show", help="code, screening, metrics of one experiment")
    e.add_argument("experiment", help="experiment id")
    e.add_argument(
        "--transcript", action="store_true", help="also print the LLM prompts and replies"
    )
    p.set_defaults(func=cmd_experiments)

    p = sub.add_parser("cognition", help="list, search or extend the cognition base")
    gsub = p.add_subparsers(dest="action", required=True)
    g = gsub.add_parser("list", help="the entries (shipped and your own)")
    g.add_argument("--topic", help="only entries of this topic")
    g = gsub.add_parser("search", help="entries matching a query (BM25)")
    g.add_argument("query")
    g.add_argument("-k", type=int, default=5, help="how many (default 5)")
    g = gsub.add_parser("add", help="add an entry to <home>/cognition.jsonl")
    g.add_argument("--source", required=True, help="e.g. arXiv:2406.06484")
    g.add_argument("--title", required=True)
    g.add_argument("--topic", required=True, help="e.g. gating, delta rule, routing")
    g.add_argument("--insight", required=True, help="the design idea")
    g.add_argument("--symptoms", required=True, help="what it addresses, in metric words")
    g.add_argument("--guidance", required=True, help="how to build it as a Mixer")
    p.set_defaults(func=cmd_cognition)
    p = sub.add_parser("node", help="this node's identity")
    nsub = p.add_subparsers(dest="action", required=True)
    nsub.add_parser("show", help="public key, fingerprint, log id and size")
    p.set_defaults(func=cmd_node)

    p = sub.add_parser("log", help="the transparency log")
    lsub = p.add_subparsers(dest="action", required=True)
    e = lsub.add_parser("export", help="write a self-contained bundle for `asi-node audit`")
    e.add_argument("path", type=Path, help="bundle file to write (JSON)")
    p.set_defaults(func=cmd_log)

    p = sub.add_parser("audit", help="verify a log bundle or a node's log offline")
    p.add_argument("source", help="bundle file, or a node's base URL (http://host:port)")
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.add_argument("--key", help="trusted node key fingerprint (sha256:...) to pin")
    p.add_argument(
        "--checkpoint",
        type=Path,
        action="append",
        default=[],
        help="a signed checkpoint seen before (file); the log must extend it (repeatable)",
    )
    p.add_argument(
        "--rpc",
        help='also check every checkpoint is anchored on this chain (URL, or "embedded" '
        "for the home's embedded chain)",
    )
    p.add_argument("--controller", help="CampaignController address (default: the home's record)")
    p.add_argument("--chain-id", type=int, help="refuse any other chain id")
    p.add_argument(
        "--approved-node",
        action="append",
        help="node address allowed to anchor (repeatable; default: the controller's allow-list)",
    )
    p.add_argument(
        "--icp",
        metavar="URL",
        help="also check the log's certified anchor in the ICP anchor canister at this "
        "boundary node or replica URL",
    )
    p.add_argument("--canister", help="anchor canister id (default: [icp] anchor_canister)")
    p.add_argument(
        "--root-key",
        type=Path,
        metavar="DER",
        help="IC root key file, DER (default: [icp] root_key_path, else the mainnet key)",
    )
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("serve", help="serve the HTTP API (read-only, and the /gov relay)")
    p.add_argument("--host")
    p.add_argument("--port", type=_port)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("icp", help="Internet Computer: node principal, certificates, anchors")
    isub = p.add_subparsers(dest="action", required=True)
    isub.add_parser("principal", help="print the node's ICP principal (creates its key)")
    i = isub.add_parser("verify", help="verify an IC certificate (or read_state answer) file")
    i.add_argument("certificate", type=Path)
    i.add_argument("--canister", required=True, help="canister id the certificate is about")
    i.add_argument("--root-key", type=Path, help="DER root key (default: [icp] or mainnet)")
    i.add_argument("--at", type=int, help="check freshness at this time, ns since epoch")
    i.add_argument("--max-age", type=float, default=300.0, help="seconds (default 300)")
    i = isub.add_parser("latest", help="the certified latest anchor of a log")
    i.add_argument("log_id")
    i.add_argument("--root-key", type=Path, help="DER root key (default: [icp] or mainnet)")
    i.add_argument("--url", help="boundary node or replica (default: [icp] url)")
    i.add_argument("--canister", help="anchor canister id (default: [icp] anchor_canister)")
    p.set_defaults(func=cmd_icp)

    p = sub.add_parser("attest", help="collect or verify TEE attestation evidence")
    asub = p.add_subparsers(dest="action", required=True)
    a = asub.add_parser("collect", help="collect evidence bound to the node's keys")
    a.add_argument("--provider", choices=["none", "sev-snp", "tdx", "nvidia"])
    a.add_argument("--gpus", action="store_true", help="also collect NVIDIA GPU evidence")
    a.add_argument("--evm-address", required=True, help="the node's EVM address, 0x...")
    a.add_argument(
        "--icp-principal", help="the node's ICP principal (default: its [icp] identity's)"
    )
    a.add_argument(
        "--out", type=Path, help="output file (default: <home>/attestation/evidence.json)"
    )
    a = asub.add_parser("verify", help="verify an evidence file step by step")
    a.add_argument("file", type=Path, help="evidence bundle, SNP/HCL report, TDX quote, GPU report")
    a.add_argument("--at", help="judge validity dates at this date (default: now)")
    a.add_argument("--policy", type=Path, help="policy TOML/JSON (default: [attestation] settings)")
    a.add_argument(
        "--certs", type=Path, nargs="*", help="certificates raw evidence lacks (PEM/DER)"
    )
    a.add_argument("--log-key", help="require the binding document to name this node log key")
    p.set_defaults(func=cmd_attest)

    from node.gov_cli import add_parser as add_gov_parser

    add_gov_parser(sub)

    p = sub.add_parser("chain", help="deploy the contracts; check the node's chain set-up")
    chsub = p.add_subparsers(dest="action", required=True)
    d = chsub.add_parser("deploy", help="deploy token, governor, timelock, controller; record them")
    d.add_argument("--rpc", required=True, help="JSON-RPC URL of the chain")
    d.add_argument(
        "--deployer-key-file", type=Path, required=True, help="file with the funded deployer key"
    )
    d.add_argument("--chain-id", type=int, help="refuse any other chain id")
    d.add_argument("--guardian", help="guardian address (default: the deployer)")
    d.add_argument("--approve", action="append", help="approve another node address (repeatable)")
    d.add_argument(
        "--fund-node-eth", type=float, default=0.0, help="ether sent from the deployer to the node"
    )
    d = chsub.add_parser("status", help="connect, check contracts and node account, show outbox")
    d.add_argument("--rpc", help="JSON-RPC URL (default: chain.rpc_url, else the embedded chain)")
    p.set_defaults(func=cmd_chain)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except (AsiNodeError, TrustError, GovernanceError) as exc:
        print(f"asi-node: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("asi-node: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
