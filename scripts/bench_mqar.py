"""Train the baseline mixers on MQAR with the screening recipe and check the known ordering.

Path exercised: candidate code is loaded and trained directly in a worker process (NOT
inside the sandbox), exported with loop.export, then scored by the trusted evaluator as
its own process (`python -m loop.evaluate`), on a held-out seed the training never saw.

Expected (DESIGN section 3): softmax attention >= 0.9 mean accuracy, an empty mixer at
chance (<= 0.05), DeltaNet above elu linear attention. Printed as PASS/FAIL lines; the
exit code is 0 either way, since this is a measurement, not a test.

    .venv/bin/python scripts/bench_mqar.py --baselines softmax,deltanet,linear,empty --jobs 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
import types
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a file from a checkout that is not pip-installed
    sys.path.insert(0, str(ROOT))

from loop.train import QUICK_STEPS, TrainConfig  # noqa: E402

EMPTY_CODE = '''
import torch
from torch import nn


class Mixer(nn.Module):
    """Outputs zeros: the floor every real mixer has to clear."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()

    def forward(self, x):
        return torch.zeros_like(x)

    def init_state(self, batch):
        return ()

    def step(self, x_t, state):
        return torch.zeros_like(x_t), state
'''

BASELINE_CLASSES = {
    "softmax": "SoftmaxAttention",
    "linear": "LinearAttention",
    "retnet": "RetNet",
    "mamba2": "Mamba2Like",
    "deltanet": "DeltaNet",
    "gated_deltanet": "GatedDeltaNet",
}


def candidate_code(name: str) -> str:
    """Every candidate is code that defines `Mixer`; baselines simply re-export a class."""
    if name == "empty":
        return EMPTY_CODE
    return f"from kernels.baselines import {BASELINE_CLASSES[name]} as Mixer\n"


@dataclass(frozen=True)
class Job:
    name: str
    steps: int
    threads: int
    seed: int
    heldout_seed: int
    quick: bool
    workdir: str


def run_candidate(job: Job) -> dict[str, object]:
    """Train, export and evaluate one candidate; runs in a worker process."""
    from loop.export import export_model
    from loop.model import Backbone
    from loop.train import Preset, train

    module = types.ModuleType(f"candidate_{job.name}")
    exec(compile(candidate_code(job.name), f"<candidate {job.name}>", "exec"), module.__dict__)
    preset = (Preset.quick if job.quick else Preset.screening)(threads=job.threads, seed=job.seed)
    spec = preset.spec
    model = Backbone(module.Mixer, preset.model, seed=job.seed)
    log = train(model, spec, preset.train.with_steps(job.steps))
    artifact = Path(job.workdir) / job.name
    exported = export_model(model, spec, artifact)

    job_file = Path(job.workdir) / f"{job.name}.job.json"
    out_file = Path(job.workdir) / f"{job.name}.out.json"
    job_file.write_text(
        json.dumps(
            {
                "artifact_dir": str(artifact),
                "spec": dataclasses.asdict(spec),
                "heldout_seed": job.heldout_seed,
                "threads": job.threads,
            }
        )
    )
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "loop.evaluate", str(job_file), str(out_file)], cwd=ROOT, check=True
    )
    eval_seconds = time.perf_counter() - start
    output = json.loads(out_file.read_text())
    return {
        "name": job.name,
        "steps": log.steps_done,
        "stop": log.stop_reason,
        "final_loss": log.final_loss,
        "train_s": log.wall_seconds,
        "export_s": exported.seconds,
        "eval_s": eval_seconds,
        "output": output,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baselines", default="softmax,deltanet,linear,empty")
    parser.add_argument("--steps", type=int, default=None, help="default: the preset's")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per job")
    parser.add_argument("--jobs", type=int, default=2, help="candidates trained in parallel")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--heldout-seed", type=int, default=20_251_127)
    parser.add_argument("--quick", action="store_true", help="the demo preset")
    args = parser.parse_args()

    names = [n for n in args.baselines.split(",") if n]
    unknown = [n for n in names if n != "empty" and n not in BASELINE_CLASSES]
    if unknown:
        parser.error(f"unknown baselines {unknown}; known: {sorted(BASELINE_CLASSES)} and 'empty'")
    steps = args.steps or (QUICK_STEPS if args.quick else TrainConfig().steps)
    print(
        f"MQAR bench: {len(names)} candidates, {steps} steps, {args.jobs} jobs x {args.threads} "
        f"threads, path: in-process training (no sandbox) -> export -> evaluator process"
    )
    started = time.perf_counter()
    results: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_mqar_") as workdir:
        jobs = [
            Job(n, steps, args.threads, args.seed, args.heldout_seed, args.quick, workdir)
            for n in names
        ]
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
            for result in pool.map(run_candidate, jobs):
                results[str(result["name"])] = result
                _print_result(result)
    print(f"total wall {time.perf_counter() - started:.0f} s")
    _print_checks(results)
    return 0


def _mean(results: dict[str, dict[str, object]], name: str) -> float | None:
    result = results.get(name)
    if result is None:
        return None
    output = result["output"]
    assert isinstance(output, dict)
    metrics = output.get("metrics")
    return None if metrics is None else float(metrics["mean_accuracy"])


def _print_result(result: dict[str, object]) -> None:
    output = result["output"]
    assert isinstance(output, dict)
    metrics = output.get("metrics")
    timing = (
        f"train {result['train_s']:.1f}s export {result['export_s']:.1f}s "
        f"eval {result['eval_s']:.1f}s"
    )
    if metrics is None:
        print(f"{result['name']:15s} ERROR {output.get('error')} ({timing})")
        return
    per_set = " ".join(f"{s['name']}={s['accuracy']:.3f}" for s in metrics["sets"])
    stop = f" stopped: {result['stop']}" if result["stop"] else ""
    failure = f" FAILURE {metrics['failure']}" if metrics["failure"] else ""
    print(
        f"{result['name']:15s} mean {metrics['mean_accuracy']:.3f} [{per_set}] "
        f"loss {result['final_loss']:.2f} steps {result['steps']}{stop}{failure} "
        f"state {metrics['state_size']} params {metrics['n_params']} ({timing})"
    )


def _print_checks(results: dict[str, dict[str, object]]) -> None:
    softmax, empty = _mean(results, "softmax"), _mean(results, "empty")
    deltanet, linear = _mean(results, "deltanet"), _mean(results, "linear")
    checks = [
        ("softmax mean accuracy >= 0.9", None if softmax is None else softmax >= 0.9),
        ("empty mixer mean accuracy <= 0.05", None if empty is None else empty <= 0.05),
        (
            "deltanet beats elu linear attention",
            None if deltanet is None or linear is None else deltanet > linear,
        ),
    ]
    for label, passed in checks:
        verdict = "SKIP" if passed is None else "PASS" if passed else "FAIL"
        print(f"{verdict} {label}")


if __name__ == "__main__":
    sys.exit(main())
