"""Verification stages: which candidates of an earlier campaign a stage re-trains, and the
baselines each is compared with at the new scale.

The choice ranks the source campaign's candidates by a lower confidence bound over every
seed they were scored on, so one lucky draw does not carry a candidate into the next
stage; it is made once, when the stage is created, and written into the stage's config
(`Verify.selected`), so its config hash covers it. Each choice names its exploration
record by the RFC 6962 leaf hash of that record in the node's log, which the stage's own
records repeat (`verifies`) and an auditor looks up in the same log.

At the new scale a candidate is compared with baselines of the same non-embedding
parameter count (within `param_tolerance`): where a baseline at the campaign's width is
further off, the stage trains it again at the width that matches (`matched_width`), so a
candidate cannot win by being bigger. Parameter counts of baselines are computed here, on
the meta device (trusted code, no weights allocated); a candidate's comes from its own
sandboxed run.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence
from functools import cache

from attestation.merkle import leaf_hash
from attestation.schema import CandidateOrigin, ExperimentStatus
from loop.model import BackboneConfig
from node.campaign.config import CampaignConfig, Selected, Verify
from node.errors import ConfigError, NotFoundError
from node.store import Store
from node.tlog.log import NodeLog
from node.tlog.records import EXPERIMENT_KIND

WIDTH_OPTION = "backbone_d_model"  # a matched baseline's width, in its candidate options


def lower_bound(fitnesses: Sequence[float], z: float, seed_noise: float) -> float:
    """mean - z * s / sqrt(n), s the larger of the sample spread and `seed_noise`."""
    n = len(fitnesses)
    spread = statistics.stdev(fitnesses) if n > 1 else 0.0
    return statistics.fmean(fitnesses) - z * max(spread, seed_noise) / math.sqrt(n)


def pooled_spread(runs: Sequence[Sequence[float]]) -> float:
    """The seed-to-seed standard deviation pooled over the candidates scored on more than
    one seed (0 when none was): the noise a candidate seen on one seed is assumed to
    carry, measured on the campaign's own re-runs rather than guessed."""
    repeated = [r for r in runs if len(r) > 1]
    if not repeated:
        return 0.0
    dof = sum(len(r) - 1 for r in repeated)
    return math.sqrt(sum(statistics.variance(r) * (len(r) - 1) for r in repeated) / dof)


def select(store: Store, log: NodeLog, source_id: str, verify: Verify) -> tuple[Selected, ...]:
    """The source campaign's top `verify.top_k` generated candidates by lower bound, each
    with its first-seed record's leaf hash; ConfigError naming what is missing."""
    try:
        source = store.get_campaign(source_id)
    except NotFoundError:
        raise ConfigError(f"verify.source {source_id!r}: no such campaign on this node") from None
    config = CampaignConfig.model_validate(source.config)
    by_candidate: dict[str, list[float]] = {}
    first: dict[str, str] = {}
    for exp in store.list_experiments(source.id):
        if exp.status is ExperimentStatus.DONE and exp.fitness is not None:
            by_candidate.setdefault(exp.candidate_id, []).append(exp.fitness)
            if exp.seed == config.seed:
                first[exp.candidate_id] = exp.id
    generated = [
        c
        for c in store.list_candidates(source.id)
        if c.origin is not CandidateOrigin.BASELINE and c.id in first
    ]
    # The reference scores 0 on every seed by definition: only generated candidates count.
    noise = max(verify.seed_noise, pooled_spread([by_candidate[c.id] for c in generated]))
    ranked: list[tuple[float, float, str]] = []
    for cand in generated:
        fits = by_candidate[cand.id]
        bound = lower_bound(fits, verify.z, noise)
        if verify.min_lower_bound is None or bound > verify.min_lower_bound:
            ranked.append((bound, statistics.fmean(fits), cand.id))
    if not ranked:
        above = (
            ""
            if verify.min_lower_bound is None
            else f" with a lower bound above {verify.min_lower_bound:+.3f}"
        )
        raise ConfigError(
            f"campaign {source.name} ({source.id}) has no scored candidate{above} to verify: "
            "run it further, or lower verify.min_lower_bound"
        )
    ranked.sort(key=lambda r: (-r[0], r[2]))
    chosen = []
    for bound, mean, cid in ranked[: verify.top_k]:
        cand = store.get_candidate(cid)
        entry = log.db.entry_for(EXPERIMENT_KIND, first[cid])
        if entry is None:
            raise ConfigError(
                f"candidate {cand.name} of {source.name}: its record is not in this node's log "
                "yet (the campaign stopped before recording it): run the campaign again, "
                "which records what it finished"
            )
        chosen.append(
            Selected(
                candidate_id=cid,
                name=cand.name,
                code_digest=cand.digest,
                experiment_id=first[cid],
                leaf_hash=leaf_hash(entry.envelope).hex(),
                mean=mean,
                lower_bound=bound,
                seeds=len(by_candidate[cid]),
            )
        )
    return tuple(chosen)


def stage_config(store: Store, log: NodeLog, config: CampaignConfig) -> CampaignConfig:
    """`config` with its verification stage's choice filled in (unchanged when it is not
    a stage). A choice written by hand is refused: the node makes it from its own log."""
    if config.verify is None:
        return config
    if config.verify.selected:
        raise ConfigError(
            "verify.selected is filled in by the node from the source campaign; leave it out"
        )
    chosen = select(store, log, config.verify.source, config.verify)
    verify = config.verify.model_copy(update={"selected": chosen})
    return config.model_copy(update={"verify": verify})


@cache
def baseline_params(name: str, backbone: BackboneConfig) -> int:
    """Non-embedding parameters of baseline `name` in `backbone` (built on the meta device)."""
    import torch

    from kernels.baselines import BASELINES
    from loop.model import Backbone

    with torch.device("meta"):
        model = Backbone(BASELINES[name], backbone)
    return model.parameter_split()[1]


def matched_width(name: str, target: int, backbone: BackboneConfig, tolerance: float) -> int | None:
    """None when baseline `name` at the backbone's width is within `tolerance` of `target`
    non-embedding parameters; else the width (a multiple of the head count) whose count
    is closest. ValueError when no width comes within the tolerance."""
    if abs(baseline_params(name, backbone) - target) <= tolerance * target:
        return None
    step = backbone.n_heads
    best: tuple[float, int] | None = None
    for width in range(step, 8 * backbone.d_model + step, step):
        count = baseline_params(name, at_width(backbone, width))
        gap = abs(count - target) / target
        if best is None or gap < best[0]:
            best = (gap, width)
        if count > target:
            break  # the count grows with the width: wider only moves away
    assert best is not None
    if best[0] > tolerance:
        raise ValueError(
            f"no width of {name} comes within {tolerance:.0%} of {target:,} non-embedding "
            f"parameters (closest: d_model {best[1]}, {best[0]:.1%} off)"
        )
    return best[1]


def _mlp(backbone: BackboneConfig, width: int) -> int:
    """The MLP scales with the width, as the backbone's own choice does (0 stays 0)."""
    if backbone.mlp_hidden == 0:
        return 0
    from loop.model import swiglu_hidden

    return swiglu_hidden(width)


def at_width(backbone: BackboneConfig, width: int | None) -> BackboneConfig:
    """The backbone a matched baseline trains in."""
    if width is None:
        return backbone
    return dataclasses.replace(backbone, d_model=width, mlp_hidden=_mlp(backbone, width))


def matched_name(name: str, width: int | None) -> str:
    return name if width is None else f"{name}@d{width}"
