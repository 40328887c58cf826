"""Chunked linear RNN in plain torch: parallel inside chunks, a short loop across them.

Within a chunk of C tokens the state at every position is the chunk's initial state S,
decayed, plus a sum of rank-one writes k_i u_i^T. For the additive update u_i = v_i. For
the (gated) delta rule u_i depends on every earlier write of the chunk through a unit
lower-triangular system (the WY / UT representation of DeltaNet):

    u_t + sum_{i<t} beta_t e^{g_t - g_i} (k_t . k_i) u_i = beta_t (v_t - e^{g_t} S^T k_t)

with g the cumulative log-decay inside the chunk. Solving it once per chunk for the two
right-hand sides (beta v) and (beta e^g k) gives u = U0 - W S, where U0 and W do not depend
on S; so everything except three small matmuls per chunk runs for all chunks at once.
Decays only ever enter as exp of a difference g_t - g_i with i <= t (masked before the exp),
which is <= 0, so long chunks and strong decays underflow harmlessly instead of overflowing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _pad_time(x: Tensor, pad: int) -> Tensor:
    """Pad dim 1 (time) at the end; zeros make padded tokens no-ops (k=0, beta=0, decay 1)."""
    return F.pad(x, [0, 0] * (x.dim() - 2) + [0, pad])


def _to_chunks(x: Tensor, chunk: int) -> Tensor:
    """(B, N*C, H, ...) -> (B, H, N, C, ...)."""
    batch, length, heads = x.shape[:3]
    return x.reshape(batch, length // chunk, chunk, heads, *x.shape[3:]).movedim(3, 1)


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
    """Run the linear RNN of `kernels.ops` over a whole sequence.

    q, k: (B, T, H, K); v: (B, T, H, V); beta, log_decay: (B, T, H). Returns
    (o (B, T, H, V), S_T (B, H, K, V)). Shapes are static and nothing depends on tensor
    values, so it exports with torch.export at fixed shapes.
    """
    batch, length, heads, k_dim = q.shape
    v_dim = v.shape[-1]
    scale = k_dim**-0.5 if scale is None else scale
    # A chunk longer than the sequence would only add padding work.
    chunk = max(1, min(chunk_size, length))
    pad = (-length) % chunk
    n_chunks = (length + pad) // chunk

    qc = _to_chunks(_pad_time(q, pad), chunk) * scale
    kc = _to_chunks(_pad_time(k, pad), chunk)
    vc = _to_chunks(_pad_time(v, pad), chunk)

    causal = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device).tril()
    if log_decay is None:
        decay = causal.to(q.dtype)  # e^{g_t - g_i} for i <= t, else 0
        q_decayed, k_to_end = qc, kc
        start_decay: Tensor | None = None
        chunk_decay: Tensor | None = None
    else:
        g = _to_chunks(_pad_time(log_decay, pad), chunk).cumsum(-1)  # (B, H, N, C)
        diff = g[..., :, None] - g[..., None, :]
        decay = diff.masked_fill(~causal, float("-inf")).exp()
        start_decay = g.exp()[..., None]  # from the chunk's start to each position
        q_decayed = qc * start_decay
        k_to_end = kc * (g[..., -1:] - g).exp()[..., None]
        chunk_decay = g[..., -1].exp()[..., None, None]  # (B, H, N, 1, 1)

    scores = (qc @ kc.transpose(-1, -2)) * decay  # intra-chunk, causal and decayed

    if beta is None:
        u0 = vc
        w = None
    else:
        bc = _to_chunks(_pad_time(beta, pad), chunk)[..., None]  # (B, H, N, C, 1)
        k_start = kc if start_decay is None else kc * start_decay
        lower = ((bc * kc) @ kc.transpose(-1, -2) * decay).tril(-1)
        system = lower + torch.eye(chunk, dtype=q.dtype, device=q.device)
        rhs = torch.cat([bc * vc, bc * k_start], dim=-1)
        solved = torch.linalg.solve_triangular(system, rhs, upper=False, unitriangular=True)
        u0, w = solved[..., :v_dim], solved[..., v_dim:]
        # o = q_decayed S + scores (u0 - w S): fold the S-dependent part into the query.
        q_decayed = q_decayed - scores @ w

    intra = scores @ u0
    state = q.new_zeros(batch, heads, k_dim, v_dim) if initial_state is None else initial_state
    # The loop walks the chunks through unbind: its backward stacks the chunks' gradients
    # once, where indexing [:, :, n] would write each into a zero tensor of the full size.
    q_n, intra_n, u0_n, k_n = (x.unbind(2) for x in (q_decayed, intra, u0, k_to_end))
    w_n = None if w is None else w.unbind(2)
    decay_n = None if chunk_decay is None else chunk_decay.unbind(2)
    outputs = []
    for n in range(n_chunks):
        outputs.append(q_n[n] @ state + intra_n[n])
        written = u0_n[n] if w_n is None else u0_n[n] - w_n[n] @ state
        if decay_n is not None:
            state = state * decay_n[n]
        state = state + k_n[n].transpose(-1, -2) @ written

    out = torch.stack(outputs, dim=2)  # (B, H, N, C, V)
    out = out.movedim(1, 3).reshape(batch, n_chunks * chunk, heads, v_dim)
    return out[:, :length], state
