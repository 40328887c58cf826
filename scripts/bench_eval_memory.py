"""The trusted evaluator's peak memory at the exploration shape, against the old all-logits path.

The exploration preset's model (about 20 M parameters: vocabulary 32,000, 8 blocks of
width 320 with a SwiGLU MLP, DeltaNet), untrained, exported at context 2,048 with a few
rows per forward graph, scored on a random-token shard on the CPU. Each measurement runs
in a fresh process and reads its peak resident set (getrusage ru_maxrss):

  new   loop.evaluate.evaluate as it is: the graphs return hidden states (rows, T, D) and
        the head is applied 1,024 positions at a time; causality and step-vs-forward
        checks included;
  old   the same graphs, with the head applied to whole rows at once as the evaluator did
        before: rows x T x V logits, a masked copy, the loss, then the causality probe's
        second forward and its difference (no step replay; it adds nothing to the peak).

`base` is the process after importing torch, before loading anything. The parent never
imports torch (a child's ru_maxrss starts at its parent's resident set at fork, carried
across exec), so preparing the artifact runs in a child of its own too. Prints the
figures and the ratio, and what the old path's logits alone come to at its 100 rows.

    .venv/bin/python scripts/bench_eval_memory.py [--rows 4] [--threads 1] [--new-only]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runs from a plain checkout, where asi-node is not installed

VOCAB, CONTEXT = 32_000, 2048
OLD_EVAL_BATCH = 100  # rows per forward call of the old evaluator
LIMIT_BYTES = 4 * 2**30


def _peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _spec(shard: Path, rows: int) -> object:
    from loop.tasks import LMSpec

    return LMSpec(
        vocab_size=VOCAB, data_path=str(shard), seq_len=CONTEXT, batch_size=1, heldout_windows=rows
    )


def prepare(work: Path, rows: int) -> None:
    """A random-token shard and the exported exploration model, written under `work`."""
    import numpy as np

    from kernels.baselines import DeltaNet
    from loop.export import export_model
    from loop.model import Backbone
    from loop.train_device import exploration_preset

    shard = work / "shard.npy"
    rng = np.random.default_rng(0)
    np.save(shard, rng.integers(0, VOCAB, size=(rows + 2) * (CONTEXT + 1), dtype=np.uint16))
    preset = exploration_preset(str(shard))
    model = Backbone(DeltaNet, preset.model, seed=0)
    spec = _spec(shard, rows)
    export_model(model, spec, work / "artifact", eval_batch=rows)  # type: ignore[arg-type]


def measure(mode: str, work: Path, rows: int, threads: int) -> dict[str, float]:
    """Child mode: one path, one process; returns its figures."""
    import torch
    import torch.nn.functional as F

    from loop import evaluate as ev
    from loop.tasks import IGNORE_INDEX

    torch.set_num_threads(threads)
    spec = _spec(work / "shard.npy", rows)
    artifact = work / "artifact"
    base = _peak_bytes()
    started = time.perf_counter()
    if mode == "new":
        metrics = ev.evaluate(artifact, spec, heldout_seed=1)  # type: ignore[arg-type]
        loss = metrics.mean_loss
        failure = str(metrics.failure)
    else:
        programs = ev._load_artifact(artifact, spec, torch.device("cpu"))  # type: ignore[arg-type]
        run = ev._ForwardRunner(programs)
        (test_set,) = spec.test_sets(1)  # type: ignore[attr-defined]
        with torch.no_grad():
            logits = F.linear(run(test_set.batch.tokens), programs.head)  # rows x T x V
            mask = test_set.batch.targets != IGNORE_INDEX
            picked, targets = logits[mask].float(), test_set.batch.targets[mask]
            loss = float(F.cross_entropy(picked, targets))
            del picked
            noise = torch.randint(0, VOCAB, test_set.batch.tokens.shape)
            future = torch.arange(CONTEXT).unsqueeze(0) > CONTEXT // 2
            moved = F.linear(run(torch.where(future, noise, test_set.batch.tokens)), programs.head)
            float((moved - logits).abs().amax())
        failure = "None"
    return {
        "peak_bytes": _peak_bytes(),
        "base_bytes": base,
        "seconds": time.perf_counter() - started,
        "loss": loss,
        "failure_is_none": float(failure == "None"),
    }


def _child(mode: str, work: Path, rows: int, threads: int) -> dict[str, float]:
    """Run one mode in a fresh process; its JSON figures."""
    command = [sys.executable, __file__, "--child", mode, "--work", str(work)]
    command += ["--rows", str(rows), "--threads", str(threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"{mode} path failed:\n{done.stderr[-3000:]}")
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4, help="rows per forward graph call")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--new-only",
        action="store_true",
        help="skip the old path (at 12 rows, the evaluator's "
        "own rows per call at context 2,048, its logits alone are 3 GiB)",
    )
    parser.add_argument("--child", choices=["prepare", "new", "old"], help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "prepare":
        prepare(args.work, args.rows)
        print(json.dumps({}))
        return 0
    if args.child:
        print(json.dumps(measure(args.child, args.work, args.rows, args.threads)))
        return 0

    gib = 2**30
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        _child("prepare", work, args.rows, args.threads)
        print(f"exported the exploration model in {time.perf_counter() - started:.1f} s")
        new = _child("new", work, args.rows, args.threads)
        old = None if args.new_only else _child("old", work, args.rows, args.threads)
    logits = args.rows * CONTEXT * VOCAB * 4
    print(f"shape: {args.rows} rows x {CONTEXT} tokens, vocabulary {VOCAB:,} (CPU, fp32)")
    paths = [("new (hidden states, head in slices)", new)]
    paths += [] if old is None else [("old (all logits)", old)]
    for name, fig in paths:
        print(
            f"{name:<38} peak RSS {fig['peak_bytes'] / gib:6.2f} GiB "
            f"(after importing torch {fig['base_bytes'] / gib:.2f} GiB), "
            f"{fig['seconds']:.1f} s, loss {fig['loss']:.3f}"
        )
    if old is not None:
        grown_new = new["peak_bytes"] - new["base_bytes"]
        grown_old = old["peak_bytes"] - old["base_bytes"]
        print(
            f"peak ratio old/new {old['peak_bytes'] / new['peak_bytes']:.2f}; growth over the "
            f"import old/new {grown_old / max(grown_new, 1):.1f} "
            f"({grown_old / gib:.2f} vs {grown_new / gib:.2f} GiB)"
        )
    print(
        f"one logits tensor here: {logits / gib:.2f} GiB; at the old {OLD_EVAL_BATCH} rows per "
        f"call: {OLD_EVAL_BATCH * CONTEXT * VOCAB * 4 / 1e9:.1f} GB"
    )
    ok = new["peak_bytes"] < LIMIT_BYTES and new["failure_is_none"] == 1.0
    print(f"new path under {LIMIT_BYTES / gib:.0f} GiB with every check passed: {ok}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
