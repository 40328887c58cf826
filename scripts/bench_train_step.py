"""One training step of each baseline at the full MQAR recipe: this tree's CPU kernels
against a git revision's, interleaved in one process.

The reference kernels that CPU training runs (`kernels/linear_rnn/chunk.py`,
`kernels/conv1d/conv.py`) are read at `--against` with `git show` and loaded as modules;
each step then runs once with the revision's kernels and once with this tree's, on two
copies of the same model, alternating which goes first. Prints ms per step (forward,
backward, clip, AdamW on the recipe's batches), the ratio, and the largest difference of
the two models' losses over the steps (the kernels compute the same function, so it stays
at rounding level). Figures, not assertions.

    .venv/bin/python scripts/bench_train_step.py [--against REV] [--threads N] [--steps N]
        [--baselines deltanet,linear,...]
"""

from __future__ import annotations

import argparse
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


def compare(name: str, arms: dict[str, Kernels], config: TrainConfig, steps: int) -> None:
    spec = MQARSpec()
    models = {arm: Backbone(BASELINES[name], BackboneConfig(), seed=0) for arm in arms}
    optimizers = {arm: optimizer_for(model, config) for arm, model in models.items()}
    seconds = dict.fromkeys(arms, 0.0)
    losses: dict[str, list[float]] = {arm: [] for arm in arms}
    warm_up = 4
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
    before, now = (1000 * seconds[arm] / steps for arm in arms)
    drift = max(abs(a - b) for a, b in zip(*losses.values(), strict=True))
    print(f"{name:<16} {before:9.1f} {now:9.1f} {before / now:7.2f}x   {drift:.1e}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", default="HEAD", help="the git revision to compare with")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=40, help="timed steps per model")
    parser.add_argument("--baselines", default="deltanet,gated_deltanet,linear,retnet,softmax")
    args = parser.parse_args()
    names = args.baselines.split(",")
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        parser.error(f"unknown baselines {unknown}; known: {', '.join(BASELINES)}")
    torch.set_num_threads(args.threads)
    arms = {
        args.against: kernels_at(args.against),
        "this tree": (chunk_linear_rnn, causal_conv1d),
    }
    config = TrainConfig(threads=args.threads)
    print(f"ms per training step, full MQAR recipe, {args.threads} thread(s), {args.steps} steps")
    print(f"{'baseline':<16} {args.against[:9]:>9} {'this tree':>9} {'ratio':>8}   loss drift")
    for name in names:
        compare(name, arms, config, args.steps)


if __name__ == "__main__":
    main()
