"""The node's own overhead per experiment: time outside training over total.

Runs a small real campaign (sandbox, training, export, evaluation) with one worker in a
temporary node home, then splits its wall time into
  training   - the training loop inside the sandbox (what the experiment is for),
  pipeline   - sandbox start-up, candidate load, screening, export, evaluation,
  node       - the node itself: proposing, scheduling, scoring, the store.
Prints the split per experiment and in total. Figures, not assertions. With
`--no-standby` every training sandbox starts when its experiment does (loop.standby off),
for a comparison with the default. With `--workers 2 --threads 1` (the node's default
split on 2 cores) experiments overlap, so the wall no longer splits: it prints each
experiment's share of its own wall outside training instead, and the workers' idle time.
Both print the sandboxes' CPU seconds outside their training loops as well, start-ups run
ahead of the wall included.

    .venv/bin/python scripts/bench_overhead.py [--preset quick|full] [--candidates N]
        [--steps N] [--workers N] [--threads N] [--no-standby]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from node.campaign.config import Budget, CampaignConfig
from node.runtime import open_node


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=["quick", "full"], default="full")
    parser.add_argument("--candidates", type=int, default=2)
    parser.add_argument("--steps", type=int, default=None, help="override the preset's steps")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="torch threads per worker")
    parser.add_argument(
        "--no-standby",
        dest="standby",
        action="store_false",
        help="start each training sandbox with its experiment, not while the last one exports",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        node = open_node(home, create=True)
        node.settings = node.settings.model_copy(
            update={
                "loop": node.settings.loop.model_copy(
                    update={
                        "workers": args.workers,
                        "threads_per_worker": args.threads,
                        "standby": args.standby,
                    }
                )
            }
        )
        config = CampaignConfig(
            preset=args.preset,
            train_steps=args.steps,
            baselines=("deltanet",),
            budget=Budget(max_candidates=args.candidates),
        )
        camp = node.store.create_campaign("overhead", config.model_dump(mode="json"))
        started = time.perf_counter()
        node.run_campaign(
            camp.id, on_event=lambda kind, data: print(kind, data.get("candidate", ""), flush=True)
        )
        wall = time.perf_counter() - started
        exps = sorted(node.store.list_experiments(camp.id), key=lambda e: e.seq)
        print(
            f"{'experiment':<20} {'status':<8} {'total s':>8} {'train s':>8} {'pipeline s':>10} "
            f"{'share':>6} {'evaluator s':>11}"
        )
        total = train = 0.0
        for exp in exps:
            t = exp.timings or {}
            tot, tr = t.get("total_s", 0.0), t.get("train_s", 0.0)
            total += tot
            train += tr
            # The evaluator's own time, from its first graph load to its metrics.
            inside = (exp.metrics or {}).get("eval_seconds", float("nan"))
            why = f"  {exp.failure_class}" if exp.failure_class else ""
            share = (tot - tr) / tot if tot else float("nan")
            print(
                f"{exp.id:<20} {exp.status:<8} {tot:8.1f} {tr:8.1f} {tot - tr:10.1f} "
                f"{share:6.1%} {inside:11.2f}{why}"
            )
        keys = sorted({k for e in exps for k in (e.timings or {})})
        print("\nmean seconds per experiment, by stage:")
        for key in keys:
            vals = [(e.timings or {}).get(key) for e in exps]
            got = [v for v in vals if v is not None]
            # How long before the hand-over the evaluator started: a lead, not a cost.
            note = "  (lead, not a cost)" if key.endswith("_started_ahead_s") else ""
            print(f"  {key:<28} {sum(got) / len(got):8.2f}  (n={len(got)}){note}")
        print(
            f"\nrun wall {wall:.1f} s over {len(exps)} experiments ({args.preset} preset, "
            f"{args.workers} worker(s) x {args.threads} thread(s), "
            f"standby {'on' if args.standby else 'off'})"
        )
        cpu, cpu_train = cpu_split([e.timings or {} for e in exps])
        if cpu > 0:
            print(
                f"sandboxes' CPU     {cpu:8.1f} s: training {cpu_train:.1f} s, outside it "
                f"{cpu - cpu_train:.1f} s ({(cpu - cpu_train) / cpu:.1%}; start-ups run ahead "
                "of the wall included)"
            )
        if args.workers > 1:
            slots = wall * args.workers
            print(f"training          {train:8.1f} s  {train / total:6.1%} of experiments' wall")
            print(f"outside training  {total - train:8.1f} s  {(total - train) / total:6.1%}")
            print(
                f"workers idle      {slots - total:8.1f} s  {(slots - total) / slots:6.1%} of "
                f"{args.workers} x the run's wall (the node, and the last runs ending unevenly)"
            )
            return
        node_s = wall - total
        print(f"training          {train:8.1f} s  {train / wall:6.1%}")
        print(f"pipeline overhead {total - train:8.1f} s  {(total - train) / wall:6.1%}")
        print(f"node overhead     {node_s:8.1f} s  {node_s / wall:6.1%}   (target < 2%)")
        print(f"outside training  {wall - train:8.1f} s  {(wall - train) / wall:6.1%}")


def cpu_split(timings: list[dict[str, float]]) -> tuple[float, float]:
    """(CPU seconds of the sandboxes, of their training loops) over the experiments that
    trained. Unlike the wall split it counts the standby's and the evaluator's start-ups,
    which run beside training (on a spare core, or taking a busy one from another worker)."""
    trained = [t for t in timings if "train_cpu_s" in t]
    total = sum(
        v
        for t in trained
        for k, v in t.items()
        if k.startswith("sandbox_") and k.endswith("_cpu_s")
    )
    return total, sum(t["train_cpu_s"] for t in trained)


if __name__ == "__main__":
    main()
