"""Train a Backbone on an accelerator: bf16 autocast, batches copied in pinned, tokens per second.

The same recipe as `loop.train.train` (AdamW with decay on matrices only, warm-up then
cosine, clipping, the early-abort probe, a loss curve), run on `device` under
`torch.autocast` in bfloat16: matmuls and the fast kernels of `kernels.ops` (fla's chunked
ops and our Triton FIR kernel, picked per call on CUDA) run in bf16, parameters, optimiser
state and the loss stay float32. The loss is taken over every position with a target
(cross_entropy's ignore_index), which for the LM task is every position.

`exploration_preset` is the language-model stage at the exploration scale of ASI-Arch:
about 20 M parameters at a 32,000-token vocabulary (8 pre-norm blocks of width 320, 5
heads of 64, each block short conv + mixer + SwiGLU MLP of width 896, tied embedding:
10.24 M embedding and about 10.2 M non-embedding parameters with DeltaNet), context 2048,
trained on 1 B tokens of a tokenised shard read memory-mapped (see loop.tasks.shards),
the steps derived from the token budget, batch and context, and scored on a held-out
split of 4,194,304 tokens (2,048 windows). Throughput is measured by the training loop
itself: the first step (Triton compile and autotune on a cold cache) is reported apart
from the steady rate.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from loop.heartbeat import Heartbeat
from loop.model import Backbone, BackboneConfig, swiglu_hidden
from loop.tasks import IGNORE_INDEX, Batch, LMSpec, Task
from loop.tasks.lm import heldout_windows_for
from loop.train import OnStep, TrainConfig, TrainLog, optimizer_for, run_steps

logger = logging.getLogger(__name__)

EXPLORATION_VOCAB = 32_000
EXPLORATION_CONTEXT = 2048
EXPLORATION_BATCH = 16  # sequences per step: 32,768 tokens
EXPLORATION_TRAIN_TOKENS = 1_000_000_000  # ASI-Arch's exploration budget per candidate
EXPLORATION_HELDOUT_TOKENS = 4_194_304  # 2,048 held-out windows at context 2,048
EXPLORATION_WIDTH = 320
EXPLORATION_LAYERS = 8
EXPLORATION_HEADS = 5  # head dimension 64, as fla's kernels are tuned for


@dataclass(frozen=True)
class DeviceConfig:
    """Where and how to train. `device` is a torch device string ("cuda", "cuda:1", "cpu")."""

    device: str = "cuda"
    amp: Literal["bf16", "off"] = "bf16"
    warmup_steps: int = 2  # left out of the steady tokens/s (compile, autotune, allocator)

    def __post_init__(self) -> None:
        if self.warmup_steps < 0:
            raise ValueError("warmup_steps must not be negative")
        try:
            torch.device(self.device)
        except RuntimeError as exc:
            raise ValueError(f"device {self.device!r} is not a torch device string") from exc


@dataclass(frozen=True)
class Throughput:
    """What the run cost: tokens per second overall and after the warm-up steps."""

    device: str
    amp: str
    steps: int
    tokens: int
    seconds: float
    tokens_per_s: float
    steady_tokens_per_s: float | None  # None when no step ran after the warm-up
    first_step_s: float
    peak_memory_bytes: int | None  # CUDA only


@dataclass(frozen=True)
class ExplorationPreset:
    """The LM stage's task, model shape and recipe at the exploration scale."""

    spec: LMSpec
    model: BackboneConfig
    train: TrainConfig


def steps_for_tokens(train_tokens: int, batch_size: int, seq_len: int) -> int:
    """Optimiser steps that read at least `train_tokens` input tokens."""
    if train_tokens < 1 or batch_size < 1 or seq_len < 1:
        raise ValueError("train_tokens, batch_size and seq_len must be positive")
    return max(1, math.ceil(train_tokens / (batch_size * seq_len)))


def exploration_preset(
    data_path: str,
    *,
    vocab_size: int = EXPLORATION_VOCAB,
    seq_len: int = EXPLORATION_CONTEXT,
    batch_size: int = EXPLORATION_BATCH,
    train_tokens: int = EXPLORATION_TRAIN_TOKENS,
    heldout_tokens: int = EXPLORATION_HELDOUT_TOKENS,
    seed: int = 0,
) -> ExplorationPreset:
    """~20 M parameters (see the module docstring), context 2048, `train_tokens` tokens.

    The early-abort check runs after a tenth of the steps (100 M tokens of the default
    budget) and stops a run whose probe loss is still above 0.9 of chance (ln vocab) with
    accuracy under 5 %.
    """
    spec = LMSpec(
        vocab_size=vocab_size,
        data_path=data_path,
        batch_size=batch_size,
        seq_len=seq_len,
        heldout_windows=heldout_windows_for(heldout_tokens, seq_len),
        probe_examples=16,
    )
    model = BackboneConfig(
        vocab_size=vocab_size,
        d_model=EXPLORATION_WIDTH,
        n_layers=EXPLORATION_LAYERS,
        n_heads=EXPLORATION_HEADS,
        tie_embeddings=True,
        mlp_hidden=swiglu_hidden(EXPLORATION_WIDTH),
    )
    steps = steps_for_tokens(train_tokens, batch_size, seq_len)
    train = TrainConfig(
        steps=steps,
        lr=2e-3,
        warmup_frac=0.05,
        abort_step=max(1, steps // 10),
        abort_min_loss=round(0.9 * math.log(vocab_size), 2),
        log_every=max(1, min(25, steps)),
        seed=seed,
    )
    return ExplorationPreset(spec, model, train)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _to_device(batch: Batch, device: torch.device) -> Batch:
    if device.type != "cuda":
        return Batch(batch.tokens.to(device), batch.targets.to(device))
    return Batch(
        batch.tokens.pin_memory().to(device, non_blocking=True),
        batch.targets.pin_memory().to(device, non_blocking=True),
    )


def _loss(model: Backbone, batch: Batch, amp: bool) -> tuple[Tensor, Tensor, Tensor]:
    """(mean loss, correct, number of targets) over positions that carry a target."""
    with torch.autocast(batch.tokens.device.type, dtype=torch.bfloat16, enabled=amp):
        logits = model(batch.tokens)
    flat = logits.float().flatten(0, 1)
    targets = batch.targets.flatten()
    loss = F.cross_entropy(flat, targets, ignore_index=IGNORE_INDEX)
    valid = targets != IGNORE_INDEX
    correct = ((flat.argmax(-1) == targets) & valid).sum()
    return loss, correct, valid.sum()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_on_device(
    model: Backbone,
    spec: Task,
    config: TrainConfig,
    device_config: DeviceConfig | None = None,
    on_step: OnStep | None = None,
    heartbeat: Heartbeat | None = None,
) -> tuple[TrainLog, Throughput]:
    """Train `model` in place on the device (it stays there) and say how it went and how fast.

    Same contract as `loop.train.train`; move the model to the CPU before exporting it.
    """
    dc = device_config or DeviceConfig()
    device = torch.device(dc.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {dc.device} requested but CUDA is not available")
    amp = dc.amp == "bf16"
    torch.manual_seed(config.seed)
    model.to(device)
    optimizer = optimizer_for(model, config, fused=device.type == "cuda")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    meter = _Meter(device, dc.warmup_steps)
    log = run_steps(
        model,
        spec,
        config,
        optimizer,
        lambda m, batch: _loss(m, batch, amp),
        on_step,
        prepare=lambda batch: _to_device(batch, device),
        after_step=meter.step,
        heartbeat=heartbeat,
    )
    _sync(device)
    end = time.perf_counter()
    seconds = end - meter.start
    steady = None
    if meter.steady_start is not None and meter.steady_tokens and end > meter.steady_start:
        steady = meter.steady_tokens / (end - meter.steady_start)
    throughput = Throughput(
        device=str(device),
        amp=dc.amp,
        steps=log.steps_done,
        tokens=meter.tokens,
        seconds=seconds,
        tokens_per_s=meter.tokens / seconds if seconds > 0 else 0.0,
        steady_tokens_per_s=steady,
        first_step_s=meter.first_step_s,
        peak_memory_bytes=(
            int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None
        ),
    )
    logger.info(
        "device training finished",
        extra={"steps": log.steps_done, "stop": log.stop_reason} | dataclasses.asdict(throughput),
    )
    return log, throughput


class _Meter:
    """Counts tokens per step, the first step's time and the steady rate after warm-up.

    Each step is synchronised with the device, so the times are the kernels' own."""

    def __init__(self, device: torch.device, warmup_steps: int) -> None:
        self.device = device
        self.warmup_steps = warmup_steps
        self.start = time.perf_counter()
        self.tokens = self.steady_tokens = 0
        self.first_step_s = 0.0
        self.steady_start: float | None = None

    def step(self, steps_done: int, batch: Batch) -> None:
        _sync(self.device)
        self.tokens += batch.tokens.numel()
        now = time.perf_counter()
        if steps_done == 1:
            self.first_step_s = now - self.start
        if steps_done == self.warmup_steps:
            self.steady_start = now
        elif steps_done > self.warmup_steps:
            self.steady_tokens += batch.tokens.numel()
            if self.steady_start is None:  # warmup_steps == 0
                self.steady_start = self.start
