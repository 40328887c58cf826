"""Pick each op's implementation by device: fast paths on CUDA, the plain-torch reference elsewhere.

`chunk_linear_rnn` and `causal_conv1d` here have exactly the interface of the references
in `kernels.linear_rnn.chunk` and `kernels.conv1d.conv`; `kernels.ops` exports these, so
baselines and generated candidates get the fast path on a GPU without a change. On the
CPU they call the reference straight away (nothing probed, Triton and fla not imported),
so CPU training, screening and torch.export see exactly the reference.

On CUDA the choice is a pure function of a `Platform` (probed once per device) and the
call's dtypes and sizes, so it is tested on the CPU with made-up platforms. Where a fast
path cannot run, the reference runs and a warning is logged once per reason. One known
refusal: fla 0.6 raises in the backward of its gated ops (per-token decay:
chunk_simple_gla with g, chunk_gated_delta_rule) on Hopper with Triton >= 3.4 and
< 3.7.1 (wrong results, fla issue #640) unless TileLang is installed; for such calls that
need gradients the reference runs instead, and the forward alone still uses fla.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from enum import StrEnum

import torch
from torch import Tensor

from kernels.conv1d.conv import causal_conv1d as reference_conv1d
from kernels.fla_ops import MAX_HEAD_DIM as FLA_MAX_HEAD_DIM
from kernels.fla_ops import fla_linear_rnn
from kernels.linear_rnn.chunk import chunk_linear_rnn as reference_linear_rnn

logger = logging.getLogger(__name__)

Version = tuple[int, int, int]
GATED_BACKWARD_BROKEN: tuple[Version, Version] = ((3, 4, 0), (3, 7, 1))  # [low, high)
FLA_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
FIR_DTYPES = (torch.float32, torch.bfloat16)
HALF_DTYPES = (torch.bfloat16, torch.float16)
FIR_MAX_TAPS = 64


class Backend(StrEnum):
    FLA = "fla"
    TRITON = "triton"  # our own kernels (kernels.fir)
    REFERENCE = "reference"


@dataclass(frozen=True)
class Platform:
    """What decides whether a fast path may run on a device."""

    device_type: str
    triton_version: Version | None  # None: Triton is not installed
    fla: bool
    hopper: bool  # compute capability 9.x
    tilelang: bool


@dataclass(frozen=True)
class Choice:
    backend: Backend
    reason: str  # why this backend; names the limit when it is the reference


def parse_version(text: str) -> Version:
    """'3.6.0' -> (3, 6, 0); suffixes ('+git1a2b', 'rc1') and missing parts are ignored/zero."""
    parts = [int(p) for p in re.findall(r"\d+", text.split("+")[0])[:3]]
    while len(parts) < 3:
        parts.append(0)
    return parts[0], parts[1], parts[2]


def _installed_version(package: str) -> Version | None:
    # importlib is imported in the functions that need it: candidate code may import this
    # module, and a module-level `importlib` attribute would hand it an import function.
    import importlib.metadata

    try:
        return parse_version(importlib.metadata.version(package))
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=16)
def probe_platform(device: torch.device) -> Platform:
    """The platform of `device`; probes the GPU only for CUDA devices."""
    import importlib.util

    hopper = False
    if device.type == "cuda":
        hopper = torch.cuda.get_device_capability(device)[0] == 9
    return Platform(
        device_type=device.type,
        triton_version=_installed_version("triton"),
        fla=importlib.util.find_spec("fla") is not None,
        hopper=hopper,
        tilelang=importlib.util.find_spec("tilelang") is not None,
    )


def gated_backward_refused(platform: Platform) -> bool:
    """fla 0.6 refuses the backward of its per-token-gated ops on this platform."""
    version = platform.triton_version
    low, high = GATED_BACKWARD_BROKEN
    in_range = version is not None and low <= version < high
    return platform.hopper and in_range and not platform.tilelang


def choose_linear_rnn(
    platform: Platform,
    *,
    dtype: torch.dtype,
    has_beta: bool,
    has_decay: bool,
    needs_grad: bool,
    k_dim: int,
    v_dim: int,
) -> Choice:
    """fla or the reference for one call of the linear RNN."""
    if platform.device_type != "cuda":
        return Choice(Backend.REFERENCE, f"device {platform.device_type} has no fast path")
    if not platform.fla:
        return Choice(Backend.REFERENCE, "fla is not installed (pip install fla-core==0.6.0)")
    if platform.triton_version is None:
        return Choice(Backend.REFERENCE, "triton is not installed")
    if dtype not in FLA_DTYPES:
        return Choice(Backend.REFERENCE, f"fla takes float32/bfloat16/float16, not {dtype}")
    if max(k_dim, v_dim) > FLA_MAX_HEAD_DIM:
        return Choice(Backend.REFERENCE, f"head width over {FLA_MAX_HEAD_DIM} for fla")
    if has_beta and not has_decay and dtype == torch.float32:
        return Choice(Backend.REFERENCE, "fla's chunk_delta_rule takes bfloat16/float16 only")
    if needs_grad and has_decay and gated_backward_refused(platform):
        v = ".".join(map(str, platform.triton_version))
        return Choice(
            Backend.REFERENCE,
            f"fla 0.6 refuses the gated backward on Hopper with Triton {v} "
            "(>= 3.4, < 3.7.1; install tilelang or Triton >= 3.7.1 for the fast path)",
        )
    kind = ("gated delta rule" if has_decay else "delta rule") if has_beta else "linear attention"
    if not has_beta and has_decay:
        kind = "decayed linear attention"
    return Choice(Backend.FLA, f"fla chunked {kind}")


def choose_fir(platform: Platform, *, dtypes: tuple[torch.dtype, ...], taps: int) -> Choice:
    """Our Triton FIR kernel or the reference conv, for one causal depthwise convolution."""
    if platform.device_type != "cuda":
        return Choice(Backend.REFERENCE, f"device {platform.device_type} has no fast path")
    if platform.triton_version is None:
        return Choice(Backend.REFERENCE, "triton is not installed")
    bad = [d for d in dtypes if d not in FIR_DTYPES]
    if bad:
        return Choice(Backend.REFERENCE, f"the FIR kernel takes float32/bfloat16, not {bad[0]}")
    if not 1 <= taps <= FIR_MAX_TAPS:
        return Choice(Backend.REFERENCE, f"{taps} taps is outside the kernel's 1..64")
    return Choice(Backend.TRITON, "Triton causal FIR kernel")


@functools.lru_cache(maxsize=64)
def _warn_once(op: str, reason: str) -> None:
    logger.warning("fast path not used; running the reference", extra={"op": op, "reason": reason})


def compute_dtype(q: Tensor, k: Tensor, v: Tensor) -> torch.dtype:
    """The dtype a fast path computes in: autocast's when on, else any half input's, else q's.

    Under bf16 autocast, q and k come out of an L2 norm in float32 (autocast runs rsqrt in
    float32) while v is bf16; the call is meant to run in bf16 all the same.
    """
    device = q.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    halves = [t.dtype for t in (q, k, v) if t.dtype in HALF_DTYPES]
    return halves[0] if halves else q.dtype


def _needs_grad(*tensors: Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def chunk_linear_rnn(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    beta: Tensor | None = None,
    log_decay: Tensor | None = None,
    scale: float | None = None,
    chunk_size: int = 32,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """`kernels.linear_rnn.chunk.chunk_linear_rnn`, on fla's kernels where they may run.

    chunk_size only shapes the reference (fla picks its own chunking).
    """
    if q.device.type == "cuda":
        dtype = compute_dtype(q, k, v)
        choice = choose_linear_rnn(
            probe_platform(q.device),
            dtype=dtype,
            has_beta=beta is not None,
            has_decay=log_decay is not None,
            needs_grad=_needs_grad(q, k, v, beta, log_decay, initial_state),
            k_dim=q.shape[-1],
            v_dim=v.shape[-1],
        )
        if choice.backend is Backend.FLA:
            return fla_linear_rnn(
                q,
                k,
                v,
                beta=beta,
                log_decay=log_decay,
                scale=scale,
                initial_state=initial_state,
                dtype=dtype,
            )
        _warn_once("chunk_linear_rnn", choice.reason)
    inputs = (q, k, v, beta, log_decay, initial_state)
    if not any(t is not None and t.dtype in HALF_DTYPES for t in inputs):
        return reference_linear_rnn(
            q,
            k,
            v,
            beta=beta,
            log_decay=log_decay,
            scale=scale,
            chunk_size=chunk_size,
            initial_state=initial_state,
        )
    # Half-precision input (bf16 autocast): torch has no bf16 triangular solve, and the
    # chunked sums want float32 anyway, so the reference runs in float32 with autocast off.
    wide = [None if t is None else t.float() for t in inputs]
    with torch.autocast(q.device.type, enabled=False):
        o, state = reference_linear_rnn(
            wide[0],  # type: ignore[arg-type]
            wide[1],  # type: ignore[arg-type]
            wide[2],  # type: ignore[arg-type]
            beta=wide[3],
            log_decay=wide[4],
            scale=scale,
            chunk_size=chunk_size,
            initial_state=wide[5],
        )
    return o.to(q.dtype), state.to(q.dtype)


def causal_conv1d(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """`kernels.conv1d.conv.causal_conv1d`, on our Triton FIR kernel where it may run."""
    if x.device.type == "cuda":
        dtypes = (x.dtype, weight.dtype) + (() if bias is None else (bias.dtype,))
        choice = choose_fir(probe_platform(x.device), dtypes=dtypes, taps=weight.shape[1])
        if choice.backend is Backend.TRITON:
            from kernels.fir.triton import causal_fir_triton

            return causal_fir_triton(x, weight, bias)
        _warn_once("causal_conv1d", choice.reason)
    return reference_conv1d(x, weight, bias)
