"""One GPU check of every fast path, sized to finish in under 10 minutes on an H100/H200.

Run through scripts/gpu_check.sh (which unpacks fla from carried wheels when missing).
Everything shares one TRITON_CACHE_DIR, and the sections stop at --budget seconds.
Sections, each a group of rows in one printed table (and JSON with --json):

1. start-up: a fresh process builds the exploration model and runs one training step,
   twice with the same TRITON_CACHE_DIR (autotuning cached too): the first pays for
   compiling and autotuning, the second shows what the kept cache saves;
2. agreement: each linear-RNN form on its fast path (fla) against the plain-torch
   reference (outputs, final state, every gradient; relative error, bf16 as training
   runs it, fp32 too with --fla-fp32; B=2 T=1000 H=4 D=32), and our Triton FIR kernel
   against F.conv1d in float64 (B=4 T=1000 C=250; 4, 31 and 64 taps in bf16, 31 in fp32);
3. speed, forward+backward at the exploration shape: linear RNN B=32 T=2048 H=8 D=32 in
   bf16 (fast path as training dispatches it, fla's forward alone, the fp32 reference,
   and causal softmax attention through SDPA), FIR B=32 T=2048 C=256 in bf16 against the
   reference conv (kernels.conv1d);
4. training: the exploration preset (8 blocks of width 320 with a SwiGLU MLP, 5 heads of
   64, context 2048, batch 16, vocabulary 32,000: about 20 M parameters) on a
   random-token shard, DeltaNet and Gated DeltaNet: tokens/s after the warm-up, first
   step, peak memory; then one experiment of that preset through the node's own path at
   reduced steps (--e2e-steps): sandboxed screening and training on the leased GPU,
   export, and the trusted evaluator on the same GPU over the preset's whole held-out
   split (4,194,304 tokens): tokens/s, peak training and evaluation memory, export and
   evaluation seconds. The sandbox runs without namespaces here (`--isolate` to use
   them, which needs the checkout readable by the sandbox user).

--cpu-smoke runs every code path at tiny sizes on the CPU (the FIR kernel through the
Triton interpreter, fla rows skipped) so that import and argument errors show up before
the GPU is lent. Exit status 1 when an agreement check fails its bound.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

PROCESS_START = time.perf_counter()
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runs from a plain checkout, where asi-node is not installed

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor  # noqa: E402

FORMS = {  # name -> (has_beta, has_decay)
    "linear": (False, False),
    "decayed": (False, True),
    "delta": (True, False),
    "gated_delta": (True, True),
}


@dataclass
class Row:
    section: str
    name: str
    backend: str
    value: float | None
    unit: str
    bound: float | None = None
    note: str = ""

    @property
    def failed(self) -> bool:
        return self.bound is not None and (self.value is None or not self.value <= self.bound)


@dataclass(frozen=True)
class Sizes:
    device: str
    check: tuple[int, int, int, int]  # B, T, H, D for agreement
    speed: tuple[int, int, int, int]  # B, T, H, D for timing
    fir_check: tuple[int, int, int]  # B, T, C
    fir_speed: tuple[int, int, int]
    train_batch: int
    train_steps: tuple[int, int]  # DeltaNet, Gated DeltaNet
    iters: int

    @classmethod
    def gpu(cls) -> Sizes:
        return cls(
            "cuda", (2, 1000, 4, 32), (32, 2048, 8, 32), (4, 1000, 250), (32, 2048, 256),
            16, (30, 6), 20,
        )  # fmt: skip

    @classmethod
    def smoke(cls) -> Sizes:
        return cls("cpu", (1, 40, 2, 8), (1, 64, 2, 8), (1, 9, 5), (1, 16, 6), 2, (3, 2), 2)


def rel_error(actual: Tensor, expected: Tensor) -> float:
    expected = expected.detach().double()
    diff = actual.detach().double() - expected
    return float(diff.norm() / expected.norm().clamp_min(1e-30))


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def bench_ms(fn: Callable[[], object], device: str, iters: int, warmup: int = 3) -> float:
    """Median wall time of one call in milliseconds, after `warmup` calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def startup_probe(smoke: bool) -> dict[str, float]:
    """Child mode: build the exploration model and run one training step; print timings."""
    imported = time.perf_counter()
    from kernels.baselines import DeltaNet
    from loop.model import Backbone
    from loop.train import TrainConfig
    from loop.train_device import DeviceConfig, train_on_device

    with tempfile.TemporaryDirectory() as tmp:
        preset, device = _training_preset(Path(tmp), smoke, batch=2 if smoke else 16)
        config = TrainConfig(steps=1, abort_step=None, threads=2)
        model = Backbone(DeltaNet, preset.model, seed=0)
        built = time.perf_counter()
        _, speed = train_on_device(model, preset.spec, config, DeviceConfig(device, "bf16"))
    return {
        "import_s": imported - PROCESS_START,
        "build_s": built - imported,
        "first_step_s": speed.first_step_s,
        "total_s": time.perf_counter() - PROCESS_START,
    }


def section_startup(sizes: Sizes, cache: Path, smoke: bool, deadline: float) -> list[Row]:
    """Two fresh processes on one cache dir; the first finds it empty (unless --cache-dir)."""
    rows = []
    env = dict(os.environ, TRITON_CACHE_DIR=str(cache), TRITON_CACHE_AUTOTUNING="1")
    # Leave time for the later sections (about 120 s of it for the e2e experiment at the
    # end): the cold probe may use what they do not need.
    for run, reserve in (("cold cache", 290.0), ("kept cache", 260.0)):
        timeout_s = max(10.0, deadline - time.perf_counter() - reserve)
        command = [sys.executable, str(Path(__file__).resolve()), "--startup-probe"]
        command += ["--cpu-smoke"] if smoke else []
        started = time.perf_counter()
        try:
            done = subprocess.run(
                command, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired:
            # The cache keeps what was compiled before the cut; the next run goes on from it.
            rows.append(Row("start-up", run, "-", None, "s", note=f"over {timeout_s:.0f} s"))
            continue
        wall = time.perf_counter() - started
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["?"]
            rows.append(Row("start-up", run, "-", None, "s", note=f"failed: {tail[0][:80]}"))
            break
        probe = json.loads(done.stdout.strip().splitlines()[-1])
        note = f"import {probe['import_s']:.1f}s, first step {probe['first_step_s']:.1f}s"
        rows.append(
            Row("start-up", f"{run}: process to first step", "model", wall, "s", None, note)
        )
    return rows


def _rnn_inputs(shape: tuple[int, int, int, int], form: str, device: str) -> dict[str, Tensor]:
    batch, length, heads, dim = shape
    has_beta, has_decay = FORMS[form]
    g = torch.Generator(device=device).manual_seed(11)

    def rand(*s: int) -> Tensor:
        return torch.randn(*s, device=device, generator=g)

    inputs = {
        "q": F.normalize(rand(batch, length, heads, dim), dim=-1),
        "k": F.normalize(rand(batch, length, heads, dim), dim=-1),
        "v": rand(batch, length, heads, dim),
    }
    if has_beta:
        inputs["beta"] = torch.sigmoid(rand(batch, length, heads))
    if has_decay:
        inputs["log_decay"] = F.logsigmoid(rand(batch, length, heads) + 4.0)
    return inputs


def _run_rnn(
    fn: Callable[..., tuple[Tensor, Tensor]],
    inputs: dict[str, Tensor],
    dtype: torch.dtype,
    upstream: tuple[Tensor, Tensor] | None,
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """Outputs and (with `upstream`) gradients; decays stay float32 as the models keep them."""
    leaves = {
        n: t.detach().to(torch.float32 if n == "log_decay" else dtype).requires_grad_()
        for n, t in inputs.items()
    }
    extra = {n: leaves[n] for n in ("beta", "log_decay") if n in leaves}
    if upstream is None:
        with torch.no_grad():
            o, state = fn(leaves["q"], leaves["k"], leaves["v"], **extra)
        return o, state, {}
    o, state = fn(leaves["q"], leaves["k"], leaves["v"], **extra)
    loss = (o.float() * upstream[0]).sum() + (state.float() * upstream[1]).sum()
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return o, state, dict(zip(leaves, grads, strict=True))


def section_agreement_rnn(sizes: Sizes, fp32: bool) -> list[Row]:
    from kernels import dispatch
    from kernels.linear_rnn.chunk import chunk_linear_rnn as reference

    rows: list[Row] = []
    device = sizes.device
    platform = dispatch.probe_platform(torch.device(device))
    fla_ok = platform.device_type == "cuda" and platform.fla
    for form, (_, has_decay) in FORMS.items():
        inputs = _rnn_inputs(sizes.check, form, device)
        batch, length, heads, dim = sizes.check
        g = torch.Generator(device=device).manual_seed(5)
        up = (
            torch.randn(batch, length, heads, dim, device=device, generator=g),
            torch.randn(batch, heads, dim, dim, device=device, generator=g),
        )
        ref_o, ref_s, ref_g = _run_rnn(reference, inputs, torch.float32, up)
        if not fla_ok:
            rows.append(
                Row("agree", f"rnn {form}", "fla", None, "rel", note="skipped: no fla/CUDA")
            )
            # Still exercise the dispatcher's own path (the reference here) end to end.
            o, _, grads = _run_rnn(dispatch.chunk_linear_rnn, inputs, torch.bfloat16, up)
            err = max(rel_error(o, ref_o), *(rel_error(grads[n], ref_g[n]) for n in grads))
            rows.append(Row("agree", f"rnn {form} bf16 dispatch", "reference", err, "rel", 5e-2))
            continue
        from kernels.fla_ops import fla_linear_rnn

        has_beta = FORMS[form][0]
        dim = sizes.check[3]
        # Training runs fla in bf16; fp32 variants are more kernels to compile (--fla-fp32).
        dtypes = ((torch.float32, 5e-3),) if fp32 else ()
        for dtype, bound in (*dtypes, (torch.bfloat16, 5e-2)):
            tag = "fp32" if dtype == torch.float32 else "bf16"

            forward, backward = (
                dispatch.choose_linear_rnn(
                    platform, dtype=dtype, has_beta=has_beta, has_decay=has_decay,
                    needs_grad=grad, k_dim=dim, v_dim=dim,
                )
                for grad in (False, True)
            )  # fmt: skip
            if forward.backend != "fla":
                rows.append(Row("agree", f"rnn {form} {tag}", "reference", None, "rel",
                                note=f"no fla path: {forward.reason}"))  # fmt: skip
                continue
            with_grads = backward.backend == "fla"
            o, s, grads = _run_rnn(fla_linear_rnn, inputs, dtype, up if with_grads else None)
            rows.append(
                Row("agree", f"rnn {form} {tag} o", "fla", rel_error(o, ref_o), "rel", bound)
            )
            rows.append(
                Row("agree", f"rnn {form} {tag} S_T", "fla", rel_error(s, ref_s), "rel", bound)
            )
            if not with_grads:
                rows.append(Row("agree", f"rnn {form} {tag} grads", "reference", None, "rel",
                                note=f"training falls back: {backward.reason}"[:120]))  # fmt: skip
                continue
            worst = max(grads, key=lambda n: rel_error(grads[n], ref_g[n]))
            err = rel_error(grads[worst], ref_g[worst])
            rows.append(
                Row("agree", f"rnn {form} {tag} grads", "fla", err, "rel", bound, f"worst d{worst}")
            )
    return rows


def section_agreement_fir(sizes: Sizes) -> list[Row]:
    from kernels.fir.triton import causal_fir_triton

    rows = []
    batch, length, channels = sizes.fir_check
    device = sizes.device
    checks = [(4, torch.bfloat16), (31, torch.float32), (31, torch.bfloat16), (64, torch.bfloat16)]
    for taps, dtype in checks:
        bound = 1e-5 if dtype == torch.float32 else 1e-2
        g = torch.Generator(device=device).manual_seed(taps)
        x = torch.randn(batch, length, channels, device=device, generator=g)
        w = torch.randn(channels, taps, device=device, generator=g) / taps**0.5
        b = torch.randn(channels, device=device, generator=g)
        up = torch.randn(batch, length, channels, device=device, generator=g)
        xs = x.to(dtype).requires_grad_()
        ws, bs = w.clone().requires_grad_(), b.clone().requires_grad_()
        y = causal_fir_triton(xs, ws, bs)
        got = (y, *torch.autograd.grad(y, (xs, ws, bs), up.to(dtype)))
        x64, w64, b64 = (t.detach().double().requires_grad_() for t in (xs, ws, bs))
        ref = F.conv1d(
            F.pad(x64.transpose(1, 2), (taps - 1, 0)), w64[:, None], b64, groups=channels
        )
        ref = ref.transpose(1, 2)
        want = (ref, *torch.autograd.grad(ref, (x64, w64, b64), up.to(dtype).double()))
        err = max(rel_error(a, c) for a, c in zip(got, want, strict=True))
        tag = "fp32" if dtype == torch.float32 else "bf16"
        rows.append(Row("agree", f"fir {taps} taps {tag} y,dx,dw,db", "triton", err, "rel", bound))
    return rows


def section_speed(sizes: Sizes) -> list[Row]:
    from kernels import dispatch
    from kernels.linear_rnn.chunk import chunk_linear_rnn as reference

    rows: list[Row] = []
    device, iters = sizes.device, sizes.iters
    platform = dispatch.probe_platform(torch.device(device))
    batch, length, heads, dim = sizes.speed
    shape = f"B{batch} T{length} H{heads} D{dim}"

    def fwd_bwd(fn: Callable[..., tuple[Tensor, Tensor]], dtype: torch.dtype, form: str) -> float:
        inputs = _rnn_inputs(sizes.speed, form, device)
        leaves = {
            n: t.to(torch.float32 if n == "log_decay" else dtype).requires_grad_()
            for n, t in inputs.items()
        }
        up = torch.randn_like(leaves["v"])
        extra = {n: leaves[n] for n in ("beta", "log_decay") if n in leaves}

        def step() -> None:
            for t in leaves.values():
                t.grad = None
            o, _ = fn(leaves["q"], leaves["k"], leaves["v"], **extra)
            o.backward(up)  # type: ignore[no-untyped-call]

        return bench_ms(step, device, iters)

    for form, (has_beta, has_decay) in FORMS.items():
        choice = dispatch.choose_linear_rnn(
            platform, dtype=torch.bfloat16, has_beta=has_beta, has_decay=has_decay,
            needs_grad=True, k_dim=dim, v_dim=dim,
        )  # fmt: skip
        fast = fwd_bwd(dispatch.chunk_linear_rnn, torch.bfloat16, form)
        ref = fwd_bwd(reference, torch.float32, form)
        rows.append(
            Row("speed", f"rnn {form} fwd+bwd bf16 {shape}", choice.backend, fast, "ms",
                note=f"{ref / fast:.1f}x vs reference fp32 ({ref:.2f} ms)")
        )  # fmt: skip
        if platform.device_type == "cuda" and platform.fla:
            from kernels.fla_ops import fla_linear_rnn

            inputs = _rnn_inputs(sizes.speed, form, device)
            cast = {n: t if n == "log_decay" else t.bfloat16() for n, t in inputs.items()}

            def forward(c: dict[str, Tensor] = cast) -> None:
                fla_linear_rnn(
                    c["q"], c["k"], c["v"], beta=c.get("beta"), log_decay=c.get("log_decay")
                )

            with torch.no_grad():
                fwd = bench_ms(forward, device, iters)
            rows.append(Row("speed", f"rnn {form} fwd only bf16", "fla", fwd, "ms"))

    q, k, v = (
        torch.randn(batch, heads, length, dim, device=device, dtype=torch.bfloat16).requires_grad_()
        for _ in range(3)
    )
    up = torch.randn_like(q)

    def sdpa() -> None:
        for t in (q, k, v):
            t.grad = None
        F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(up)  # type: ignore[no-untyped-call]

    rows.append(Row("speed", f"softmax attention (SDPA causal) fwd+bwd bf16 {shape}", "sdpa",
                    bench_ms(sdpa, device, iters), "ms"))  # fmt: skip

    for taps in (4, 31, 64):
        rows += _fir_speed(sizes, taps)
    return rows


def _fir_speed(sizes: Sizes, taps: int) -> list[Row]:
    """Our FIR kernel (as kernels.ops dispatches it) against the reference conv, bf16 autocast."""
    from kernels import dispatch
    from kernels.conv1d.conv import causal_conv1d as reference_conv1d

    device, iters = sizes.device, sizes.iters
    platform = dispatch.probe_platform(torch.device(device))
    fb, ft, fc = sizes.fir_speed
    x = torch.randn(fb, ft, fc, device=device, dtype=torch.bfloat16).requires_grad_()
    w = (torch.randn(fc, taps, device=device) / taps**0.5).requires_grad_()
    up = torch.randn_like(x)
    choice = dispatch.choose_fir(platform, dtypes=(x.dtype, w.dtype), taps=taps)

    def fast_fn() -> Tensor:
        with torch.autocast(device, dtype=torch.bfloat16):  # both run as inside the model
            return dispatch.causal_conv1d(x, w)

    def ref_fn() -> Tensor:
        with torch.autocast(device, dtype=torch.bfloat16):  # how the model runs the reference
            return reference_conv1d(x, w)

    def train_step(fn: Callable[[], Tensor]) -> Callable[[], None]:
        def step() -> None:
            x.grad = w.grad = None
            fn().backward(up)  # type: ignore[no-untyped-call]

        return step

    fast = bench_ms(train_step(fast_fn), device, iters)
    ref = bench_ms(train_step(ref_fn), device, iters)
    with torch.no_grad():
        fwd_fast = bench_ms(fast_fn, device, iters)
        fwd_ref = bench_ms(ref_fn, device, iters)
    return [
        Row("speed", f"fir {taps} taps fwd+bwd bf16 B{fb} T{ft} C{fc}", choice.backend, fast,
            "ms", note=f"{ref / fast:.1f}x vs the reference conv ({ref:.3f} ms)"),
        Row("speed", f"fir {taps} taps fwd only bf16", choice.backend, fwd_fast, "ms",
            note=f"{fwd_ref / fwd_fast:.1f}x vs the reference conv ({fwd_ref:.3f} ms)"),
    ]  # fmt: skip


def _training_preset(
    tmp: Path, smoke: bool, batch: int, train_tokens: int | None = None
) -> tuple[Any, str]:
    """The exploration preset on a random-token shard, or (smoke) a tiny one on bytes."""
    from loop.model import BackboneConfig, swiglu_hidden
    from loop.tasks.shards import generated_shard
    from loop.train_device import (
        EXPLORATION_TRAIN_TOKENS,
        EXPLORATION_VOCAB,
        ExplorationPreset,
        exploration_preset,
    )

    tokens = train_tokens or EXPLORATION_TRAIN_TOKENS
    if smoke:
        path = tmp / "bytes.npy"
        generated_shard(path, n_tokens=65_536)
        preset = exploration_preset(
            str(path), vocab_size=256, seq_len=64, batch_size=batch, train_tokens=tokens,
            heldout_tokens=64 * 16,
        )  # fmt: skip
        tiny = BackboneConfig(
            vocab_size=256, d_model=32, n_layers=2, n_heads=2, mlp_hidden=swiglu_hidden(32)
        )
        return ExplorationPreset(preset.spec, tiny, preset.train), "cpu"
    path = tmp / "random.npy"
    rng = np.random.default_rng(0)
    np.save(path, rng.integers(0, EXPLORATION_VOCAB, size=8_000_000, dtype=np.uint16))
    return exploration_preset(str(path), batch_size=batch, train_tokens=tokens), "cuda"


def section_training(sizes: Sizes, smoke: bool) -> list[Row]:
    from kernels.baselines import DeltaNet, GatedDeltaNet
    from loop.model import Backbone
    from loop.train import TrainConfig
    from loop.train_device import DeviceConfig, count_parameters, train_on_device

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        preset, device = _training_preset(Path(tmp), smoke, sizes.train_batch)
        for mixer, steps in zip((DeltaNet, GatedDeltaNet), sizes.train_steps, strict=True):
            model = Backbone(mixer, preset.model, seed=0)
            params = count_parameters(model)
            config = TrainConfig(steps=steps, lr=2e-3, abort_step=None, log_every=steps, threads=2)
            dc = DeviceConfig(device, "bf16", warmup_steps=min(3, steps - 1))
            log, speed = train_on_device(model, preset.spec, config, dc)
            per_step = sizes.train_batch * preset.spec.seq_len
            rate = speed.steady_tokens_per_s or speed.tokens_per_s
            memory = (
                ""
                if speed.peak_memory_bytes is None
                else f", peak {speed.peak_memory_bytes / 2**30:.1f} GiB"
            )
            rows.append(
                Row("train", f"{mixer.__name__} {params / 1e6:.1f}M params tokens/s", "bf16", rate,
                    "tok/s", note=f"{per_step / rate * 1e3:.0f} ms/step, first step "
                    f"{speed.first_step_s:.1f}s, loss {log.final_loss:.2f}{memory}")
            )  # fmt: skip
            del model
            if device == "cuda":
                torch.cuda.empty_cache()
    return rows


def section_e2e(
    sizes: Sizes, smoke: bool, cache: Path, deadline: float, steps: int, isolate: bool
) -> list[Row]:
    """One DeltaNet experiment of the exploration preset through loop.engineer: sandboxed
    screen and training on the leased device, export, sandboxed evaluation there. When
    time is left, a second one trains in the standby sandbox the first started (its
    imports done while the first exported): the time outside training of each."""
    from loop.devices import DevicePool
    from loop.engineer import Engineer, ExperimentJob
    from loop.sandbox import Limits
    from loop.screen import ScreenConfig

    rows: list[Row] = []
    batch = sizes.train_batch
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        seq_len = 64 if smoke else 2048
        preset, device = _training_preset(Path(tmp), smoke, batch, steps * batch * seq_len)
        threads = 2 if smoke else 4
        job = ExperimentJob(
            experiment_id="gpu-check-e2e",
            code="from kernels.baselines import DeltaNet as Mixer\n",
            task=preset.spec,
            train=dataclasses.replace(preset.train, threads=threads, abort_step=None),
            seed=0,
            heldout_seed=1,
            backbone=preset.model,
            screen=ScreenConfig(max_cost_ratio=None),
        )
        # The sandbox's environment is clean: hand on PYTHONPATH so that fla unpacked from
        # carried wheels (gpu_check.sh) is importable there too.
        paths = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(":"))]
        limits = Limits(
            wall_s=max(30.0, deadline - time.perf_counter() - 5.0),
            cpu_s=100_000,
            address_space_bytes=None,  # the CUDA driver reserves huge virtual ranges
            max_processes=4096,
            threads=threads,
            isolate=isolate,
            shared_cache=cache,
            extra_env={
                "PYTHONPATH": ":".join(dict.fromkeys(paths)),
                "TRITON_CACHE_AUTOTUNING": "1",
            },
        )
        pool = DevicePool([0]) if device == "cuda" else None
        engineer = Engineer(Path(tmp) / "ws", limits, devices=pool, standby=True)
        try:
            result = engineer.run(job)
            first_s = time.perf_counter() - began
            second = None
            if result.failure is None and deadline - time.perf_counter() > 2 * first_s:
                second = engineer.run(dataclasses.replace(job, experiment_id="gpu-check-e2e-2"))
        finally:
            engineer.close()
    if result.failure is not None:
        note = f"{result.failure}: {result.message}".replace("\n", " ")[-150:]
        return [Row("train", "exploration e2e: sandbox -> export -> evaluate", "-", None, "",
                    0.0, note)]  # fmt: skip
    m, t = result.metrics, result.timings
    params = f"{m['params'] / 1e6:.2f}M params ({m['params_embedding'] / 1e6:.2f}M embedding)"
    rows.append(Row("train", "exploration e2e: training tokens/s", device, m.get("tokens_per_s"),
                    "tok/s", note=f"{int(m['tokens_seen']):,} tokens, {params}"))  # fmt: skip
    for key, what in (
        ("peak_gpu_memory_bytes", "training"),
        ("eval_peak_gpu_memory_bytes", "eval"),
    ):
        if key in m:
            rows.append(Row("train", f"exploration e2e: peak {what} memory", device,
                            m[key] / 2**30, "GiB"))  # fmt: skip
    rows.append(Row("train", "exploration e2e: export", "cpu", t.get("export_s"), "s"))
    heldout = f"{int(m['heldout_tokens']):,} held-out tokens, loss {m['heldout_loss']:.3f}"
    rows.append(Row("train", "exploration e2e: evaluation", device, m.get("eval_seconds"), "s",
                    note=f"{heldout}; sandbox {t.get('sandbox_eval_s', 0.0):.1f} s"))  # fmt: skip
    held = f"GPU held {t['gpu_s']:.1f} s" if "gpu_s" in t else ""
    rows.append(Row("train", "exploration e2e: whole experiment", device, t.get("total_s"), "s",
                    note=held))  # fmt: skip
    rows.append(_outside_training("fresh sandbox", t, device))
    if second is not None and second.failure is None:
        lead = second.timings.get("train_started_ahead_s")
        note = "no standby was taken" if lead is None else f"standby started {lead:.1f} s ahead"
        rows.append(_outside_training("in a standby", second.timings, device, note))
    return rows


def _outside_training(how: str, t: Mapping[str, float], device: str, note: str = "") -> Row:
    """An experiment's seconds outside its training loop (sandbox start, load, screen,
    export, evaluation), as scripts/bench_overhead.py counts them."""
    outside = t.get("total_s", 0.0) - t.get("train_s", 0.0)
    return Row("train", f"exploration e2e: outside training, {how}", device, outside, "s",
               note=note)  # fmt: skip


def environment(sizes: Sizes) -> list[str]:
    from kernels import dispatch

    platform = dispatch.probe_platform(torch.device(sizes.device))
    lines = [f"torch {torch.__version__}", f"platform {asdict(platform)}"]
    if sizes.device == "cuda":
        lines.append(
            f"device {torch.cuda.get_device_name()} cc {torch.cuda.get_device_capability()}"
        )
        lines.append(
            f"fla gated backward refused here: {dispatch.gated_backward_refused(platform)}"
        )
    return lines


HEADER = (
    f"{'section':<9} {'check':<60} {'backend':<10} {'value':>12} {'unit':<6} {'bound':>8}  note"
)


def format_row(r: Row) -> str:
    value = "-" if r.value is None else f"{r.value:.4g}"
    bound = "" if r.bound is None else f"{r.bound:.0e}"
    cells = f"{r.section:<9} {r.name:<60} {r.backend:<10} {value:>12} {r.unit:<6} {bound:>8}"
    return f"{cells}  {'FAIL ' if r.failed else ''}{r.note}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU")
    parser.add_argument("--startup-probe", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--skip", nargs="*", default=[], choices=["startup", "agree", "speed", "train", "e2e"]
    )
    parser.add_argument("--e2e-steps", type=int, default=40, help="training steps of the e2e run")
    parser.add_argument("--isolate", action="store_true", help="e2e sandbox with namespaces")
    parser.add_argument("--fla-fp32", action="store_true", help="also check fla in float32")
    parser.add_argument("--budget", type=float, default=550.0, help="seconds for the whole run")
    parser.add_argument("--cache-dir", type=Path, default=None, help="TRITON_CACHE_DIR to use")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)

    if args.cpu_smoke:
        # The FIR kernel runs under the interpreter on the CPU; must precede importing triton.
        os.environ["TRITON_INTERPRET"] = "1"
    if args.startup_probe:
        print(json.dumps(startup_probe(args.cpu_smoke)))
        return 0
    sizes = Sizes.smoke() if args.cpu_smoke else Sizes.gpu()
    if sizes.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run with --cpu-smoke for the CPU dry run", file=sys.stderr)
        return 2
    cache = args.cache_dir or Path(tempfile.mkdtemp(prefix="triton-cache-"))
    cache.mkdir(parents=True, exist_ok=True)
    os.environ["TRITON_CACHE_DIR"] = str(cache)
    os.environ["TRITON_CACHE_AUTOTUNING"] = "1"

    deadline = PROCESS_START + args.budget
    for line in environment(sizes):
        print(line)
    sections: list[tuple[str, Callable[[], list[Row]]]] = [
        ("startup", lambda: section_startup(sizes, cache, args.cpu_smoke, deadline)),
        (
            "agree",
            lambda: section_agreement_rnn(sizes, args.fla_fp32) + section_agreement_fir(sizes),
        ),
        ("speed", lambda: section_speed(sizes)),
        ("train", lambda: section_training(sizes, args.cpu_smoke)),
        (
            "e2e",
            lambda: section_e2e(
                sizes,
                args.cpu_smoke,
                cache,
                deadline,
                3 if args.cpu_smoke else args.e2e_steps,
                args.isolate,
            ),
        ),
    ]
    rows: list[Row] = []
    print(HEADER, flush=True)  # rows print as they come: a killed run still shows its rows
    for name, run in sections:
        if name in args.skip:
            continue
        started = time.perf_counter()
        if deadline - started < 30:
            new = [Row(name, "section skipped", "-", None, "", note="out of time budget")]
        else:
            try:
                new = run()
            except Exception as exc:  # one broken section must not hide the others' rows
                note = f"{type(exc).__name__}: {exc}"[:160]
                new = [Row(name, "section crashed", "-", None, "", 0.0, note)]
        rows += new
        for row in new:
            print(format_row(row), flush=True)
        print(f"[{name}: {time.perf_counter() - started:.1f} s]", flush=True)
        if args.json is not None:
            args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1))
    failed = [r for r in rows if r.failed]
    print(f"total {time.perf_counter() - PROCESS_START:.1f} s, {len(failed)} check(s) failed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
