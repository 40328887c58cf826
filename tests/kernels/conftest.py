"""Fixtures for the kernels tests: flash-linear-attention's naive references as oracles.

fla's package __init__ imports Triton, which has no CPU build here, so its plain-torch
`naive.py` files are loaded by file path without importing the package. This lives in the
tests, not in kernels/, because candidate code may import anything under kernels/ and must
not gain a loader of arbitrary files.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch import Tensor

from kernels.fla_ops import FlaOp


def _fla_root() -> Path | None:
    spec = importlib.util.find_spec("fla")  # locates the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


@pytest.fixture(scope="session")
def fla_naive() -> Callable[[str], ModuleType]:
    """Return a loader: fla_naive("delta_rule") is fla/ops/delta_rule/naive.py as a module."""
    root = _fla_root()
    if root is None:
        pytest.skip("flash-linear-attention is not installed (pip install fla-core==0.6.0)")
    pytest.importorskip("einops", reason="fla's naive references import einops")
    assert root is not None
    loaded: dict[str, ModuleType] = {}

    def load(op: str) -> ModuleType:
        if op not in loaded:
            path = root / "ops" / op / "naive.py"
            spec = importlib.util.spec_from_file_location(f"_fla_naive_{op}", path)
            if spec is None or spec.loader is None or not path.exists():
                pytest.skip(f"fla has no naive reference at {path}")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            loaded[op] = module
        return loaded[op]

    return load


def _fake_fla(op: FlaOp) -> Callable[..., tuple[Tensor, Tensor]]:
    """fla's documented call for `op`, computed by our oracle, with fla's own input checks."""
    from kernels.linear_rnn.naive import naive_linear_rnn

    def call(q: Tensor, k: Tensor, v: Tensor, **kw: object) -> tuple[Tensor, Tensor]:
        assert kw.pop("output_final_state") is True
        if op is FlaOp.LINEAR_ATTN:
            assert kw.pop("normalize") is False  # fla's default would divide by q.sum(k)
        if op is FlaOp.DELTA_RULE:
            assert q.dtype != torch.float32, "ChunkDeltaRuleFunction does not support float32"
        assert q.dtype == k.dtype == v.dtype
        g = kw.pop("g", None)
        assert g is None or g.dtype == torch.float32
        beta = kw.pop("beta", None)
        h0 = kw.pop("initial_state")
        scale = kw.pop("scale")
        assert not kw, f"unexpected arguments {sorted(kw)}"
        o, s = naive_linear_rnn(
            q.float(), k.float(), v.float(),
            beta=None if beta is None else beta.float(), log_decay=g, scale=scale,  # type: ignore[arg-type]
            initial_state=h0,  # type: ignore[arg-type]
        )  # fmt: skip
        return o.to(q.dtype), s  # fla returns its final state in float32

    return call


@pytest.fixture
def fake_fla() -> Callable[[FlaOp], Callable[..., tuple[Tensor, Tensor]]]:
    """A stand-in for `kernels.fla_ops._fla_function`: fla's call, computed by our oracle,
    with fla's own input checks (fp32 refused by the delta rule, normalize off)."""
    return _fake_fla
