"""One training step of each baseline (or grammar candidate) at the full MQAR recipe: this
tree's CPU kernels against a git revision's, interleaved in one process.

The reference kernels that CPU training runs (`kernels/linear_rnn/chunk.py`,
`kernels/conv1d/conv.py`) are read at `--against` with `git show` and loaded as modules;
each step then runs once with the revision's kernels and once with this tree's, on two
copies of the same model, alternating which goes first. Prints ms per step (forward,
backward, clip, AdamW on the recipe's batches), the ratio, and the largest difference of
the two models' losses over the steps (the kernels compute the same function, so it stays
at rounding level; a chaotic model can amplify it). `--candidates` times the offline
Researcher's grammar candidates by name, or every candidate of a `bench_throughput.py
--curves` file (such as tests/node/data/mqar_full_curves.json), and prints the ratio of
their summed step times: what the kernels change in candidates per hour, each candidate
training the same number of steps. Figures, not assertions.

    .venv/bin/python scripts/bench_train_step.py [--against REV] [--threads N] [--steps N]
        [--baselines deltanet,linear,...] [--candidates NAME,NAME,...|CURVES.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a file from a checkout that is not pip-installed
    sys.path.insert(0, str(ROOT))

import kernels.dispatch as dispatch  # noqa: E402
from kernels.baselines import BASELINES  # noqa: E402
from kernels.conv1d.conv import causal_conv1d  # noqa: E402
from kernels.linear_rnn.chunk import chunk_linear_rnn  # noqa: E402
from loop.model import Backbone, BackboneConfig  # noqa: E402
from loop.tasks.mqar import MQARSpec  # noqa: E402
from loop.train import TrainConfig, masked_loss, optimizer_for  # noqa: E402
from scripts.study_hopeless import genomes_named, mixer_of  # noqa: E402

Kernels = tuple[Callable[..., Any], Callable[..., Any]]  # (chunk_linear_rnn, causal_conv1d)


def kernels_at(rev: str) -> Kernels:
    """The reference linear RNN and short conv as they were at git revision `rev`."""
    loaded = []
    for path, name in (
        ("kernels/linear_rnn/chunk.py", "chunk_linear_rnn"),
        ("kernels/conv1d/conv.py", "causal_conv1d"),
    ):
        source = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{rev}:{path}"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        module = types.ModuleType(f"at_{rev}_{Path(path).stem}")
        exec(compile(source, f"{rev}:{path}", "exec"), module.__dict__)
        loaded.append(getattr(module, name))
    return loaded[0], loaded[1]


def compare(
    name: str, mixer: Any, arms: dict[str, Kernels], config: TrainConfig, steps: int
) -> tuple[float, float]:
    """Times the steps of a backbone around `mixer` in each arm and prints its row, named
    `name`; (the revision's ms, this tree's ms) per step."""
    spec = MQARSpec()
    models = {arm: Backbone(mixer, BackboneConfig(), seed=0) for arm in arms}
    optimizers = {arm: optimizer_for(model, config) for arm, model in models.items()}
    seconds = dict.fromkeys(arms, 0.0)
    losses: dict[str, list[float]] = {arm: [] for arm in arms}
    warm_up = 4
    installed = {k: vars(dispatch)[k] for k in ("reference_linear_rnn", "reference_conv1d")}
    try:
        for step in range(warm_up + steps):
            batch = spec.train_batch(step, config.seed)
            order = list(arms) if step % 2 else list(reversed(arms))
            for arm in order:
                rnn, conv = arms[arm]  # what kernels.dispatch calls on the CPU
                dispatch.__dict__.update(reference_linear_rnn=rnn, reference_conv1d=conv)
                model, optimizer = models[arm], optimizers[arm]
                began = time.perf_counter()
                loss, _, _ = masked_loss(model, batch)
                losses[arm].append(loss.item())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[no-untyped-call]
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
                optimizer.step()
                if step >= warm_up:
                    seconds[arm] += time.perf_counter() - began
    finally:  # the process's later callers get the kernels it had, not the last arm's
        dispatch.__dict__.update(installed)
    before, now = (1000 * seconds[arm] / steps for arm in arms)
    drift = max(abs(a - b) for a, b in zip(*losses.values(), strict=True))
    print(f"{name:<44} {before:9.1f} {now:9.1f} {before / now:7.2f}x   {drift:.1e}", flush=True)
    return before, now


def candidate_names(arg: str) -> list[str]:
    """Grammar names from `a,b,...`, or the candidates of a bench_throughput curves file."""
    path = Path(arg)
    if not path.is_file():
        return arg.split(",")
    try:
        runs = json.loads(path.read_text())["today"]
        return [run["candidate"] for run in runs if run["role"] == "candidate"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not a bench_throughput --curves file ({exc})") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", default="HEAD", help="the git revision to compare with")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=40, help="timed steps per model")
    parser.add_argument("--baselines", default="deltanet,gated_deltanet,linear,retnet,softmax")
    parser.add_argument(
        "--candidates", help="grammar candidates (a,b,...) or a curves file; instead of baselines"
    )
    args = parser.parse_args()
    mixers: dict[str, Any] = {}
    if args.candidates:
        try:
            mixers = {g.name: mixer_of(g) for g in genomes_named(candidate_names(args.candidates))}
        except ValueError as exc:
            parser.error(str(exc))
    else:
        unknown = [n for n in args.baselines.split(",") if n not in BASELINES]
        if unknown:
            parser.error(f"unknown baselines {unknown}; known: {', '.join(BASELINES)}")
        mixers = {name: BASELINES[name] for name in args.baselines.split(",")}
    torch.set_num_threads(args.threads)
    arms = {
        args.against: kernels_at(args.against),
        "this tree": (chunk_linear_rnn, causal_conv1d),
    }
    config = TrainConfig(threads=args.threads)
    print(f"ms per training step, full MQAR recipe, {args.threads} thread(s), {args.steps} steps")
    print(f"{'model':<44} {args.against[:9]:>9} {'this tree':>9} {'ratio':>8}   loss drift")
    times = [compare(name, mixer, arms, config, args.steps) for name, mixer in mixers.items()]
    if len(times) > 1:
        before, now = (sum(column) for column in zip(*times, strict=True))
        print(f"{'all ' + str(len(times)) + ', training time':<44} {before:9.1f} {now:9.1f} "
              f"{before / now:7.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
