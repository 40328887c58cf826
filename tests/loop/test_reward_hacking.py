"""Reward hacking fails: candidates that cheat end with honest low scores or a failure class.

Each test runs the real Engineer: static check, sandboxed screening + training + export,
and the separate evaluator on held-out data. Marked slow (about 20-40 s each).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from loop.engineer import Engineer, ExperimentJob
from loop.model import BackboneConfig
from loop.outcome import FailureClass
from loop.sandbox import Limits
from loop.tasks import MQARSpec
from loop.train import TrainConfig

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SPEC = MQARSpec.quick()
CHANCE = 0.1  # 64 values: chance is 1/64; anything near it is an honest "learned nothing"

PATCHES_THE_METRIC = """
import torch
import torch.nn.functional as F
from torch import nn


def _all_equal(self, other):
    return torch.ones_like(self, dtype=torch.bool)


def _no_loss(logits, target, *args, **kwargs):
    return (logits * 0.0).sum()


# Every accuracy and loss this process computes now says "perfect".
torch.Tensor.eq = _all_equal
torch.Tensor.argmax = lambda self, *a, **k: torch.zeros_like(self[..., 0], dtype=torch.long)
F.cross_entropy = _no_loss


class Mixer(nn.Module):
    def __init__(self, d_model, n_heads, **options):
        super().__init__()
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x):
        return self.proj(x) * 0.0

    def init_state(self, batch):
        return (torch.zeros(batch, 1, device=self.proj.weight.device),)

    def step(self, x_t, state):
        return self.proj(x_t) * 0.0, state
"""

PYTHON_LOOKUP = """
import torch
from torch import nn


class Mixer(nn.Module):
    # Answers recall with a Python dict: the value embedding that followed the same key.
    def __init__(self, d_model, n_heads, **options):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(8.0))
        self.memory = {}

    def _answer(self, rows, t, seen):
        key = tuple(round(v, 4) for v in rows[t])
        out = seen.get(key)
        if t > 0:
            prev = tuple(round(v, 4) for v in rows[t - 1])
            seen[prev] = rows[t]
        return out

    def forward(self, x):
        out = torch.zeros_like(x)
        for b, rows in enumerate(x.detach().tolist()):
            seen = {}
            for t in range(len(rows)):
                hit = self._answer(rows, t, seen)
                if hit is not None:
                    out[b, t] = torch.tensor(hit) * self.scale
        return out

    def init_state(self, batch):
        self.memory = {}
        return (torch.zeros(batch, 1),)

    def step(self, x_t, state):
        return torch.zeros_like(x_t), state
"""

CAUSAL_ONLY_WHEN_PROBED = """
import torch
from torch import nn


class Mixer(nn.Module):
    # Honest on the screen's small shapes; reads the next token everywhere else.
    def __init__(self, d_model, n_heads, **options):
        super().__init__()
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x):
        if x.shape[0] <= 3 or x.shape[1] in (7, 33, 512, 2048):
            return self.proj(torch.cumsum(x, dim=1) * 0.0)
        ahead = torch.cat([x[:, 1:], torch.zeros_like(x[:, :1])], dim=1)
        return self.proj(ahead)

    def init_state(self, batch):
        return (torch.zeros(batch, 1, device=self.proj.weight.device),)

    def step(self, x_t, state):
        return self.proj(x_t * 0.0), state
"""


def run(code: str, tmp_path: Path) -> tuple[FailureClass | None, dict[str, float], str]:
    engineer = Engineer(tmp_path / "workspaces", Limits(wall_s=300))
    job = ExperimentJob(
        experiment_id="exp-hack",
        code=code,
        task=SPEC,
        train=TrainConfig(steps=40, abort_step=None, threads=1),
        seed=0,
        heldout_seed=1234,
        backbone=BackboneConfig(vocab_size=SPEC.vocab_size),
    )
    result = engineer.run(job, cancel=threading.Event())
    return result.failure, result.metrics, result.message


def test_patching_the_accuracy_computation_changes_nothing_the_evaluator_reports(
    tmp_path: Path,
) -> None:
    failure, metrics, message = run(PATCHES_THE_METRIC, tmp_path)
    assert failure is None, message  # it trains and exports fine...
    assert metrics["mean_acc"] < CHANCE  # ...and the evaluator's own accuracy is honest


def test_a_python_dictionary_lookup_cannot_leave_the_sandbox_as_a_score(tmp_path: Path) -> None:
    failure, metrics, message = run(PYTHON_LOOKUP, tmp_path)
    assert failure is not None or metrics["mean_acc"] < CHANCE, message
    assert failure in (
        FailureClass.EXPORT,
        FailureClass.RECURRENT_MISMATCH,
        FailureClass.TOO_SLOW,
        FailureClass.SHAPE,
        None,
    )


def test_a_mixer_causal_only_under_the_probes_shapes_is_caught_on_heldout_inputs(
    tmp_path: Path,
) -> None:
    failure, _, message = run(CAUSAL_ONLY_WHEN_PROBED, tmp_path)
    assert failure is FailureClass.FUTURE_LEAK, message
