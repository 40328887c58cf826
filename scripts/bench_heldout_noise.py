"""How noisy is a held-out score? One trained model scored on two disjoint halves of its
campaign's held-out set, the difference set beside the promotion margin.

A tiny LM campaign as the node builds it (node.campaign.tasks: the full LM preset on a
byte shard of the generated corpus, a split keyed by a fresh secret and a campaign id),
one DeltaNet model trained on it, exported, and scored by the evaluator's own code on
the held-out windows split in two (alternate windows). Also prints the standard error of
the whole set's loss from the spread of per-window losses, and what it would be for the
exploration preset's 2,048 windows at the same spread. Every candidate of a campaign is
now scored on the same windows, so this noise no longer separates two candidates; it is
what separated them when each experiment drew its own held-out windows.

    .venv/bin/python scripts/bench_heldout_noise.py [--steps 300] [--heldout-tokens 25600]
"""

from __future__ import annotations

import argparse
import math
import secrets
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runs from a plain checkout, where asi-node is not installed

import torch  # noqa: E402

from kernels.baselines import DeltaNet  # noqa: E402
from loop import evaluate as ev  # noqa: E402
from loop.export import export_model  # noqa: E402
from loop.model import Backbone  # noqa: E402
from loop.tasks import LMSpec  # noqa: E402
from loop.tasks.shards import generated_shard  # noqa: E402
from loop.train import train  # noqa: E402
from loop.train_device import EXPLORATION_CONTEXT, EXPLORATION_HELDOUT_TOKENS  # noqa: E402
from node.campaign.config import CampaignConfig  # noqa: E402
from node.campaign.tasks import build_backbone, build_task, build_train, split_key  # noqa: E402


def per_window(artifact: Path, spec: LMSpec) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(summed loss, correct, targets) of every held-out window, through the evaluator's
    loading, forward runner and sliced head."""
    programs = ev._load_artifact(artifact, spec, torch.device("cpu"))
    run = ev._ForwardRunner(programs)
    (test_set,) = spec.test_sets(0)
    nll, correct, count = [], [], []
    with torch.no_grad():
        for start in range(0, test_set.batch.tokens.shape[0], programs.eval_batch):
            rows = test_set.batch.rows(start, start + programs.eval_batch)
            scores = ev.score_rows(run(rows.tokens), rows.targets, programs.head)
            nll.append(scores.nll)
            correct.append(scores.correct)
            count.append(scores.targets)
    return torch.cat(nll), torch.cat(correct), torch.cat(count)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--heldout-tokens", type=int, default=None, help="default: the preset's")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        shard = Path(tmp) / "data" / "corpus.npy"
        generated_shard(shard, n_tokens=262_144)
        config = CampaignConfig(
            task="lm",
            preset="full",
            data_path=str(shard),
            train_steps=args.steps,
            heldout_tokens=args.heldout_tokens,
            baselines=("deltanet",),
        )
        spec = build_task(config, split_key(secrets.token_bytes(32), "c-noise"))
        assert isinstance(spec, LMSpec)
        recipe = build_train(config, args.threads, args.seed)
        model = Backbone(DeltaNet, build_backbone(config), seed=args.seed)
        started = time.perf_counter()
        log = train(model, spec, recipe)
        trained_s = time.perf_counter() - started
        export_model(model, spec, Path(tmp) / "artifact")
        nll, correct, count = per_window(Path(tmp) / "artifact", spec)

    n = len(nll)
    halves = {"A (even windows)": slice(0, n, 2), "B (odd windows)": slice(1, n, 2)}
    figures = {
        name: (
            float(nll[part].sum() / count[part].sum()),
            float(correct[part].sum() / count[part].sum()),
        )
        for name, part in halves.items()
    }
    (loss_a, acc_a), (loss_b, acc_b) = figures.values()
    window_loss = (nll / count).double()
    spread = float(window_loss.std())
    margin = config.promote_margin
    print(
        f"DeltaNet, {log.steps_done} steps ({log.tokens_seen:,} tokens, {trained_s:.0f} s), "
        f"final training loss {log.final_loss:.3f}"
    )
    print(f"held-out set: {n} windows of {spec.seq_len} tokens ({int(count.sum()):,} targets)")
    for name, (loss, acc) in figures.items():
        print(f"  half {name:<17} loss {loss:.4f} nats/token, accuracy {acc:.4f}")
    print(
        f"difference between the halves: loss {abs(loss_a - loss_b):.4f}, accuracy "
        f"{abs(acc_a - acc_b):.4f}; promotion margin (fitness, i.e. loss) {margin:.4f}"
    )
    exploration = math.ceil(EXPLORATION_HELDOUT_TOKENS / EXPLORATION_CONTEXT)
    print(
        f"per-window loss sd {spread:.4f}: standard error of the whole set's loss "
        f"{spread / math.sqrt(n):.4f}; of one half {spread / math.sqrt(n / 2):.4f}; "
        f"at the exploration preset's {exploration:,} windows (same spread) "
        f"{spread / math.sqrt(exploration):.4f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
