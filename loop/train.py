"""Train a Backbone on a task: AdamW, warm-up then cosine, clipping, early abort.

This runs inside the sandbox with the candidate's code loaded, so nothing it returns is a
score: the trusted evaluator re-measures the exported model on held-out data. The log it
returns says how training went (loss curve, why it stopped) for records and for repair.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from loop.heartbeat import Heartbeat
from loop.model import Backbone, BackboneConfig
from loop.outcome import FailureClass
from loop.tasks import IGNORE_INDEX, Batch, MQARSpec, Task

logger = logging.getLogger(__name__)

OnStep = Callable[[int, float], bool]
LossFn = Callable[[Backbone, Batch], tuple[Tensor, Tensor, Tensor]]

# The demo's default: long enough that its reference, DeltaNet, reaches its plateau.
# Measured on the quick task (1 thread, seed 0, lr 1e-2, cosine over the run), DeltaNet's
# mean accuracy: 0.49 after 400 steps, 0.74 after 600, 0.88 after 800, 0.955 after 1,200,
# 0.974 after 1,600 (elu linear attention: 0.982 after 1,200). At lr 3e-3 DeltaNet is
# still on its 1/P plateau (mean 0.12) after 500 steps. See TrainConfig.quick.
QUICK_STEPS = 1200
QUICK_LR = 1e-2


class StopReason(enum.StrEnum):
    """Why training ended before its last step."""

    HOPELESS = "hopeless"  # the early-abort check found nothing learnt
    OUTPACED = "outpaced"  # at a rung, its loss was behind the campaign's cut
    NAN = "nan"  # non-finite loss or gradient norm
    INTERRUPTED = "interrupted"  # on_step asked to stop (pause, shutdown)


_FAILURE_OF = {
    StopReason.HOPELESS: FailureClass.HOPELESS,
    StopReason.OUTPACED: FailureClass.OUTPACED,
    StopReason.NAN: FailureClass.NAN_DIVERGENCE,
    StopReason.INTERRUPTED: FailureClass.INTERRUPTED,
}


@dataclass(frozen=True)
class TrainConfig:
    """The training recipe of DESIGN section 3; `quick()` is the demo's shortened one."""

    steps: int = 1500
    lr: float = 3e-3
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_frac: float = 0.1
    clip: float = 1.0
    abort_step: int | None = 1000  # run the early-abort check after this many steps
    abort_max_accuracy: float = 0.05  # abort when probe accuracy is below this ...
    abort_min_loss: float = 5.5  # ... and probe loss above this
    log_every: int = 25
    threads: int = 1
    seed: int = 0
    # Early stopping on the learning curve (node.campaign.rungs): (step, cut) pairs; at
    # each step, a multiple of log_every, training stops with StopReason.OUTPACED when the
    # mean loss of the interval that ends there is above the cut.
    rungs: tuple[tuple[int, float], ...] = ()

    def __post_init__(self) -> None:
        if self.steps < 1 or self.log_every < 1 or self.threads < 1:
            raise ValueError("steps, log_every and threads must be positive")
        if not 0.0 <= self.warmup_frac < 1.0:
            raise ValueError("warmup_frac must lie in [0, 1)")
        for step, cut in self.rungs:
            if not (0 < step < self.steps and step % self.log_every == 0 and math.isfinite(cut)):
                raise ValueError(
                    f"rung ({step}, {cut}): its step must be a multiple of log_every "
                    f"({self.log_every}) before the last step ({self.steps}), its cut finite"
                )

    @classmethod
    def quick(cls, steps: int = QUICK_STEPS, threads: int = 1, seed: int = 0) -> TrainConfig:
        """The demo recipe for `MQARSpec.quick()`: fewer steps, the abort check at the same
        2/3 point, and its loss threshold at the screening recipe's margin below chance:
        5.5 is 0.88 of ln(512 values), so the quick task's is 0.88 of ln(64 values). The
        learning rate is higher (QUICK_LR) so that delta-rule mixers leave their plateau."""
        screening = cls()
        margin = screening.abort_min_loss / math.log(MQARSpec().n_values)
        return dataclasses.replace(
            screening.with_steps(steps),
            abort_min_loss=round(margin * math.log(MQARSpec.quick().n_values), 2),
            lr=QUICK_LR,
            threads=threads,
            seed=seed,
        )

    def hopeless(self, probe_loss: float, probe_accuracy: float) -> bool:
        """The early-abort check's verdict on the probe batch's loss and accuracy."""
        return probe_accuracy < self.abort_max_accuracy and probe_loss > self.abort_min_loss

    def with_steps(self, steps: int) -> TrainConfig:
        """The same recipe over `steps`, the early-abort check moved proportionally."""
        abort = (
            None if self.abort_step is None else max(1, round(self.abort_step * steps / self.steps))
        )
        return dataclasses.replace(self, steps=steps, abort_step=abort)

    def lr_at(self, step: int) -> float:
        """Learning rate for 0-based `step`: linear warm-up, then cosine decay to zero."""
        warmup = max(1, round(self.steps * self.warmup_frac))
        if step < warmup:
            return self.lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, self.steps - warmup)
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@dataclass(frozen=True)
class Preset:
    """A task, a model shape and a recipe that belong together (vocabularies must match)."""

    spec: MQARSpec
    model: BackboneConfig
    train: TrainConfig

    @classmethod
    def screening(cls, threads: int = 1, seed: int = 0) -> Preset:
        """DESIGN section 3: the full MQAR task, 1,500 steps, abort check at step 1,000."""
        spec = MQARSpec()
        return cls(
            spec,
            BackboneConfig(vocab_size=spec.vocab_size),
            TrainConfig(threads=threads, seed=seed),
        )

    @classmethod
    def quick(cls, threads: int = 1, seed: int = 0, steps: int = QUICK_STEPS) -> Preset:
        """The demo: `MQARSpec.quick()` with `TrainConfig.quick()`."""
        spec = MQARSpec.quick()
        config = TrainConfig.quick(steps, threads=threads, seed=seed)
        return cls(spec, BackboneConfig(vocab_size=spec.vocab_size), config)


@dataclass(frozen=True)
class TrainLog:
    """How training went. `loss_curve` holds (steps done, mean loss over the interval)."""

    steps_done: int
    final_loss: float  # mean over the last logged interval (nan if no step finished)
    loss_curve: tuple[tuple[int, float], ...]
    stop_reason: StopReason | None
    detail: str
    wall_seconds: float
    probe_accuracy: float | None = None  # from the early-abort check, if it ran
    probe_loss: float | None = None
    tokens_seen: int = 0  # input tokens of the optimiser steps taken
    rungs: tuple[tuple[int, float], ...] = ()  # the (step, cut) pairs it was held to
    cpu_seconds: float = 0.0  # the process's CPU time over the loop, all its threads

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_seen / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def aborted(self) -> bool:
        return self.stop_reason is not None

    @property
    def failure(self) -> FailureClass | None:
        return None if self.stop_reason is None else _FAILURE_OF[self.stop_reason]


def masked_loss(model: Backbone, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
    """Cross-entropy at target positions only, applying the head only there.

    Returns (mean loss, number correct, number of targets). Skipping the head at filler
    positions saves most of the step's cost on MQAR.
    """
    mask = batch.targets != IGNORE_INDEX
    logits = model.head_logits(model.hidden(batch.tokens)[mask])
    targets = batch.targets[mask]
    loss = F.cross_entropy(logits, targets)
    correct = (logits.argmax(dim=-1) == targets).sum()
    return loss, correct, targets.new_tensor(targets.numel())


@torch.no_grad()
def score_model(
    model: Backbone, batch: Batch, loss_fn: LossFn = masked_loss
) -> tuple[float, float]:
    """(mean loss, accuracy) of the eager model on a batch, in eval mode."""
    was_training = model.training
    model.eval()
    try:
        loss, correct, total = loss_fn(model, batch)
    finally:
        model.train(was_training)
    return float(loss), float(correct) / max(1, int(total))


def optimizer_for(model: Backbone, config: TrainConfig, fused: bool = False) -> torch.optim.AdamW:
    """AdamW with decay on matrices only; norms, biases and gains are left undecayed."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, fused=fused)


def train(
    model: Backbone,
    spec: Task,
    config: TrainConfig,
    on_step: OnStep | None = None,
    heartbeat: Heartbeat | None = None,
) -> TrainLog:
    """Train `model` in place on `spec` and say how it went.

    Deterministic for a given model initialisation and `config.seed`. `on_step(steps_done,
    loss)` is called after every optimiser step; returning False stops at that point with
    StopReason.INTERRUPTED (the model is consistent there and can be exported or dropped).
    `heartbeat` gets the progress after every step (it writes at its own pace).
    """
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)  # for any randomness inside the mixer (dropout, noise)
    log = run_steps(
        model,
        spec,
        config,
        optimizer_for(model, config),
        masked_loss,
        on_step,
        heartbeat=heartbeat,
    )
    logger.info(
        "training finished",
        extra={
            "steps": log.steps_done,
            "final_loss": log.final_loss,
            "stop": log.stop_reason,
            "seconds": log.wall_seconds,
        },
    )
    return log


def run_steps(
    model: Backbone,
    spec: Task,
    config: TrainConfig,
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    on_step: OnStep | None = None,
    *,
    prepare: Callable[[Batch], Batch] = lambda batch: batch,
    after_step: Callable[[int, Batch], None] | None = None,
    heartbeat: Heartbeat | None = None,
) -> TrainLog:
    """The step loop every trainer shares: schedule, NaN checks, clipping, the loss curve,
    the early-abort probe, `on_step` and the `heartbeat`. `prepare` moves each batch where
    the model is; `after_step(steps_done, batch)` runs after each optimiser step (device
    timing)."""
    model.train()
    start, cpu_start = time.perf_counter(), time.process_time()
    curve: list[tuple[int, float]] = []
    window: list[float] = []
    stop: StopReason | None = None
    detail = ""
    probe: tuple[float, float] | None = None
    steps_done = 0
    tokens_seen = 0
    cuts = dict(config.rungs)

    for step in range(config.steps):
        for group in optimizer.param_groups:
            group["lr"] = config.lr_at(step)
        batch = prepare(spec.train_batch(step, config.seed))
        loss, _, _ = loss_fn(model, batch)
        value = loss.item()
        if not math.isfinite(value):
            stop, detail = StopReason.NAN, f"non-finite loss {value} at step {step}"
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip))
        if not math.isfinite(grad_norm):
            stop, detail = StopReason.NAN, f"non-finite gradient norm at step {step}"
            break
        optimizer.step()
        steps_done = step + 1
        tokens_seen += batch.tokens.numel()
        if after_step is not None:
            after_step(steps_done, batch)
        if heartbeat is not None:
            elapsed = time.perf_counter() - start
            heartbeat.beat(steps_done, config.steps, value, tokens_seen, elapsed)
        window.append(value)
        if steps_done % config.log_every == 0 or steps_done == config.steps:
            curve.append((steps_done, sum(window) / len(window)))
            window = []
            cut = cuts.get(steps_done)
            if cut is not None and curve[-1][1] > cut:
                stop = StopReason.OUTPACED
                detail = (
                    f"after {steps_done} steps loss {curve[-1][1]:.3f}, behind the campaign's "
                    f"cut {cut:.3f} at that step"
                )
                break

        if steps_done == config.abort_step:
            probe = score_model(model, prepare(spec.probe_batch(config.seed)), loss_fn)
            probe_loss, probe_accuracy = probe
            if config.hopeless(probe_loss, probe_accuracy):
                stop = StopReason.HOPELESS
                detail = (
                    f"after {steps_done} steps probe accuracy {probe_accuracy:.3f} and loss "
                    f"{probe_loss:.2f}"
                )
                break
        if on_step is not None and not on_step(steps_done, value):
            stop, detail = StopReason.INTERRUPTED, f"stopped by caller after {steps_done} steps"
            break

    if window:
        curve.append((steps_done, sum(window) / len(window)))
    return TrainLog(
        steps_done=steps_done,
        final_loss=curve[-1][1] if curve else math.nan,
        loss_curve=tuple(curve),
        stop_reason=stop,
        detail=detail,
        wall_seconds=time.perf_counter() - start,
        probe_loss=None if probe is None else probe[0],
        probe_accuracy=None if probe is None else probe[1],
        tokens_seen=tokens_seen,
        rungs=config.rungs,
        cpu_seconds=time.process_time() - cpu_start,
    )
