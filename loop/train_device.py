"""Train a Backbone on an accelerator: bf16 autocast, batches copied in pinned, tokens per second.

The same recipe as `loop.train.train` (AdamW with decay on matrices only, warm-up then
cosine, clipping, the early-abort probe, a loss curve), run on `device` under
`torch.autocast` in bfloat16: matmuls and the fast kernels of `kernels.ops` (fla's chunked
ops and our Triton FIR kernel, picked per call on CUDA) run in bf16, parameters, optimiser
state and the loss stay float32. The loss is taken over every position with a target
(cross_entropy's ignore_index), which for the LM task is every position.

`exploration_preset` is the language-model stage at the exploration scale of ASI-Arch:
8 layers, width 256, 8 heads, context 2048, a 32,000-token vocabulary with an untied
head (about 19 M parameters with DeltaNet), trained on a tokenised shard read memory-mapped
(see loop.tasks.shards). Throughput is measured by the training loop itself: the first
step (Triton compile and autotune on a cold cache) is reported apart from the steady rate.
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

from loop.model import Backbone, BackboneConfig
from loop.tasks import IGNORE_INDEX, Batch, LMSpec, Task
from loop.train import OnStep, StopReason, TrainConfig, TrainLog

logger = logging.getLogger(__name__)

EXPLORATION_VOCAB = 32_000
EXPLORATION_CONTEXT = 2048


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


def exploration_preset(
    data_path: str,
    *,
    vocab_size: int = EXPLORATION_VOCAB,
    seq_len: int = EXPLORATION_CONTEXT,
    batch_size: int = 16,
    steps: int = 2000,
    seed: int = 0,
) -> ExplorationPreset:
    """~20 M parameters: 8 layers of width 256, 8 heads, context 2048, untied head.

    The early-abort check runs after a third of the steps and stops a run whose probe loss
    is still above 0.9 of chance (ln vocab) with accuracy under 5 %.
    """
    spec = LMSpec(
        vocab_size=vocab_size,
        data_path=data_path,
        batch_size=batch_size,
        seq_len=seq_len,
        test_seq_lens=(seq_len,),
        test_examples=64,
        probe_examples=16,
    )
    model = BackboneConfig(
        vocab_size=vocab_size, d_model=256, n_layers=8, n_heads=8, tie_embeddings=False
    )
    train = TrainConfig(
        steps=steps,
        lr=2e-3,
        warmup_frac=0.05,
        abort_step=max(1, steps // 3),
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


def _optimizer(model: Backbone, config: TrainConfig, fused: bool) -> torch.optim.AdamW:
    """AdamW with decay on matrices only, as loop.train does."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, fused=fused)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def _probe(model: Backbone, batch: Batch, amp: bool) -> tuple[float, float]:
    model.eval()
    try:
        loss, correct, total = _loss(model, batch, amp)
    finally:
        model.train()
    return float(loss), float(correct) / max(1, int(total))


def train_on_device(
    model: Backbone,
    spec: Task,
    config: TrainConfig,
    device_config: DeviceConfig | None = None,
    on_step: OnStep | None = None,
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
    model.train()
    optimizer = _optimizer(model, config, fused=device.type == "cuda")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    start = time.perf_counter()
    curve: list[tuple[int, float]] = []
    window: list[float] = []
    stop: StopReason | None = None
    detail = ""
    probe: tuple[float, float] | None = None
    steps_done = tokens = steady_tokens = 0
    first_step_s = 0.0
    steady_start: float | None = None

    for step in range(config.steps):
        for group in optimizer.param_groups:
            group["lr"] = config.lr_at(step)
        batch = _to_device(spec.train_batch(step, config.seed), device)
        loss, _, _ = _loss(model, batch, amp)
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
        _sync(device)
        steps_done = step + 1
        tokens += batch.tokens.numel()
        now = time.perf_counter()
        if steps_done == 1:
            first_step_s = now - start
        if steps_done == dc.warmup_steps:
            steady_start = now
        elif steps_done > dc.warmup_steps:
            steady_tokens += batch.tokens.numel()
            if steady_start is None:  # warmup_steps == 0
                steady_start = start
        window.append(value)
        if steps_done % config.log_every == 0 or steps_done == config.steps:
            curve.append((steps_done, sum(window) / len(window)))
            window = []
        if steps_done == config.abort_step:
            probe = _probe(model, _to_device(spec.probe_batch(config.seed), device), amp)
            if probe[1] < config.abort_max_accuracy and probe[0] > config.abort_min_loss:
                stop = StopReason.HOPELESS
                detail = (
                    f"after {steps_done} steps probe accuracy {probe[1]:.3f} "
                    f"and loss {probe[0]:.2f}"
                )
                break
        if on_step is not None and not on_step(steps_done, value):
            stop, detail = StopReason.INTERRUPTED, f"stopped by caller after {steps_done} steps"
            break

    _sync(device)
    end = time.perf_counter()
    if window:
        curve.append((steps_done, sum(window) / len(window)))
    seconds = end - start
    log = TrainLog(
        steps_done=steps_done,
        final_loss=curve[-1][1] if curve else math.nan,
        loss_curve=tuple(curve),
        stop_reason=stop,
        detail=detail,
        wall_seconds=seconds,
        probe_loss=None if probe is None else probe[0],
        probe_accuracy=None if probe is None else probe[1],
    )
    steady = None
    if steady_start is not None and steady_tokens and end > steady_start:
        steady = steady_tokens / (end - steady_start)
    throughput = Throughput(
        device=str(device),
        amp=dc.amp,
        steps=steps_done,
        tokens=tokens,
        seconds=seconds,
        tokens_per_s=tokens / seconds if seconds > 0 else 0.0,
        steady_tokens_per_s=steady,
        first_step_s=first_step_s,
        peak_memory_bytes=(
            int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None
        ),
    )
    logger.info(
        "device training finished",
        extra={"steps": steps_done, "stop": stop} | dataclasses.asdict(throughput),
    )
    return log, throughput
