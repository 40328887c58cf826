"""Training on a device: bf16 autocast, tokens/s, memory-mapped shards, GPU leases.

The device path runs here on the CPU (autocast in bfloat16 works there too) at tiny size
on a generated shard; the exploration-scale run is in scripts/gpu_check.sh.
"""

from __future__ import annotations

import dataclasses
import json
import math
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from kernels.baselines import DeltaNet
from loop.devices import DevicePool, sandbox_gpu_env
from loop.engineer import Engineer
from loop.model import Backbone, BackboneConfig
from loop.sandbox import Limits
from loop.tasks import LMSpec
from loop.tasks.shards import generated_shard
from loop.train import TrainConfig
from loop.train_device import (
    DeviceConfig,
    count_parameters,
    exploration_preset,
    steps_for_tokens,
    train_on_device,
)
from loop.worker import JOB_FILE, run_job, train_job

TINY = BackboneConfig(vocab_size=256, d_model=32, n_layers=2, n_heads=2)


@pytest.fixture(scope="module")
def shard(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("shards") / "generated.npy"
    generated_shard(path, n_tokens=65_536, seed=3)
    return path


def tiny_spec(shard: Path) -> LMSpec:
    return LMSpec(data_path=str(shard), batch_size=4, seq_len=64, heldout_windows=16)


def test_generated_shard_is_read_memory_mapped_as_the_lm_stream(shard: Path) -> None:
    array = np.load(shard, mmap_mode="r")
    assert isinstance(array, np.memmap) and array.dtype == np.uint16 and array.size == 65_536
    batch = tiny_spec(shard).train_batch(0, seed=0)
    assert batch.tokens.shape == (4, 64) and int(batch.tokens.max()) < 256
    assert torch.equal(batch.tokens[:, 1:], batch.targets[:, :-1])


def test_bf16_training_on_the_cpu_learns_and_reports_tokens_per_second(shard: Path) -> None:
    model = Backbone(DeltaNet, TINY, seed=0)
    config = TrainConfig(steps=12, lr=1e-2, abort_step=None, log_every=4, threads=1)
    log, speed = train_on_device(model, tiny_spec(shard), config, DeviceConfig("cpu", "bf16"))
    assert log.steps_done == 12 and log.stop_reason is None
    first, last = log.loss_curve[0][1], log.loss_curve[-1][1]
    assert math.isfinite(last) and last < first < math.log(256) + 0.5
    assert speed.tokens == 12 * 4 * 64 and speed.steps == 12
    assert speed.tokens_per_s > 0 and speed.steady_tokens_per_s is not None
    assert 0 < speed.first_step_s < speed.seconds
    assert speed.amp == "bf16" and speed.device == "cpu" and speed.peak_memory_bytes is None
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast, not casting


def test_device_training_stops_when_the_caller_says_so(shard: Path) -> None:
    model = Backbone(DeltaNet, TINY, seed=0)
    config = TrainConfig(steps=50, abort_step=None, threads=1)
    log, speed = train_on_device(
        model, tiny_spec(shard), config, DeviceConfig("cpu", "off"), on_step=lambda s, _: s < 3
    )
    assert log.steps_done == 3 and str(log.stop_reason) == "interrupted"
    assert speed.tokens == 3 * 4 * 64


def test_bad_device_strings_are_rejected() -> None:
    with pytest.raises(ValueError, match="not a torch device"):
        DeviceConfig("gpu0")
    with pytest.raises(ValueError, match="warmup_steps"):
        DeviceConfig("cpu", warmup_steps=-1)


def test_exploration_preset_is_about_twenty_million_parameters(shard: Path) -> None:
    """ASI-Arch's exploration scale: about 20 M parameters at a 32,000-token vocabulary,
    half of them outside the embedding (every block has a SwiGLU MLP), 1 B tokens."""
    preset = exploration_preset(str(shard))
    assert preset.spec.seq_len == 2048 and preset.model.n_layers == 8
    assert preset.model.d_model == 320 and preset.model.n_heads == 5
    assert preset.model.mlp_hidden == 896 and preset.model.tie_embeddings
    with torch.device("meta"):
        model = Backbone(DeltaNet, preset.model)
    embedding, rest = model.parameter_split()
    assert embedding == 32_000 * 320
    assert 9e6 < rest < 11e6 and 19e6 < count_parameters(model) < 22e6
    assert preset.train.steps * preset.spec.batch_size * preset.spec.seq_len >= 1e9
    assert preset.train.steps == steps_for_tokens(10**9, 16, 2048) == 30_518
    assert preset.spec.heldout_tokens >= 4 * 2**20
    small = exploration_preset(str(shard), train_tokens=2**20, heldout_tokens=4096)
    assert small.train.steps == 32 and small.spec.heldout_windows == 2


def test_worker_trains_on_the_requested_device_and_exports_on_the_cpu(
    shard: Path, tmp_path: Path
) -> None:
    code = "from kernels.baselines import DeltaNet as Mixer\n"
    job = train_job(
        code,
        tiny_spec(shard),
        TrainConfig(steps=3, abort_step=None, threads=1),
        backbone=TINY,
        device=DeviceConfig("cpu", "bf16", warmup_steps=1),
    )
    assert json.loads(json.dumps(job))["device"]["amp"] == "bf16"
    (tmp_path / JOB_FILE).write_text(json.dumps(job))
    result = run_job(tmp_path)
    assert result["failure"] is None, result["message"]
    payload = result["payload"]
    assert payload["throughput"]["tokens"] == 3 * 4 * 64
    assert payload["train_log"]["steps_done"] == 3
    assert "manifest" in payload["export"]


def test_device_pool_gives_each_experiment_its_own_gpu() -> None:
    pool = DevicePool([0, 1])
    held: list[int] = []
    overlap = threading.Event()
    lock = threading.Lock()

    def work() -> None:
        with pool.lease() as index:
            with lock:
                if index in held:
                    overlap.set()
                held.append(index)
            time.sleep(0.02)
            with lock:
                held.remove(index)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not overlap.is_set()
    with pool.lease() as a, pool.lease() as b:
        assert {a, b} == {0, 1}
        with pytest.raises(TimeoutError), pool.lease(timeout_s=0.01):
            pass
    with pytest.raises(ValueError, match="distinct"):
        DevicePool([0, 0])


def test_engineer_shows_the_sandbox_only_its_leased_gpu(tmp_path: Path) -> None:
    engineer = Engineer(tmp_path, Limits(isolate=False), devices=DevicePool([3]))
    with engineer._training_device(engineer.limits) as (limits, device):
        assert limits.extra_env["CUDA_VISIBLE_DEVICES"] == "3"
        assert device == DeviceConfig("cuda")
    cpu = Engineer(tmp_path, Limits(isolate=False))
    with cpu._training_device(cpu.limits) as (limits, device):
        assert device is None and "CUDA_VISIBLE_DEVICES" not in limits.extra_env
    assert sandbox_gpu_env(2)["CUDA_VISIBLE_DEVICES"] == "2"
    assert dataclasses.asdict(DeviceConfig())["device"] == "cuda"
