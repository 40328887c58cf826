"""Causal depthwise FIR convolution in Triton: forward and backward, up to 64 taps.

Layout is channels-last, x (B, T, C) and weight (C, W), as in `kernels.fir.naive` (the
oracle): y[b, t, c] = sum_i w[c, i] x[b, t-W+1+i, c] (+ bias[c]). One program computes a
(BT, BC) tile of outputs, looping over the taps; the shifted input tiles overlap, so after
the first tap most loads hit L1/L2 and DRAM sees x about once. Loads along C are
contiguous. Accumulation is float32 whatever the input dtype (float32 or bfloat16).

The backward is one kernel per (time block, channel block, batch): dx is the anti-causal
correlation dx[t] = sum_i w[i] dy[t+W-1-i]; dw needs a sum over batch and time, so each
program writes its per-tap partial sums into a float32 buffer that torch reduces after.
The backward's time block is fixed by the host (the buffer's shape depends on it), so its
autotuning only varies the channel block and the warps.

Outputs and partial buffers are filled with NaN before a kernel writes them: a tile the
kernel misses shows up as NaN in tests instead of as stale memory. Under the Triton
interpreter (TRITON_INTERPRET=1, read when this module is imported) each autotuned kernel
keeps one config, so CPU tests do not benchmark; on a GPU the autotuner's choice is cached
on disk with the compiled kernels (TRITON_CACHE_DIR), so a later process skips the
benchmark. Unsupported input raises
`KernelInputError` before anything is launched.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl
from torch import Tensor

from kernels.errors import KernelInputError

MAX_TAPS = 64
DTYPES = (torch.float32, torch.bfloat16)
BWD_TIME_BLOCK = 128  # the backward's time block on long sequences (sets the dw buffer)

INTERPRETED = bool(triton.knobs.runtime.interpret)


def _fwd_configs() -> list[triton.Config]:
    if INTERPRETED:
        return [triton.Config({"BT": 32, "BC": 64}, num_warps=4)]
    # Few configs on purpose: every one is compiled and timed on a cold cache.
    shapes = [(64, 64, 4), (128, 64, 4), (64, 128, 4), (128, 128, 8)]
    return [triton.Config({"BT": t, "BC": c}, num_warps=w) for t, c, w in shapes]


def _bwd_configs() -> list[triton.Config]:
    if INTERPRETED:
        return [triton.Config({"BC": 64}, num_warps=4)]
    shapes = [(32, 4), (64, 4), (128, 8)]
    return [triton.Config({"BC": c}, num_warps=w) for c, w in shapes]


@triton.autotune(configs=_fwd_configs(), key=["T", "C", "W"], cache_results=True)
@triton.jit
def _fir_fwd_kernel(
    x_ptr,
    wt_ptr,  # weight transposed to (W, C), contiguous
    b_ptr,
    y_ptr,
    T,
    C,
    W: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    BT: tl.constexpr,
    BC: tl.constexpr,
):
    pid_t = tl.program_id(0)
    pid_c = tl.program_id(1)
    batch = tl.program_id(2).to(tl.int64)
    t = pid_t * BT + tl.arange(0, BT)
    c = pid_c * BC + tl.arange(0, BC)
    t_ok = t < T
    c_ok = c < C
    base = batch * T * C
    acc = tl.zeros((BT, BC), dtype=tl.float32)
    for i in range(W):
        src = t - (W - 1) + i
        mask = ((src >= 0) & t_ok)[:, None] & c_ok[None, :]
        xv = tl.load(x_ptr + base + src[:, None] * C + c[None, :], mask=mask, other=0.0)
        wv = tl.load(wt_ptr + i * C + c, mask=c_ok, other=0.0)
        acc += xv.to(tl.float32) * wv.to(tl.float32)[None, :]
    if HAS_BIAS:
        acc += tl.load(b_ptr + c, mask=c_ok, other=0.0).to(tl.float32)[None, :]
    out = y_ptr + base + t[:, None] * C + c[None, :]
    tl.store(out, acc.to(y_ptr.dtype.element_ty), mask=t_ok[:, None] & c_ok[None, :])


@triton.autotune(configs=_bwd_configs(), key=["T", "C", "W", "BT"], cache_results=True)
@triton.jit
def _fir_bwd_kernel(
    x_ptr,
    wt_ptr,
    dy_ptr,
    dx_ptr,
    dw_part_ptr,  # (B * NT, W, C) float32: per-program, per-tap partial sums of dw
    T,
    C,
    NT,
    W: tl.constexpr,
    BT: tl.constexpr,
    BC: tl.constexpr,
):
    pid_t = tl.program_id(0)
    pid_c = tl.program_id(1)
    batch = tl.program_id(2).to(tl.int64)
    t = pid_t * BT + tl.arange(0, BT)
    c = pid_c * BC + tl.arange(0, BC)
    t_ok = t < T
    c_ok = c < C
    base = batch * T * C
    here = t_ok[:, None] & c_ok[None, :]
    dy_here = tl.load(dy_ptr + base + t[:, None] * C + c[None, :], mask=here, other=0.0)
    dy_here = dy_here.to(tl.float32)
    dx_acc = tl.zeros((BT, BC), dtype=tl.float32)
    part = dw_part_ptr + (batch * NT + pid_t) * W * C
    for i in range(W):
        # dw[c, i] gets dy[t] * x[t - W + 1 + i] for every t of this block.
        src = t - (W - 1) + i
        src_mask = ((src >= 0) & t_ok)[:, None] & c_ok[None, :]
        xv = tl.load(x_ptr + base + src[:, None] * C + c[None, :], mask=src_mask, other=0.0)
        tl.store(part + i * C + c, tl.sum(dy_here * xv.to(tl.float32), axis=0), mask=c_ok)
        # dx[t] gets w[c, i] * dy[t + W - 1 - i].
        dst = t + (W - 1) - i
        dst_mask = (dst < T)[:, None] & c_ok[None, :]
        dyv = tl.load(dy_ptr + base + dst[:, None] * C + c[None, :], mask=dst_mask, other=0.0)
        wv = tl.load(wt_ptr + i * C + c, mask=c_ok, other=0.0)
        dx_acc += dyv.to(tl.float32) * wv.to(tl.float32)[None, :]
    out = dx_ptr + base + t[:, None] * C + c[None, :]
    tl.store(out, dx_acc.to(dx_ptr.dtype.element_ty), mask=here)


def check_fir_inputs(x: Tensor, weight: Tensor, bias: Tensor | None) -> None:
    """Raise KernelInputError naming what this kernel cannot run; returns None when it can."""
    if x.dim() != 3:
        raise KernelInputError(f"x must be (B, T, C), got shape {tuple(x.shape)}")
    if weight.dim() != 2:
        raise KernelInputError(f"weight must be (C, W), got shape {tuple(weight.shape)}")
    batch, length, channels = x.shape
    if min(batch, length, channels) < 1:
        raise KernelInputError(f"x must not be empty, got shape {tuple(x.shape)}")
    if weight.shape[0] != channels:
        raise KernelInputError(
            f"weight has {weight.shape[0]} channels but x has {channels} (weight is (C, W))"
        )
    taps = weight.shape[1]
    if not 1 <= taps <= MAX_TAPS:
        raise KernelInputError(f"kernel length {taps} is outside 1..{MAX_TAPS}")
    if bias is not None and tuple(bias.shape) != (channels,):
        raise KernelInputError(f"bias must be ({channels},), got shape {tuple(bias.shape)}")
    named = {"x": x, "weight": weight} | ({} if bias is None else {"bias": bias})
    for name, tensor in named.items():
        if tensor.dtype not in DTYPES:
            raise KernelInputError(
                f"{name} has dtype {tensor.dtype}; the FIR kernel takes float32 or bfloat16"
            )
        if tensor.device != x.device:
            raise KernelInputError(f"{name} is on {tensor.device} but x is on {x.device}")
    if x.device.type != "cuda" and not INTERPRETED:
        raise KernelInputError(
            f"the Triton FIR kernel needs a CUDA tensor, got {x.device} "
            "(use kernels.ops.causal_conv1d, which falls back to the reference conv)"
        )
    if length * channels >= 2**31:
        raise KernelInputError(f"T*C = {length * channels} must stay below 2**31 per sequence")


def _poisoned(shape: tuple[int, ...], like: Tensor, dtype: torch.dtype) -> Tensor:
    return torch.full(shape, float("nan"), dtype=dtype, device=like.device)


def _bwd_time_block(length: int) -> int:
    return min(BWD_TIME_BLOCK, max(16, triton.next_power_of_2(length)))


def fir_forward(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """The forward kernel alone (no autograd); inputs already checked and contiguous."""
    batch, length, channels = x.shape
    taps = weight.shape[1]
    wt = weight.t().contiguous()
    y = _poisoned(tuple(x.shape), x, x.dtype)

    def grid(meta: dict[str, Any]) -> tuple[int, int, int]:
        return (triton.cdiv(length, meta["BT"]), triton.cdiv(channels, meta["BC"]), batch)

    _fir_fwd_kernel[grid](
        x, wt, wt if bias is None else bias, y, length, channels, W=taps, HAS_BIAS=bias is not None
    )
    return y


def fir_backward(x: Tensor, weight: Tensor, dy: Tensor) -> tuple[Tensor, Tensor]:
    """(dx in x's dtype, dw float32 (C, W)) for upstream gradient dy; inputs contiguous."""
    batch, length, channels = x.shape
    taps = weight.shape[1]
    block = _bwd_time_block(length)
    n_blocks = triton.cdiv(length, block)
    wt = weight.t().contiguous()
    dx = _poisoned(tuple(x.shape), x, x.dtype)
    parts = _poisoned((batch * n_blocks, taps, channels), x, torch.float32)

    def grid(meta: dict[str, Any]) -> tuple[int, int, int]:
        return (n_blocks, triton.cdiv(channels, meta["BC"]), batch)

    _fir_bwd_kernel[grid](x, wt, dy, dx, parts, length, channels, n_blocks, W=taps, BT=block)
    return dx, parts.sum(0).t()


class _CausalFIR(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        x, weight = x.contiguous(), weight.contiguous()
        bias = None if bias is None else bias.contiguous()
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        ctx.bias_dtype = None if bias is None else bias.dtype
        return fir_forward(x, weight, bias)

    @staticmethod
    def backward(ctx: Any, dy: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        x, weight = ctx.saved_tensors
        dy = dy.contiguous().to(x.dtype)
        dx, dw = fir_backward(x, weight, dy)
        db = dy.float().sum((0, 1)).to(ctx.bias_dtype) if ctx.has_bias else None
        return dx, dw.to(weight.dtype), db


def causal_fir_triton(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """Causal depthwise FIR convolution with the Triton kernels; x (B, T, C), weight (C, W).

    Same result as `kernels.fir.naive.naive_causal_fir` up to float32 rounding; the output
    has x's dtype, gradients have their input's dtype. Raises KernelInputError for input
    the kernel does not run (checked before launch).
    """
    check_fir_inputs(x, weight, bias)
    y: Tensor = _CausalFIR.apply(x, weight, bias)
    return y
