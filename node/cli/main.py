"""The `asi-node` command line: init, demo, campaigns, experiments, cognition, the HTTP API.

The trust commands (log export, audit, icp, attest, chain) are in `node.cli.trust`, the
governance ones in `node.cli.gov` (with `--rpc`, a voter's without a node home, in
`node.cli.gov_rpc`), staging benchmarks in `node.cli.bench`; `main` maps
every user mistake to one error line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attestation.errors import TrustError
from attestation.schema import CampaignStatus, ExperimentStatus
from governance.errors import GovernanceError
from loop.errors import LoopError
from node.cli.home import announce, open_home
from node.cli.progress import EventPrinter, print_anchors
from node.errors import AsiNodeError, ConfigError
from node.settings import init_home

if TYPE_CHECKING:
    from node.runtime import Node

# Commands import the loop (and so torch) only when they run: `init` and `--help` stay quick.

DEMO_NAME = "demo"
DEMO_LLM_NAME = "demo-llm"


def _run_campaign(
    node: Node, campaign_ref: str, llm: Any = None, anchor: bool | None = None
) -> int:
    """Run until done or Ctrl-C; a second Ctrl-C is not needed: in-flight work is killed.
    With `anchor` (default: `Node.anchors_by_default`) the log is anchored meanwhile."""
    from node.campaign.scheduler import RunEnd
    from node.cli.daemon import stop_on_signals

    enabled = node.anchors_by_default if anchor is None else anchor
    print(node.device_line(), flush=True)
    with stop_on_signals() as stop, node.anchoring_followers(enabled):
        summary = node.run_campaign(campaign_ref, on_event=EventPrinter().event, stop=stop, llm=llm)
    if stop.is_set():
        print("asi-node: stopped; run again to resume", flush=True)
    print(
        f"campaign {campaign_ref}: {summary.reason} after {summary.finished} "
        f"experiment(s), {summary.wall_s:.0f}s"
    )
    if summary.reason is RunEnd.PAUSED:
        print(f"paused: {summary.detail}")
    _print_llm_line(node, campaign_ref)
    print_anchors(node)
    print()
    print(_board(node, campaign_ref))
    return 0 if summary.reason is not RunEnd.STOPPED else 130


def _print_llm_line(node: Node, campaign_ref: str) -> None:
    """The campaign's LLM use; nothing for an offline campaign that made no calls."""
    camp = node.store.get_campaign(campaign_ref)
    usage = node.store.llm_usage(camp.id)
    if usage.calls or camp.config.get("researcher") == "llm":
        print("LLM: " + usage.line())


def _board(node: Node, campaign_ref: str) -> str:
    from node.campaign import leaderboard

    camp = node.store.get_campaign(campaign_ref)
    reference = camp.config.get("reference")
    rows = leaderboard.for_campaign(node.store, camp)
    return f"leaderboard of {camp.name} ({camp.id}, reference {reference}):\n" + (
        leaderboard.render(rows)
    )


def cmd_init(args: argparse.Namespace) -> int:
    from node.runtime import open_node

    home = init_home(args.home, force=args.force)
    announce(open_node(home), "node home ready")
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
    from node.tlog.log import log_id

    return log_id(origin).hex()


def cmd_demo(args: argparse.Namespace) -> int:
    from node.campaign.config import demo_config

    if args.researcher != "llm" and (args.llm_url or args.model):
        raise _config_error("--llm-url and --model go with --researcher llm")
    node = open_home(args.home, create=True)
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
    from node.campaign.llm_setup import LLMSetup, check_endpoints, first_model

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


def _join(node: Node, args: argparse.Namespace) -> int:
    from node.anchoring.chain_home import deployed_controller
    from node.campaign.config import load_config
    from node.network.shared import Shared, fetch_shared, join

    if args.url:
        shared = fetch_shared(args.url, args.campaign, node.settings.network.timeout_s)
    else:
        config = load_config(args.config).model_dump(mode="json")
        shared = Shared(f"joined-{args.campaign}", config)
    controller = deployed_controller(node.settings.chain, Path(node.settings.home))
    camp, checked = join(node.store, args.campaign, shared, controller, args.name)
    print(f"joined campaign {camp.id} ({camp.name}), config {camp.config_hash}: {checked}")
    return 0


def cmd_campaign(args: argparse.Namespace) -> int:
    from node.campaign.config import CampaignConfig, load_config, parse_config
    from node.campaign.tasks import check_data

    node = open_home(args.home, create=args.action in ("create", "join"))
    if args.action == "join":
        return _join(node, args)
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
        if config.verify is not None:  # a verification stage: its choice, made once
            from node.campaign.verification import stage_config

            config = stage_config(node.store, node.log(), config)
            for chosen in config.verify.selected if config.verify else ():
                print(
                    f"verifies {chosen.name} ({chosen.candidate_id}): mean fitness "
                    f"{chosen.mean:+.3f} over {chosen.seeds} seed(s), lower bound "
                    f"{chosen.lower_bound:+.3f}, record leaf {chosen.leaf_hash[:16]}"
                )
        # Once: every token of the shard, and the node's devices.
        check_data(config, Path(node.settings.home), scan_tokens=None, gpus=node.gpus())
        camp = node.store.create_campaign(args.name, config.model_dump(mode="json"))
        print(f"created campaign {camp.id} ({camp.name}), config {camp.config_hash}")
        return 0
    if args.action == "list":
        for c in node.store.list_campaigns():
            done = node.store.count_experiments(c.id, status=ExperimentStatus.DONE)
            print(
                f"{c.id}  {c.name:<24} {c.status:<8} {done:>4} done  {c.created_at:%Y-%m-%d %H:%M}"
            )
        return 0
    if args.action == "show":
        camp = node.store.get_campaign(args.campaign)
        print(f"campaign {camp.id} ({camp.name}): {camp.status}")
        stops = node.store.list_events(camp.id, kind="run_stopped")
        why = stops[-1].payload.get("detail") if stops else None
        if camp.status is CampaignStatus.PAUSED and why:
            print(f"paused: {why}")
        from node.cli.gov import lineage_lines

        for line in lineage_lines(node, camp):
            print(line)
        print(f"config {camp.config_hash}")
        print(json.dumps(camp.config, indent=2))
        _print_llm_line(node, camp.id)
        from node.campaign import discovery

        threads = node.settings.loop.threads_per_worker
        print(discovery.for_campaign(node.store, camp, threads).line())
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
    for label, value in (
        ("screening", exp.screen),
        ("training", exp.train),
        ("metrics", exp.metrics),
        ("timings", exp.timings),
    ):
        if value:
            print(f"{label}:")
            print(json.dumps(value, indent=2))
    if exp.llm:
        llm = exp.llm
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
    from node.campaign.llm_setup import COGNITION_FILE, load_cognition
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


def cmd_schema(args: argparse.Namespace) -> int:
    """Print the JSON Schema of the statements this node signs into its log."""
    from attestation.schema import json_schema

    print(json.dumps(json_schema(), indent=2, sort_keys=True))
    return 0


def _config_error(message: str) -> Exception:

    return ConfigError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="asi-node", description=__doc__)
    parser.add_argument(
        "--home", type=Path, default=None, help="node home (default: $ASI_NODE_HOME or ~/.asi-node)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail to stderr")
    parser.add_argument("--version", action="version", version=f"asi-node {_version()}")
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
    c = csub.add_parser(
        "join",
        help="run a campaign another node runs: its id and config, checked against the "
        "controller's registration",
    )
    c.add_argument("campaign", help="the campaign's id (c-…), as registered on the controller")
    source = c.add_mutually_exclusive_group(required=True)
    source.add_argument("--from", dest="url", help="a node's API URL that serves the campaign")
    source.add_argument("--config", type=Path, help="the campaign's config TOML")
    c.add_argument("--name", help="its name here (default: the serving node's, or its id)")
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
    e.add_argument("--status", choices=list(ExperimentStatus))
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

    p = sub.add_parser(
        "schema", help="the JSON Schema of the log's records, for verifiers in other languages"
    )
    p.set_defaults(func=cmd_schema)

    from node.cli.daemon import add_parsers as add_daemon_parsers

    add_daemon_parsers(sub)

    from node.cli.bench import add_parsers as add_bench_parsers
    from node.cli.db import add_parsers as add_db_parsers
    from node.cli.gov import add_parser as add_gov_parser
    from node.cli.gov_rpc import cmd_gov
    from node.cli.network import add_parser as add_network_parser
    from node.cli.network_audit import add_parser as add_network_audit_parser
    from node.cli.trust import add_parsers as add_trust_parsers

    add_trust_parsers(sub)
    add_gov_parser(sub).set_defaults(func=cmd_gov)  # `--rpc` needs no node home
    add_db_parsers(sub)
    add_bench_parsers(sub)
    add_network_parser(sub)
    add_network_audit_parser(sub)

    return parser


# The modules of the `train` extra (pyproject.toml): a light install has none of them.
TRAIN_EXTRA = ("torch", "numpy", "openai")
# The long-running commands: they log at the home's `[log] level`, the others warnings.
LONG_RUNNING = ("daemon", "serve")


def _configure_logging(args: argparse.Namespace) -> None:
    """Logging to stderr as `[log]` says for the daemon and serve; warnings elsewhere;
    debug detail with -v."""
    from node.logs import configure
    from node.settings import load_settings

    if args.command not in LONG_RUNNING:  # the home's settings are none of their business
        configure("DEBUG" if args.verbose else "WARNING")
        return
    log = load_settings(args.home).log
    configure("DEBUG" if args.verbose else log.level, log.format)


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("asi-node")
    except metadata.PackageNotFoundError:  # run from a checkout that is not installed
        return "unknown (not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _configure_logging(args)
        return int(args.func(args))
    except (AsiNodeError, TrustError, GovernanceError, LoopError) as exc:
        print(f"asi-node: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in TRAIN_EXTRA:
            raise
        print(
            f"asi-node: error: `{args.command}` runs the node, which needs its research stack "
            f"({exc.name} is not installed): pip install 'asi-node[train]' (the light install "
            "audits logs and prints the schema)",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("asi-node: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`asi-node schema | head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
