"""What MQAR's early-abort (hopeless) check sees: grammar candidates trained to its step.

Each candidate named on the command line (a grammar genome's name, as in a campaign's
records and in `bench_throughput.py --curves`) is trained at the full MQAR recipe, on seed
0, up to the recipe's abort step, and then stopped. Prints its training loss there and the
probe loss and accuracy that `loop.train`'s check reads, and whether the recipe's bounds,
or the `--accuracy`/`--loss` pair given, would have stopped it. The grammar's code is
trusted and runs in this process, not in a sandbox. Figures, not a verdict.

    .venv/bin/python scripts/study_hopeless.py NAME [NAME ...] [--threads 1]
        [--accuracy 0.15] [--loss 3.5]
"""

from __future__ import annotations

import argparse
import dataclasses
import types

import torch
from torch import nn

from loop.model import Backbone, BackboneConfig
from loop.researcher.codegen import render
from loop.researcher.grammar import Genome, all_genomes
from loop.tasks.mqar import MQARSpec
from loop.train import Preset, TrainConfig, TrainLog, train


def genomes_named(names: list[str]) -> list[Genome]:
    """The grammar's genomes of these names, in order; ValueError naming the unknown."""
    known = {g.name: g for g in all_genomes()}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"not a grammar candidate's name: {', '.join(unknown)}")
    return [known[n] for n in names]


def mixer_of(genome: Genome) -> type[nn.Module]:
    """The Mixer class of the code the offline Researcher writes for `genome`."""
    module = types.ModuleType(f"candidate_{genome.name.replace('-', '_')}")
    exec(compile(render(genome), genome.name, "exec"), module.__dict__)
    mixer: type[nn.Module] = module.Mixer
    return mixer


def to_abort_step(genome: Genome, spec: MQARSpec, config: TrainConfig) -> TrainLog:
    """Train `genome` on `spec` by `config` until the abort check has run, then stop."""
    abort = config.abort_step
    if abort is None:
        raise ValueError("the recipe has no early-abort step")
    model = Backbone(mixer_of(genome), BackboneConfig(vocab_size=spec.vocab_size), seed=0)
    return train(model, spec, config, on_step=lambda done, _loss: done < abort)


def stopped_by(log: TrainLog, max_accuracy: float, min_loss: float) -> bool:
    """Whether a check with these bounds stops the run the log describes."""
    if log.probe_accuracy is None or log.probe_loss is None:
        raise ValueError("the run ended before the abort check")
    check = dataclasses.replace(
        TrainConfig(), abort_max_accuracy=max_accuracy, abort_min_loss=min_loss
    )
    return check.hopeless(log.probe_loss, log.probe_accuracy)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+", help="grammar candidates, e.g. add-elu1")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--accuracy", type=float, default=0.15, help="another accuracy bound")
    parser.add_argument("--loss", type=float, default=3.5, help="another probe-loss bound")
    args = parser.parse_args()
    try:
        genomes = genomes_named(args.names)
    except ValueError as exc:
        parser.error(str(exc))
    torch.set_num_threads(args.threads)
    preset = Preset.screening(threads=args.threads)
    config = preset.train
    bounds = f"acc<{args.accuracy} loss>{args.loss}"
    print(
        f"full MQAR recipe to step {config.abort_step}; the recipe's check stops at probe "
        f"accuracy < {config.abort_max_accuracy} and probe loss > {config.abort_min_loss}"
    )
    print(f"{'candidate':<40} {'train loss':>10} {'probe loss':>10} {'probe acc':>9}  "
          f"{'recipe':>6} {bounds:>16}")  # fmt: skip
    for genome in genomes:
        log = to_abort_step(genome, preset.spec, config)
        curve = dict(log.loss_curve)
        recipe = stopped_by(log, config.abort_max_accuracy, config.abort_min_loss)
        other = stopped_by(log, args.accuracy, args.loss)
        print(
            f"{genome.name:<40} {curve[log.steps_done]:10.4f} {log.probe_loss:10.4f} "
            f"{log.probe_accuracy:9.3f}  {'stop' if recipe else 'go':>6} "
            f"{'stop' if other else 'go':>16}",
            flush=True,
        )


if __name__ == "__main__":
    main()
