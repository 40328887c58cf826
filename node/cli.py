"""The `asi-node` command line: init, demo, campaigns, experiments, the HTTP API, attestation."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node.errors import AsiNodeError, ConfigError
from node.settings import Settings, init_home

if TYPE_CHECKING:
    from attestation.tee.policy import Policy
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
    home = init_home(args.home, force=args.force)
    print(f"node home ready: {home}")
    return 0


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
    from node.attestation_api import evidence_path
    from node.runtime import open_node

    node = open_node(args.home)
    host = args.host or node.settings.api.host
    port = args.port or node.settings.api.port
    app = create_app(node.store, attestation_evidence=evidence_path(node.settings))
    uvicorn.run(app, host=host, port=port, log_level="warning")
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
            config = settings.model_dump(mode="json", exclude={"home"})
            binding = BindingDocument.fresh(
                log_public_key=args.log_key,
                evm_address=args.evm_address,
                icp_principal=args.icp_principal,
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
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(bundle.to_json(), indent=2) + "\n", encoding="utf-8")
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

    p = sub.add_parser("serve", help="serve the read-only HTTP API")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("attest", help="collect or verify TEE attestation evidence")
    asub = p.add_subparsers(dest="action", required=True)
    a = asub.add_parser("collect", help="collect evidence bound to the node's keys")
    a.add_argument("--provider", choices=["none", "sev-snp", "tdx", "nvidia"])
    a.add_argument("--gpus", action="store_true", help="also collect NVIDIA GPU evidence")
    a.add_argument("--log-key", required=True, help="the node's Ed25519 log key, 64 hex digits")
    a.add_argument("--evm-address", required=True, help="the node's EVM address, 0x...")
    a.add_argument("--icp-principal", required=True, help="the node's ICP principal (text)")
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
    except AsiNodeError as exc:
        print(f"asi-node: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("asi-node: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
