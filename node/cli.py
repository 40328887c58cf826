"""The `asi-node` command line: init, demo, campaigns, experiments, the HTTP API."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attestation.errors import TrustError
from node.errors import AsiNodeError
from node.settings import init_home

if TYPE_CHECKING:
    from node.runtime import Node

# Commands import the loop (and so torch) only when they run: `init` and `--help` stay quick.

DEMO_NAME = "demo"


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


def _run_campaign(node: Node, campaign_ref: str) -> int:
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
        summary = node.run_campaign(campaign_ref, on_event=_print_event, stop=stop)
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
    print(
        f"campaign {campaign_ref}: {summary.reason} after {summary.finished} "
        f"experiment(s), {summary.wall_s:.0f}s"
    )
    print()
    print(_board(node, campaign_ref))
    return 0 if summary.reason != "stopped" else 130


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
    args.path.write_bytes(bundle.to_bytes())
    print(
        f"wrote {args.path}: {len(bundle.entries)} entries, {len(bundle.checkpoints)} "
        f"checkpoints, node {tlog.node_id}"
    )
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from attestation.audit import audit
    from node.audit_source import read_source

    data = read_source(args.source)
    seen = [read_source(str(path)).decode("utf-8", "replace") for path in args.checkpoint]
    report = audit(data, args.source, trusted_fingerprint=args.key, seen_checkpoints=seen)
    if args.json:
        print(json.dumps(report.as_json(), indent=2))
    else:
        print(report.render())
    return 0 if report.ok else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from node.campaign import demo_config
    from node.runtime import open_node

    node = open_node(args.home, create=True)
    existing = [c for c in node.store.list_campaigns() if c.name == DEMO_NAME]
    if existing:
        camp = existing[0]
        print(f"resuming demo campaign {camp.id} in {node.settings.home}")
    else:
        camp = node.store.create_campaign(DEMO_NAME, demo_config().model_dump(mode="json"))
        print(f"created demo campaign {camp.id} in {node.settings.home}")
    return _run_campaign(node, camp.id)


def cmd_campaign(args: argparse.Namespace) -> int:
    from node.campaign import CampaignConfig, load_config
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
            config = CampaignConfig.model_validate(config.model_copy(update=updates).model_dump())
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
        print(f"config {camp.config_hash}")
        print(json.dumps(json.loads(camp.config_json), indent=2))
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
    if exp.fitness is not None:
        print(f"fitness {exp.fitness:+.4f} ({exp.fitness_version})")
    if exp.analysis:
        print(f"analysis: {exp.analysis}")
    print("code:")
    print(node.store.get_code(cand.digest))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from node.api import create_app
    from node.runtime import open_node

    node = open_node(args.home)
    host = args.host or node.settings.api.host
    port = args.port or node.settings.api.port
    uvicorn.run(create_app(node.store), host=host, port=port, log_level="warning")
    return 0


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
    p.set_defaults(func=cmd_experiments)

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
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("serve", help="serve the read-only HTTP API")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.set_defaults(func=cmd_serve)
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
    except (AsiNodeError, TrustError) as exc:
        print(f"asi-node: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("asi-node: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
