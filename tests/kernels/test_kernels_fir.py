"""The causal FIR convolution: oracle, input checks, the interpreted Triton run, GPU runs.

The Triton kernel's CPU tests live in tests/kernels/interpreted/ and need TRITON_INTERPRET=1
set before Triton is imported, so one test here runs that directory in a subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from kernels.conv1d.conv import causal_conv1d
from kernels.errors import KernelInputError
from kernels.fir.naive import naive_causal_fir

ROOT = Path(__file__).resolve().parents[2]


def rel_error(actual: Tensor, expected: Tensor) -> float:
    return float((actual.float() - expected.float()).norm() / expected.float().norm())


@pytest.mark.parametrize(("t", "c", "w"), [(7, 5, 1), (33, 70, 31), (7, 70, 64), (33, 5, 4)])
def test_oracle_matches_conv1d_outputs_and_gradients(t: int, c: int, w: int) -> None:
    g = torch.Generator().manual_seed(t + c + w)
    x = torch.randn(3, t, c, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(c, w, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(c, generator=g, dtype=torch.float64, requires_grad=True)
    up = torch.randn(3, t, c, generator=g, dtype=torch.float64)
    grads = []
    for fn in (naive_causal_fir, causal_conv1d):
        y = fn(x, weight, bias)
        (gx, gw, gb) = torch.autograd.grad(y, (x, weight, bias), up)
        grads.append((y, gx, gw, gb))
    for a, b in zip(*grads, strict=True):
        assert rel_error(a, b) < 1e-12


def test_oracle_is_causal() -> None:
    x = torch.randn(1, 20, 3)
    weight = torch.randn(3, 8)
    changed = x.clone()
    changed[:, 12:] += 1.0
    assert torch.equal(
        naive_causal_fir(x, weight)[:, :12], naive_causal_fir(changed, weight)[:, :12]
    )


def _fir_triton() -> object:
    pytest.importorskip("triton")
    from kernels.fir import triton as fir_triton

    return fir_triton


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "bias_shape", "dtype", "message"),
    [
        ((2, 7), (7, 4), None, torch.float32, "x must be"),
        ((2, 7, 5), (5,), None, torch.float32, "weight must be"),
        ((2, 0, 5), (5, 4), None, torch.float32, "must not be empty"),
        ((2, 7, 5), (6, 4), None, torch.float32, "channels"),
        ((2, 7, 5), (5, 65), None, torch.float32, "kernel length 65"),
        ((2, 7, 5), (5, 0), None, torch.float32, "kernel length 0"),
        ((2, 7, 5), (5, 4), (4,), torch.float32, "bias must be"),
        ((2, 7, 5), (5, 4), None, torch.float16, "float16"),
        ((2, 7, 5), (5, 4), None, torch.float64, "float64"),
    ],
)
def test_fir_kernel_rejects_bad_input_before_launch(
    x_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    bias_shape: tuple[int, ...] | None,
    dtype: torch.dtype,
    message: str,
) -> None:
    fir_triton = _fir_triton()
    x = torch.zeros(x_shape, dtype=dtype)
    weight = torch.zeros(w_shape, dtype=dtype)
    bias = None if bias_shape is None else torch.zeros(bias_shape, dtype=dtype)
    with pytest.raises(KernelInputError, match=message):
        fir_triton.causal_fir_triton(x, weight, bias)  # type: ignore[attr-defined]


def test_fir_kernel_rejects_cpu_tensors_unless_interpreted() -> None:
    fir_triton = _fir_triton()
    if fir_triton.INTERPRETED:  # type: ignore[attr-defined]
        pytest.skip("this session runs the Triton interpreter, which takes CPU tensors")
    with pytest.raises(KernelInputError, match="needs a CUDA tensor"):
        fir_triton.causal_fir_triton(torch.zeros(1, 4, 2), torch.zeros(2, 3))  # type: ignore[attr-defined]


def test_triton_fir_kernel_matches_oracle_under_the_interpreter() -> None:
    """Runs tests/kernels/interpreted/ with TRITON_INTERPRET=1 (about 15 s on one core)."""
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         str(ROOT / "tests" / "kernels" / "interpreted")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("t", "c", "w"), [(2048, 256, 31), (2048, 256, 64), (1000, 70, 4)])
def test_fir_kernel_matches_conv1d_on_gpu(dtype: torch.dtype, t: int, c: int, w: int) -> None:
    from kernels.fir.triton import causal_fir_triton

    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(4, t, c, device="cuda", generator=g).to(dtype).requires_grad_()
    weight = (torch.randn(c, w, device="cuda", generator=g) / w**0.5).requires_grad_()
    bias = torch.randn(c, device="cuda", generator=g).requires_grad_()
    up = torch.randn(4, t, c, device="cuda", generator=g).to(dtype)
    y = causal_fir_triton(x, weight, bias)
    got = (y, *torch.autograd.grad(y, (x, weight, bias), up))
    x64, w64, b64 = (v.detach().double().requires_grad_() for v in (x, weight, bias))
    padded = F.pad(x64.transpose(1, 2), (w - 1, 0))
    ref = F.conv1d(padded, w64[:, None, :], b64, groups=c).transpose(1, 2)
    want = (ref, *torch.autograd.grad(ref, (x64, w64, b64), up.double()))
    bound = 1e-5 if dtype == torch.float32 else 1e-2
    for name, a, b in zip(("y", "dx", "dw", "db"), got, want, strict=True):
        assert torch.isfinite(a).all(), name
        assert rel_error(a, b) < bound, name


CANDIDATE = """
import torch
from torch import Tensor, nn

from kernels.ops import causal_conv1d_step, causal_fir


class Mixer(nn.Module):
    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(d_model, 31) / 31**0.5)

    def forward(self, x: Tensor) -> Tensor:
        return causal_fir(x, self.weight)

    def init_state(self, batch: int) -> tuple[Tensor, ...]:
        return (self.weight.new_zeros(batch, self.weight.shape[0], 30),)

    def step(self, x_t: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
        y, window = causal_conv1d_step(x_t, state[0], self.weight)
        return y, (window,)
"""


def test_candidates_may_call_the_long_fir_through_kernels_ops() -> None:
    from loop.screen import check_source

    report = check_source(CANDIDATE)
    assert report.passed, report.message
    namespace: dict[str, object] = {}
    exec(compile(CANDIDATE, "candidate", "exec"), namespace)  # trusted test source
    mixer = namespace["Mixer"](6, 2)  # type: ignore[operator]
    x = torch.randn(2, 40, 6)
    y = mixer(x)
    state = mixer.init_state(2)
    steps = []
    for t in range(40):
        y_t, state = mixer.step(x[:, t], state)
        steps.append(y_t)
    assert torch.allclose(torch.stack(steps, 1), y, atol=1e-5)
    assert torch.allclose(y, naive_causal_fir(x, mixer.weight), atol=1e-5)
