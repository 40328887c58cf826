"""The functional probe: the same function written two ways matches, a real change does not,
float noise stays under the tolerance, and the Engineer stops a twin before training."""

from __future__ import annotations

import dataclasses
import math
import types
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from kernels.baselines import BASELINES
from kernels.ops import chunk_linear_rnn, linear_rnn_step
from loop.engineer import Engineer, ExperimentJob
from loop.outcome import FailureClass
from loop.probe import Probe, find_twin, probe_mixer
from loop.sandbox import Limits
from loop.screen import ScreenConfig
from loop.tasks import MQARSpec
from loop.train import TrainConfig


class Chunked(nn.Module):
    """Additive linear attention over the whole sequence at once."""

    def __init__(self, d_model: int, n_heads: int, detach_keys: bool = False) -> None:
        super().__init__()
        self.h, self.dh, self.detach_keys = n_heads, d_model // n_heads, detach_keys
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)

    def heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        q, k, v = self.qkv(x).unflatten(-1, (3, self.h, self.dh)).unbind(-3)
        return q, k.detach() if self.detach_keys else k, v

    def forward(self, x: Tensor) -> Tensor:
        o, _ = chunk_linear_rnn(*self.heads(x))
        return self.out(o.flatten(-2))  # type: ignore[no-any-return]

    def init_state(self, batch: int) -> tuple[Tensor, ...]:
        return (self.out.weight.new_zeros(batch, self.h, self.dh, self.dh),)


class Stepped(nn.Module):
    """The same function, renamed and written as a loop over tokens with an einsum split."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.in_proj = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out_proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        mixed = torch.einsum("btd,ed->bte", x, self.in_proj.weight)
        q, k, v = mixed.reshape(*x.shape[:2], 3, self.n_heads, self.head_dim).unbind(2)
        memory = x.new_zeros(x.shape[0], self.n_heads, self.head_dim, self.head_dim)
        outputs = []
        for t in range(x.shape[1]):
            o_t, memory = linear_rnn_step(q[:, t], k[:, t], v[:, t], memory)
            outputs.append(o_t)
        return self.out_proj(torch.stack(outputs, dim=1).flatten(-2))  # type: ignore[no-any-return]

    def init_state(self, batch: int) -> tuple[Tensor, ...]:
        return (self.out_proj.weight.new_zeros(batch, self.n_heads, self.head_dim, self.head_dim),)


class Float32Only(Chunked):
    """The same function again, in code that casts to float32 (the probe falls back)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.float())


class WithZeroBranch(Chunked):
    """Chunked plus a residual branch whose weight starts at zero: equal at init only."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__(d_model, n_heads)
        self.skip = nn.Parameter(torch.zeros(d_model))

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x) + self.skip * x


class Decayed(Chunked):
    """A real change: a fixed decay on the state."""

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self.heads(x)
        decay = torch.full(q.shape[:-1], math.log(0.9), dtype=x.dtype)
        o, _ = chunk_linear_rnn(q, k, v, log_decay=decay)
        return self.out(o.flatten(-2))  # type: ignore[no-any-return]


class Wider(Chunked):
    """The same outputs with twice the state: not a twin."""

    def init_state(self, batch: int) -> tuple[Tensor, ...]:
        return (*super().init_state(batch), *super().init_state(batch))


def test_the_same_function_written_two_ways_has_the_same_probe() -> None:
    chunked, stepped = probe_mixer(Chunked), probe_mixer(Stepped)
    assert chunked.dtype == stepped.dtype == "float64"
    assert chunked.matches(stepped) and stepped.matches(chunked)
    assert chunked.values != stepped.values  # not bit-identical: the tolerance does it


def test_a_baseline_chunked_differently_is_its_own_twin() -> None:
    assert probe_mixer(BASELINES["deltanet"], {"chunk_size": 8}).matches(
        probe_mixer(BASELINES["deltanet"])
    )


def test_code_that_runs_only_in_float32_is_probed_there_and_still_matches() -> None:
    probe = probe_mixer(Float32Only)
    assert probe.dtype == "float32"
    assert probe.matches(probe_mixer(Chunked))


@pytest.mark.parametrize(
    "changed",
    [Decayed, WithZeroBranch, Wider, lambda d, h: Chunked(d, h, detach_keys=True)],
    ids=["decay", "zero-initialised-branch", "more-state", "detached-keys"],
)
def test_a_real_change_has_another_probe(changed: type[nn.Module]) -> None:
    assert not probe_mixer(changed).matches(probe_mixer(Chunked))


def test_the_baselines_are_six_distinct_functions() -> None:
    probes = [probe_mixer(cls) for cls in BASELINES.values()]
    for i, probe in enumerate(probes):
        assert [probe.matches(other) for other in probes] == [j == i for j in range(len(probes))]


def test_float_noise_stays_under_the_tolerance_and_a_real_gap_does_not() -> None:
    base = Probe((0.5, -1.25, 2.0), 64, "float64")

    def moved(rel: float, dtype: str = "float64") -> Probe:
        return Probe(tuple(v + rel * 2.0 for v in base.values), 64, dtype)

    assert base.matches(moved(1e-9)) and not base.matches(moved(1e-4))
    assert base.matches(moved(1e-4, "float32"))  # float32 noise is larger: so is its tolerance
    assert not base.matches(moved(1e-2, "float32"))
    assert not base.matches(dataclasses.replace(base, state_floats=65))


def test_probes_survive_json_and_garbage_reads_as_none() -> None:
    probe = probe_mixer(Chunked)
    again = Probe.from_json(probe.to_json())
    assert again is not None and again.matches(probe)
    junks: list[object] = [
        None,
        [],
        {"values": [1.0]},
        {"values": ["x"], "state_floats": 1, "dtype": "float64"},
        {"values": [math.inf], "state_floats": 1, "dtype": "float64"},
    ]
    for junk in junks:
        assert Probe.from_json(junk) is None
    known = [("a (c1)", probe_mixer(Decayed)), ("b (c2)", probe)]
    assert find_twin(probe_mixer(Stepped), known) == "b (c2)"
    assert find_twin(probe_mixer(Wider), known) is None


TWIN_SOURCE = '''
import torch
from torch import nn
from kernels.ops import chunk_linear_rnn, linear_rnn_step


class Mixer(nn.Module):
    """Chunked linear attention under other names."""

    def __init__(self, d_model, n_heads):
        super().__init__()
        self.heads, self.width = n_heads, d_model // n_heads
        self.project_in = nn.Linear(d_model, 3 * d_model, bias=False)
        self.project_out = nn.Linear(d_model, d_model, bias=False)

    def _qkv(self, x):
        return self.project_in(x).unflatten(-1, (3, self.heads, self.width)).unbind(-3)

    def forward(self, x):
        o, _ = chunk_linear_rnn(*self._qkv(x), chunk_size=16)
        return self.project_out(o.flatten(-2))

    def init_state(self, batch):
        w = self.project_out.weight
        return (w.new_zeros(batch, self.heads, self.width, self.width),)

    def step(self, x_t, state):
        o, memory = linear_rnn_step(*self._qkv(x_t), state[0])
        return self.project_out(o.flatten(-2)), (memory,)
'''


def test_the_engineer_stops_a_behaviour_twin_before_training(tmp_path: Path) -> None:
    module = types.ModuleType("twin")
    exec(TWIN_SOURCE, module.__dict__)  # trusted test code: the probe the archive would hold
    assert probe_mixer(module.Mixer).matches(probe_mixer(Chunked))
    job = ExperimentJob(
        experiment_id="e1",
        code=TWIN_SOURCE,
        task=MQARSpec.quick(),
        train=TrainConfig.quick().with_steps(2),
        seed=0,
        heldout_seed=1,
        screen=ScreenConfig(cost_lengths=(32, 128), cost_repeats=1, max_cost_ratio=None),
        twins=(("decayed (c1)", probe_mixer(Decayed)), ("chunked (c2)", probe_mixer(Chunked))),
    )
    result = Engineer(tmp_path / "ws", Limits(wall_s=120)).run(job)
    assert result.failure is FailureClass.BEHAVIOUR_TWIN, result.message
    assert "chunked (c2)" in result.message and "decayed" not in result.message
    assert result.screen["failure"] == "behaviour_twin"
    assert result.screen["checks"][-1]["name"] == "behaviour_twin"
    assert Probe.from_json(result.screen["probe"]) is not None
    assert not result.train and "worker_train_s" not in result.timings  # never trained
