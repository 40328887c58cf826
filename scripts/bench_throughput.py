"""CPU screening throughput: full-recipe candidates per hour, without and with rungs.

Trains a campaign's baselines once, has the offline Researcher propose N candidates from
them, then screens the same N candidates twice in this process, each time in a fork of the
baselines-only campaign (so both arms hold the same baseline runs):
  today  - every candidate trains to its last step (the step-1,000 hopeless check only),
  rungs  - the same config with the default `[rungs]` (node.campaign.rungs: stop at a rung
           the runs whose loss is behind the better share of the campaign's runs there).
The two arms run side by side, one worker of one thread each (2 cores in all), so both
see the same machine at every moment; once the faster arm ends, the other has the machine
to itself, which favours today's. Prints each arm's candidates per hour of its wall time
and per CPU-hour of its sandboxes, the ratios, where rungs stopped which candidates, and
whether the candidates that ranked best when all trained to the end also finished with
rungs (what the speed cost). Figures, not assertions. `--today-only` runs the first arm
alone, on the node's workers: with `--curves`, the curves `scripts/study_rungs.py`
replays rung settings over.

`--against REV` measures this tree against an earlier revision's code instead: REV's own
copy of this script runs `--today-only` from a git worktree (its kernels, its sandboxes)
in a second process, while this one runs the rungs arm with this tree's code; each trains
its own baselines first, on one worker of one thread, side by side on the 2 cores. Prints
both arms' candidates per hour, their ratio, and the candidates each arm trained.
Ctrl-C (or SIGTERM) stops the running experiments and exits without a report; REV's
process and its worktree are removed.

    .venv/bin/python scripts/bench_throughput.py [--candidates N] [--preset full|quick]
        [--steps N] [--top K] [--curves FILE] [--today-only | --against REV] [--skip N]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from loop.archive import sample_parents, sample_references
from loop.proposal import Proposal
from loop.researcher import OfflineResearcher
from node.campaign.config import Budget, CampaignConfig, Rungs
from node.campaign.leaderboard import build
from node.campaign.scheduler import CampaignRunner
from node.cli.daemon import stop_on_signals
from node.runtime import Node, open_node
from node.store.governance import DirectiveLedger

BASELINES = ("deltanet", "linear", "softmax")
ROOT = Path(__file__).resolve().parents[1]
ONE_BY_ONE = {"ASI_NODE_LOOP__WORKERS": "1", "ASI_NODE_LOOP__THREADS_PER_WORKER": "1"}


def proposals(node: Node, base_id: str, config: CampaignConfig, n: int) -> list[Proposal]:
    """N distinct offline proposals bred from the base campaign's scored baselines."""
    runner = CampaignRunner(
        node.store, node.store.get_campaign(base_id), node.engineer(), 1, 1, b"x" * 32
    )
    runner._finalize_scores()
    archive = runner.archive()
    researcher = OfflineResearcher(config.researcher_seed)
    out: list[Proposal] = []
    known: set[str] = set()
    step = 0
    while len(out) < n:
        rng = random.Random(f"bench-throughput:{step}")
        parents = sample_parents(archive, rng, k=2)
        refs = sample_references(archive, rng, exclude=parents)
        proposal = researcher.propose(parents, refs, step=step, known_digests=known)
        known.add(proposal.digest)
        out.append(proposal)
        step += 1
    return out


def queue_arm(
    node: Node, base_id: str, name: str, config: CampaignConfig, cands: list[Proposal]
) -> str:
    """Fork the base campaign with `config` and queue `cands` in it; the arm's id."""
    arm = DirectiveLedger(node.store).fork(base_id, name, config.model_dump(mode="json"))
    for proposal in cands:
        cand = node.store.add_candidate(arm.id, proposal)
        node.store.enqueue_experiment(arm.id, cand.id, "candidate", config.seed)
    return arm.id


def run_arms(node: Node, arms: dict[str, str], stop: threading.Event) -> dict[str, float]:
    """Run the arms at once, a thread each, until they end or `stop` is set; each one's
    wall time."""
    walls: dict[str, float] = {}

    def run(name: str, arm_id: str) -> None:
        def show(kind: str, data: dict[str, object]) -> None:
            if kind in ("started", "finished"):
                print(f"  [{name}] {kind} {data.get('candidate', '')}", flush=True)

        started = time.perf_counter()
        node.run_campaign(arm_id, on_event=show, stop=stop)
        walls[name] = time.perf_counter() - started

    threads = [threading.Thread(target=run, args=item) for item in arms.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return walls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--preset", choices=["quick", "full"], default="full")
    parser.add_argument("--steps", type=int, default=None, help="override the preset's steps")
    parser.add_argument("--top", type=int, default=3, help="the best K that should survive")
    parser.add_argument(
        "--curves", type=Path, help="write every run's loss curve and fitness here (JSON)"
    )
    parser.add_argument(
        "--skip",
        type=int,
        default=0,
        help="leave out the first N proposals: a new sample after an earlier run's",
    )
    arm = parser.add_mutually_exclusive_group()
    arm.add_argument(
        "--today-only",
        action="store_true",
        help="run only the arm without rungs, on the node's workers: curves for study_rungs",
    )
    arm.add_argument("--against", metavar="REV", help="today's arm on this git revision's code")
    args = parser.parse_args()
    with stop_on_signals() as stop:
        if args.against is not None:
            against(args, stop)
        else:
            run(args, stop)


def exit_if(stop: threading.Event) -> None:
    if stop.is_set():
        sys.exit("bench_throughput: stopped; no report")


def run(
    args: argparse.Namespace, stop: threading.Event, rungs_only: bool = False
) -> dict[str, float]:
    """The benchmark in this process: both arms, the today arm only, or (`rungs_only`, on
    one worker of one thread) the rungs arm only; each arm's candidates per wall hour."""
    with tempfile.TemporaryDirectory() as tmp:
        node = open_node(Path(tmp) / "home", create=True)
        # Throughput, not limits: a machine shared with other work must not time runs out.
        roomy = node.settings.sandbox.model_copy(update={"wall_seconds": 4 * 3600.0})
        node.settings = node.settings.model_copy(update={"sandbox": roomy})
        if rungs_only:  # beside REV's process, as it runs
            one_by_one(node)
        loop = node.settings.loop
        arm_workers = "the same" if args.today_only or rungs_only else "1 x 1 each"
        print(
            f"baselines on {loop.workers} x {loop.threads_per_worker} thread(s), "
            f"arms on {arm_workers}"
        )
        today = CampaignConfig(
            preset=args.preset,
            train_steps=args.steps,
            baselines=BASELINES,
            budget=Budget(max_candidates=args.candidates, max_rerun_candidates=0),
        )
        base = node.store.create_campaign(
            "baselines",
            today.model_copy(update={"budget": Budget(max_candidates=0)}).model_dump(mode="json"),
        )
        began = time.perf_counter()
        node.run_campaign(base.id, stop=stop)
        exit_if(stop)
        print(f"baselines {', '.join(BASELINES)}: {time.perf_counter() - began:.0f} s")
        cands = proposals(node, base.id, today, args.skip + args.candidates)[args.skip :]

        arms = {} if rungs_only else {"today": queue_arm(node, base.id, "today", today, cands)}
        if not args.today_only:
            with_rungs = today.model_copy(update={"rungs": Rungs()})
            arms["rungs"] = queue_arm(node, base.id, "rungs", with_rungs, cands)
            print("candidates: " + ", ".join(p.name for p in cands), flush=True)
            one_by_one(node)
        walls = run_arms(node, arms, stop)
        exit_if(stop)
        per_hour = report(node, walls, args.top)
        if args.curves is not None:
            write_curves(node, args.curves)
        return per_hour


def one_by_one(node: Node) -> None:
    """The node's experiments from now on: one at a time, on one thread."""
    one = node.settings.loop.model_copy(update={"workers": 1, "threads_per_worker": 1})
    node.settings = node.settings.model_copy(update={"loop": one})


def against(args: argparse.Namespace, stop: threading.Event) -> None:
    """REV's --today-only in a worktree and a second process, this tree's rungs arm here."""
    shared = [
        "--candidates",
        str(args.candidates),
        "--preset",
        args.preset,
        "--skip",
        str(args.skip),
    ]
    if args.steps is not None:
        shared += ["--steps", str(args.steps)]
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "rev"
        git = ["git", "-C", str(ROOT), "worktree"]
        added = subprocess.run(
            [*git, "add", "--detach", str(tree), args.against], capture_output=True, text=True
        )
        if added.returncode != 0:
            sys.exit(f"cannot check out {args.against}: {added.stderr.strip()}")
        curves, log = Path(tmp) / "rev-curves.json", Path(tmp) / "rev.log"
        env = {**os.environ, **ONE_BY_ONE, "PYTHONPATH": str(tree)}
        script = [sys.executable, str(tree / "scripts" / "bench_throughput.py")]
        with log.open("w") as sink:
            rev = subprocess.Popen(
                [*script, "--today-only", "--curves", str(curves), *shared],
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its sandboxes in its process group, to stop together
            )
        try:
            ours = run(args, stop, rungs_only=True)["rungs"]
            while rev.poll() is None and not stop.wait(1.0):
                pass
            exit_if(stop)
        finally:  # this arm failed or was interrupted: REV's must not outlive its worktree
            if rev.poll() is None:
                os.killpg(rev.pid, signal.SIGKILL)  # unshare --kill-child takes each jail
                rev.wait()
            subprocess.run([*git, "remove", "--force", str(tree)], capture_output=True)
        output = log.read_text()
        print(f"\n{args.against} (--today-only, its own process):")
        print("".join(f"  {line}\n" for line in output.splitlines()))
        theirs = reported_rate(args.against, output, curves)
        if theirs is not None:
            print(f"this tree with rungs / {args.against}: {ours / theirs:.2f}x per wall hour")


def reported_rate(rev: str, output: str, curves: Path) -> float | None:
    """REV's candidates per wall hour, read from its report's today row, and the names of
    the candidates it trained (from its curves), to set beside this arm's."""
    row = re.search(r"^today\s+\d+\s+\d+\s+\d+\s+[\d.]+\s+([\d.]+)", output, re.M)
    if row is None or not curves.is_file():
        print(f"{rev}'s run printed no report: no ratio")
        return None
    runs = json.loads(curves.read_text())["today"]
    names = [r["candidate"] for r in runs if r["role"] == "candidate"]
    print(f"{rev} trained: {', '.join(names)}")
    return float(row[1])


def write_curves(node: Node, path: Path) -> None:
    """Each campaign's runs as (candidate, role, seed, status, fitness, loss curve): what a
    study of rung settings replays without training again."""
    out = {}
    for camp in node.store.list_campaigns():
        names = {c.id: c.name for c in node.store.list_candidates(camp.id)}
        out[camp.name] = [
            {
                "candidate": names.get(e.candidate_id, e.candidate_id),
                "role": e.role,
                "seed": e.seed,
                "status": e.status,
                "failure": e.failure_class,
                "fitness": e.fitness,
                "loss_curve": (e.train or {}).get("loss_curve"),
            }
            for e in node.store.list_experiments(camp.id)
        ]
    path.write_text(json.dumps(out, indent=1))
    print(f"curves of {sum(len(v) for v in out.values())} runs written to {path}")


def report(node: Node, walls: dict[str, float], top: int) -> dict[str, float]:
    """Prints each arm's row (and, with both arms, what rungs cost); candidates per wall
    hour by arm."""
    ranked: dict[str, list[str]] = {}
    cpu: dict[str, float] = {}
    per_hour: dict[str, float] = {}
    head = ("candidates", "finished", "outpaced", "wall s", "per hour", "CPU s", "per CPU-h")
    print(f"\n{'arm':<6} " + " ".join(f"{h:>10}" for h in head))
    for arm in node.store.list_campaigns():
        if arm.name not in walls:
            continue
        cands = {c.id: c for c in node.store.list_candidates(arm.id)}
        exps = [e for e in node.store.list_experiments(arm.id) if e.role == "candidate"]
        rows = build(list(cands.values()), node.store.list_experiments(arm.id))
        ranked[arm.name] = [
            cands[r.candidate_id].digest
            for r in rows
            if r.fitness is not None and cands[r.candidate_id].origin != "baseline"
        ]
        finished = sum(e.status == "done" for e in exps)
        outpaced = [e for e in exps if e.failure_class == "outpaced"]
        wall = walls[arm.name]
        per_hour[arm.name] = len(exps) / wall * 3600
        cpu[arm.name] = sum(
            v for e in exps for k, v in (e.timings or {}).items() if k.endswith("_cpu_s")
        )
        print(
            f"{arm.name:<6} {len(exps):>10} {finished:>10} {len(outpaced):>10} {wall:10.0f} "
            f"{per_hour[arm.name]:10.1f} {cpu[arm.name]:10.0f} "
            f"{len(exps) / max(cpu[arm.name], 1e-9) * 3600:10.1f}"
        )
        for e in outpaced:
            print(f"         outpaced: {cands[e.candidate_id].name}: {e.analysis}")
        for e in exps:
            if e.status == "failed" and e.failure_class != "outpaced":
                print(f"         failed ({e.failure_class}): {cands[e.candidate_id].name}")
    if "today" not in walls or "rungs" not in walls:
        return per_hour
    print(
        f"\nthroughput rungs / today: {walls['today'] / walls['rungs']:.2f}x per wall hour, "
        f"{cpu['today'] / max(cpu['rungs'], 1e-9):.2f}x per CPU-hour"
    )
    best = ranked["today"][:top]
    kept = [d for d in best if d in ranked["rungs"]]
    print(
        f"today's best {len(best)} generated candidates by fitness: {len(kept)} of them "
        "finished with rungs"
    )
    return per_hour


if __name__ == "__main__":
    main()
