"""flash-linear-attention 0.6's chunked Triton ops behind our linear-RNN interface.

The only module that imports `fla` (imported lazily, on the first CUDA call: fla's package
import probes the GPU and warns on a CPU-only host). Our layout is fla's default one
(q, k (B, T, H, K); v (B, T, H, V); beta, log_decay (B, T, H); state (B, H, K, V)), so
the wrapper only picks the op and passes arguments; fla's API churn stays here:

    no beta, no decay   -> chunk_linear_attn (normalize=False: our additive update)
    no beta, decay      -> chunk_simple_gla (g = per-head log decay)
    beta, no decay      -> chunk_delta_rule
    beta, decay         -> chunk_gated_delta_rule

Every fla op here includes the current token in the output (o_t = scale * S_t^T q_t) and
decays the state before the delta update, as `kernels.linear_rnn.naive` does.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import torch
from torch import Tensor

from kernels.errors import KernelInputError

MAX_HEAD_DIM = 256  # fla's chunked kernels keep a K or V row within one block
DEVICE_TYPES = ("cuda",)  # where fla's Triton kernels run


class FlaOp(StrEnum):
    """Which fla op runs a given form of the linear RNN."""

    LINEAR_ATTN = "chunk_linear_attn"
    SIMPLE_GLA = "chunk_simple_gla"
    DELTA_RULE = "chunk_delta_rule"
    GATED_DELTA_RULE = "chunk_gated_delta_rule"


def fla_op_for(*, has_beta: bool, has_decay: bool) -> FlaOp:
    """The fla op computing our recurrence with (or without) beta and a decay."""
    if has_beta:
        return FlaOp.GATED_DELTA_RULE if has_decay else FlaOp.DELTA_RULE
    return FlaOp.SIMPLE_GLA if has_decay else FlaOp.LINEAR_ATTN


def check_fla_inputs(
    q: Tensor, k: Tensor, v: Tensor, beta: Tensor | None, log_decay: Tensor | None
) -> None:
    """Raise KernelInputError for input fla's kernels cannot take, before anything launches."""
    if q.dim() != 4 or k.shape != q.shape:
        raise KernelInputError(
            f"q and k must both be (B, T, H, K), got {tuple(q.shape)} and {tuple(k.shape)}"
        )
    if v.dim() != 4 or v.shape[:3] != q.shape[:3]:
        raise KernelInputError(f"v must be (B, T, H, V) matching q, got {tuple(v.shape)}")
    for name, gate in (("beta", beta), ("log_decay", log_decay)):
        if gate is not None and gate.shape != q.shape[:3]:
            raise KernelInputError(f"{name} must be (B, T, H), got {tuple(gate.shape)}")
    if max(q.shape[-1], v.shape[-1]) > MAX_HEAD_DIM:
        raise KernelInputError(
            f"head widths K={q.shape[-1]}, V={v.shape[-1]} exceed {MAX_HEAD_DIM}"
        )
    tensors = [t for t in (q, k, v, beta, log_decay) if t is not None]
    if any(t.device.type not in DEVICE_TYPES for t in tensors):
        raise KernelInputError(
            "fla's kernels need CUDA tensors (use kernels.ops.chunk_linear_rnn, which runs "
            "the reference elsewhere)"
        )


def _fla_function(op: FlaOp) -> Any:
    import importlib  # here, not at module level: candidate code may import this module

    module = importlib.import_module("fla.ops")
    return getattr(module, op.value)


def fla_linear_rnn(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    beta: Tensor | None = None,
    log_decay: Tensor | None = None,
    scale: float | None = None,
    initial_state: Tensor | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[Tensor, Tensor]:
    """Run `kernels.ops.chunk_linear_rnn`'s recurrence with fla's kernels (CUDA only).

    q, k, v and beta are cast to `dtype` (default q's; fla's delta rule takes only bf16 or
    fp16); returns (o (B, T, H, V), S_T (B, H, K, V)), both in that dtype. The caller
    (`kernels.dispatch`) decides that fla may run; this translates the call and raises
    KernelInputError for what fla cannot take.
    """
    dtype = q.dtype if dtype is None else dtype
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise KernelInputError(f"fla computes in float32, bfloat16 or float16, not {dtype}")
    if beta is not None and log_decay is None and dtype == torch.float32:
        raise KernelInputError("fla's chunk_delta_rule takes bfloat16 or float16, not float32")
    check_fla_inputs(q, k, v, beta, log_decay)
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    beta = None if beta is None else beta.to(dtype)
    op = fla_op_for(has_beta=beta is not None, has_decay=log_decay is not None)
    fn = _fla_function(op)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    common: dict[str, Any] = {
        "scale": scale,
        "initial_state": None if initial_state is None else initial_state.float(),
        "output_final_state": True,
    }
    # fla keeps cumulative log decays in float32; a bf16 decay would lose the small ones.
    g = None if log_decay is None else log_decay.float()
    if op is FlaOp.LINEAR_ATTN:
        o, state = fn(q, k, v, normalize=False, **common)
    elif op is FlaOp.SIMPLE_GLA:
        o, state = fn(q, k, v, g=g, **common)
    elif op is FlaOp.DELTA_RULE:
        o, state = fn(q, k, v, beta=beta, **common)
    else:
        o, state = fn(q, k, v, g=g, beta=beta, **common)
    out: Tensor = o.to(dtype)
    final: Tensor = state.to(dtype)
    return out, final
