"""The backbone's two paths agree, and training learns, aborts, stops and is reproducible."""

from __future__ import annotations

import itertools
import math
import time

import pytest
import torch
from mixers import CumulativeMean
from torch import Tensor

from loop.model import Backbone, BackboneConfig
from loop.outcome import FailureClass
from loop.tasks import MQARSpec
from loop.train import Preset, StopReason, TrainConfig, score_model, train

TINY_SPEC = MQARSpec(
    vocab_size=64,
    key_range=(1, 31),
    value_range=(32, 63),
    batch_size=16,
    train_shapes=((16, 2), (24, 3)),
    test_shapes=((16, 2),),
    test_examples=32,
    probe_examples=32,
)
TINY_MODEL = BackboneConfig(vocab_size=64, d_model=16, n_layers=2, n_heads=2)


class Silent(CumulativeMean):
    """Outputs zeros: the model can only guess from local context."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.zeros_like(x)


class Poisoned(CumulativeMean):
    """Outputs NaN."""

    def forward(self, x: Tensor) -> Tensor:
        return x * math.nan


def test_step_by_step_matches_forward_on_odd_lengths() -> None:
    model = Backbone(CumulativeMean, TINY_MODEL, seed=0).eval()
    tokens = torch.randint(0, 64, (3, 7))
    with torch.no_grad():
        full = model(tokens)
        state = model.init_state(3)
        stepped = []
        for t in range(tokens.shape[1]):
            logits, state = model.step(tokens[:, t], state)
            stepped.append(logits)
    assert full.shape == (3, 7, 64)
    torch.testing.assert_close(torch.stack(stepped, dim=1), full, rtol=1e-5, atol=1e-5)
    # per layer: the conv state (B, D, kernel-1), then the mixer's two tensors
    assert [tuple(t.shape) for t in state] == [(3, 16, 2), (3, 16), (3, 1)] * 2
    assert model.state_counts == (2, 2)


def test_seed_fixes_the_initialisation_without_touching_global_rng() -> None:
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first = Backbone(CumulativeMean, TINY_MODEL, seed=5)
    assert torch.equal(torch.rand(1), before)
    second = Backbone(CumulativeMean, TINY_MODEL, seed=5)
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)


def test_untied_head_has_its_own_weights() -> None:
    tied = Backbone(CumulativeMean, TINY_MODEL, seed=0)
    untied = Backbone(
        CumulativeMean, BackboneConfig(vocab_size=64, d_model=16, tie_embeddings=False), seed=0
    )
    count = sum(p.numel() for p in untied.parameters()) - sum(p.numel() for p in tied.parameters())
    assert count == 64 * 16


def test_training_reduces_loss_and_is_deterministic() -> None:
    config = TrainConfig(steps=40, lr=1e-2, abort_step=None, log_every=10, seed=1)
    logs, params = [], []
    for _ in range(2):
        model = Backbone(CumulativeMean, TINY_MODEL, seed=0)
        logs.append(train(model, TINY_SPEC, config))
        params.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    log = logs[0]
    assert log.steps_done == 40 and not log.aborted and log.failure is None
    assert [s for s, _ in log.loss_curve] == [10, 20, 30, 40]
    assert log.loss_curve[-1][1] < log.loss_curve[0][1] - 0.3
    assert log.final_loss == log.loss_curve[-1][1]
    assert logs[1].loss_curve == log.loss_curve
    assert torch.equal(params[0], params[1])


def test_the_log_counts_the_loops_cpu_seconds_apart_from_its_wall() -> None:
    """Time the loop waits (here in on_step) is wall, not CPU: the overhead benchmark's
    CPU split subtracts this from the sandbox's CPU."""

    def wait(_steps: int, _loss: float) -> bool:
        time.sleep(0.05)
        return True

    model = Backbone(CumulativeMean, TINY_MODEL, seed=0)
    log = train(model, TINY_SPEC, TrainConfig(steps=10, abort_step=None), on_step=wait)
    assert log.wall_seconds >= 0.5
    assert 0 < log.cpu_seconds < log.wall_seconds - 0.4


def test_early_abort_stops_a_mixer_that_learns_nothing() -> None:
    spec = MQARSpec(
        batch_size=16, train_shapes=((32, 4),), test_shapes=((32, 4),), probe_examples=32
    )
    model = Backbone(Silent, BackboneConfig(d_model=16), seed=0)
    log = train(model, spec, TrainConfig(steps=30, abort_step=6, seed=0))
    assert log.stop_reason is StopReason.HOPELESS and log.failure is FailureClass.HOPELESS
    assert log.steps_done == 6
    assert log.probe_accuracy is not None and log.probe_accuracy < 0.05
    assert log.probe_loss is not None and log.probe_loss > 5.5


def test_on_step_returning_false_stops_at_that_step() -> None:
    seen: list[int] = []

    def on_step(step: int, loss: float) -> bool:
        seen.append(step)
        return step < 3

    model = Backbone(CumulativeMean, TINY_MODEL, seed=0)
    log = train(model, TINY_SPEC, TrainConfig(steps=20, abort_step=None), on_step=on_step)
    assert seen == [1, 2, 3]
    assert log.steps_done == 3 and log.stop_reason is StopReason.INTERRUPTED
    assert log.failure is FailureClass.INTERRUPTED


def test_non_finite_loss_stops_with_nan() -> None:
    model = Backbone(Poisoned, TINY_MODEL, seed=0)
    log = train(model, TINY_SPEC, TrainConfig(steps=20, abort_step=None))
    assert log.stop_reason is StopReason.NAN and log.failure is FailureClass.NAN_DIVERGENCE
    assert log.steps_done == 0 and math.isnan(log.final_loss)


def test_quick_preset_moves_the_abort_check_with_the_steps_and_the_task() -> None:
    assert TrainConfig().abort_step == 1000
    quick = Preset.quick(steps=300)
    assert quick.train.abort_step == 200
    assert quick.model.vocab_size == quick.spec.vocab_size == 128
    # same fraction of the chance loss ln(values) as 5.5 is of ln(512)
    assert quick.train.abort_min_loss == pytest.approx(5.5 * math.log(64) / math.log(512), abs=0.01)
    screening = Preset.screening()
    assert screening.spec == MQARSpec() and screening.train == TrainConfig()
    assert TrainConfig().with_steps(2000).abort_step == 1333
    assert TrainConfig(abort_step=None).with_steps(10).abort_step is None


def test_learning_rate_warms_up_then_decays_to_zero() -> None:
    config = TrainConfig(steps=100, lr=1.0, warmup_frac=0.1)
    rates = [config.lr_at(step) for step in range(100)]
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(rates[9:]))
    assert rates[-1] < 0.01


def test_score_model_counts_only_target_positions() -> None:
    model = Backbone(CumulativeMean, TINY_MODEL, seed=0)
    batch = TINY_SPEC.test_sets(0)[0].batch
    loss, accuracy = score_model(model, batch)
    assert 0.0 <= accuracy <= 1.0 and loss == pytest.approx(math.log(64), abs=0.5)
    assert model.training  # restored after scoring


def test_a_run_behind_a_rung_cut_stops_outpaced_at_that_step() -> None:
    config = TrainConfig(steps=60, abort_step=None, log_every=10)
    free = train(Backbone(CumulativeMean, TINY_MODEL, seed=0), TINY_SPEC, config)
    loss_at_20 = dict(free.loss_curve)[20]
    # A cut just above its own loss lets it through; one just below stops it there.
    passed = train(
        Backbone(CumulativeMean, TINY_MODEL, seed=0),
        TINY_SPEC,
        TrainConfig(steps=60, abort_step=None, log_every=10, rungs=((20, loss_at_20 + 1e-3),)),
    )
    assert passed.steps_done == 60 and passed.failure is None
    assert passed.loss_curve == free.loss_curve and passed.rungs == ((20, loss_at_20 + 1e-3),)
    cut = loss_at_20 - 1e-3
    stopped = train(
        Backbone(CumulativeMean, TINY_MODEL, seed=0),
        TINY_SPEC,
        TrainConfig(steps=60, abort_step=None, log_every=10, rungs=((20, cut),)),
    )
    assert stopped.steps_done == 20 and stopped.stop_reason is StopReason.OUTPACED
    assert stopped.failure is FailureClass.OUTPACED
    assert f"cut {cut:.3f}" in stopped.detail and stopped.loss_curve == free.loss_curve[:2]


@pytest.mark.parametrize("rung", [(15, 1.0), (0, 1.0), (60, 1.0), (20, math.nan)])
def test_a_rung_off_the_logged_steps_or_without_a_finite_cut_is_refused(
    rung: tuple[int, float],
) -> None:
    with pytest.raises(ValueError, match="multiple of log_every"):
        TrainConfig(steps=60, log_every=10, rungs=(rung,))
