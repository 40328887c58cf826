"""A functional probe of a mixer: what it computes at a fixed point, to find twins before training.

`probe_mixer` runs inside the sandbox after screening: it builds the mixer at d_model 64,
2 heads under a fixed seed, moves every parameter by a fixed small random step (so a
branch initialised to zero, or a gate initialised shut, still shows), and on a fixed
input (batch 2, 128 tokens) records 32 numbers: 16 random projections of the output, 8
of the gradient of a fixed random readout with respect to the input and 8 with respect
to the parameters (flattened in creation order), plus the recurrent state's size per
sequence. It runs in float64 where the code allows (else float32, with a looser
tolerance), and `Probe.matches` compares within a relative tolerance, so float noise
from another order of operations never separates two probes.

What a match means: the two mixers start training from the same function and the same
gradients, with the same state size, so on the same seed they follow the same training
run up to rounding. It catches renamed, reformatted or refactored code (einsum for
matmul, a chunked scan for a loop over tokens, helpers inlined or split, dead code that
creates no parameters), options that only reorder the computation (a baseline's
chunk_size) and constants changed below the tolerance.

What it does not catch (false negatives: trained although twins in effect): the same
design with its parameters created in another order, fused or split projections, an
unused parameter, another initialisation, or a reparametrisation (softplus against exp):
each starts from another point or has other gradients, so each is another experiment.
Only the campaign's trained candidates are compared against: two twins in flight at once
both train.

What it may wrongly flag (false positives), since it sees one point near the initial
parameters, one input of 128 tokens, at d_model 64 in eval mode: a difference that only
shows past 128 tokens (a window of 256 against 512), at another width, in training mode
only (dropout, noise), or under the tolerance at the probe's point (an epsilon of 1e-9
against 1e-8). A deliberately hostile candidate can forge its probe, which its own
process computes: this saves compute on honest duplicates; it is not a security boundary.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

PROBE_SHAPE = (64, 2)  # (d_model, n_heads): the screen's reference shape
PROBE_BATCH = 2
PROBE_LENGTH = 128  # MQAR's shorter test sets fit; differences past it go unseen
PROBE_SEED = 1_234_567
PERTURBATION = 0.02  # each parameter moves by this times a standard normal draw
OUTPUT_DIMS = 16
GRAD_DIMS = 8
TOLERANCE = {"float64": 1e-6, "float32": 1e-3}  # relative, of the larger probe's scale
DIGITS = 9  # significant digits kept when a probe is written out


@dataclass(frozen=True)
class Probe:
    """What a mixer computes at the probe's point, and its state size per sequence."""

    values: tuple[float, ...]
    state_floats: int
    dtype: str  # "float64", or "float32" for code that only runs in float32

    def matches(self, other: Probe) -> bool:
        """Same state size and every value within the looser tolerance of the two, relative
        to the larger of the two probes' largest value."""
        if self.state_floats != other.state_floats or len(self.values) != len(other.values):
            return False
        tolerance = max(TOLERANCE.get(self.dtype, 1e-3), TOLERANCE.get(other.dtype, 1e-3))
        scale = max((abs(v) for v in (*self.values, *other.values)), default=0.0)
        gap = max((abs(a - b) for a, b in zip(self.values, other.values, strict=True)), default=0)
        return gap <= tolerance * scale

    def to_json(self) -> dict[str, Any]:
        return {
            "values": [float(f"{v:.{DIGITS}g}") for v in self.values],
            "state_floats": self.state_floats,
            "dtype": self.dtype,
        }

    @classmethod
    def from_json(cls, data: Any) -> Probe | None:
        """The probe a screen result carries, or None when it carries none (or a broken one:
        a screen result comes out of the sandbox)."""
        if not isinstance(data, Mapping):
            return None
        values, state, dtype = data.get("values"), data.get("state_floats"), data.get("dtype")
        if not isinstance(values, list) or not isinstance(state, int) or dtype not in TOLERANCE:
            return None
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
            return None
        return cls(tuple(float(v) for v in values), state, str(dtype))


def find_twin(probe: Probe, known: Sequence[tuple[str, Probe]]) -> str | None:
    """The label of the first known probe that `probe` matches, if any."""
    for label, other in known:
        if probe.matches(other):
            return label
    return None


def probe_mixer(mixer_cls: Callable[..., Any], options: Mapping[str, Any] | None = None) -> Probe:
    """The probe of a mixer class; runs candidate code, so call it only inside the sandbox.

    Raises whatever the candidate raises when it runs in neither float64 nor float32
    (the screen has passed it in float32, so that is rare); the caller records no probe.
    """
    try:
        return _probe(mixer_cls, dict(options or {}), torch.float64)
    except (Exception, SystemExit):  # code that hard-codes float32: probe it as it runs
        return _probe(mixer_cls, dict(options or {}), torch.float32)


def _probe(mixer_cls: Callable[..., Any], options: dict[str, Any], dtype: torch.dtype) -> Probe:
    d_model, n_heads = PROBE_SHAPE
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(PROBE_SEED)
        module = mixer_cls(d_model, n_heads, **options)
    if not isinstance(module, nn.Module):
        raise TypeError(f"Mixer(...) returned {type(module).__name__}")
    module = module.to(dtype).eval()
    # One stream per use, so a change in one (another parameter count) leaves the others.
    steps, inputs, projections = (_normal(PROBE_SEED + i) for i in range(3))
    params = list(module.parameters())
    with torch.no_grad():
        for p in params:
            p.add_((PERTURBATION * steps(*p.shape)).to(p.dtype))
    x = inputs(PROBE_BATCH, PROBE_LENGTH, d_model).to(dtype).requires_grad_(True)
    readout = inputs(PROBE_BATCH, PROBE_LENGTH, d_model)
    y = module(x)
    if not isinstance(y, Tensor) or y.dtype != dtype or tuple(y.shape) != tuple(x.shape):
        raise TypeError(f"forward returned {getattr(y, 'dtype', type(y).__name__)} for {dtype}")
    trainable = [p for p in params if p.requires_grad]
    grads = torch.autograd.grad((y.double() * readout).sum(), [x, *trainable], allow_unused=True)
    flat = [
        (torch.zeros_like(t) if g is None else g).double().flatten()
        for g, t in zip(grads, [x, *trainable], strict=True)
    ]
    values = torch.cat(
        [
            _project(y.detach().double().flatten(), OUTPUT_DIMS, projections),
            _project(flat[0], GRAD_DIMS, projections),
            _project(
                torch.cat([*flat[1:], torch.zeros(1, dtype=torch.float64)]), GRAD_DIMS, projections
            ),
        ]
    )
    if not bool(torch.isfinite(values).all()):
        raise FloatingPointError("non-finite probe values")
    init_state = getattr(module, "init_state", None)
    if not callable(init_state):
        raise TypeError("Mixer has no method init_state()")
    with torch.no_grad():
        state = init_state(PROBE_BATCH)
    floats = sum(int(s.numel()) for s in state) // PROBE_BATCH
    return Probe(tuple(float(v) for v in values), int(floats), str(dtype).removeprefix("torch."))


def _normal(seed: int) -> Callable[..., Tensor]:
    """Standard normal float64 draws from a stream of their own."""
    stream = torch.Generator().manual_seed(seed)

    def draw(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=stream, dtype=torch.float64)

    return draw


def _project(flat: Tensor, dims: int, normal: Callable[..., Tensor]) -> Tensor:
    """`dims` fixed random projections of a flat vector, scaled to its root mean square."""
    return flat @ normal(flat.numel(), dims) / math.sqrt(flat.numel())
