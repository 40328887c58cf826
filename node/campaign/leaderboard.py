"""The leaderboard: one row per candidate, derived from its experiments, never stored."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from attestation.schema import CandidateOrigin, ExperimentStatus
from loop.analyst import over_seeds, promotion
from node.store import CampaignRow, CandidateRow, ExperimentRow, Store


class Standing(StrEnum):
    """Where a candidate stands: its first experiment's status, or how it scored."""

    QUEUED = "queued"
    RUNNING = "running"
    SCORED = "scored"
    PROMOTED = "promoted"  # scored on every seed the campaign asks for, above the margin
    FAILED = "failed"
    INTERRUPTED = "interrupted"


@dataclass(frozen=True)
class Row:
    """A candidate as the leaderboard shows it: first-seed metrics, fitness as the mean over
    every seed scored so far (a lucky first seed drops as its re-runs come in)."""

    candidate_id: str
    name: str
    origin: CandidateOrigin
    status: Standing
    failure_class: str | None
    accuracies: dict[str, float] = field(default_factory=dict)
    score: float | None = None
    state_size: int | None = None
    params: int | None = None
    fitness: float | None = None  # the mean over every seed scored so far
    spread: float | None = None  # its seeds' sample standard deviation
    seeds: int = 0
    experiment_id: str | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def build(
    candidates: Sequence[CandidateRow],
    experiments: Sequence[ExperimentRow],
    promote_margin: float = 0.0,
    seeds_needed: int = 3,
) -> list[Row]:
    """Rows sorted best first: scored by fitness, then unscored, then failures."""
    by_candidate: dict[str, list[ExperimentRow]] = {}
    for exp in experiments:
        by_candidate.setdefault(exp.candidate_id, []).append(exp)
    rows: list[Row] = []
    for cand in candidates:
        exps = sorted(by_candidate.get(cand.id, []), key=lambda e: e.seq)
        if not exps:
            continue
        first = exps[0]
        metrics = first.metrics or {}
        fits = [
            e.fitness for e in exps if e.status is ExperimentStatus.DONE and e.fitness is not None
        ]
        seeds = over_seeds(fits)
        if first.status is not ExperimentStatus.DONE:
            status = Standing(first.status)
        else:
            status = Standing.SCORED
            if len(fits) >= seeds_needed:
                verdict = promotion(fits, promote_margin, seeds_needed)
                status = Standing.PROMOTED if verdict.promoted else Standing.SCORED
        accs = {k.removeprefix("acc_"): v for k, v in metrics.items() if k.startswith("acc_")}
        score = metrics.get(
            "mean_acc", -metrics["heldout_loss"] if "heldout_loss" in metrics else None
        )
        rows.append(
            Row(
                candidate_id=cand.id,
                name=cand.name,
                origin=cand.origin,
                status=status,
                failure_class=first.failure_class,
                accuracies=accs,
                score=score,
                state_size=int(metrics["state_size"]) if "state_size" in metrics else None,
                params=int(metrics["params"]) if "params" in metrics else None,
                fitness=seeds.mean if seeds and first.status is ExperimentStatus.DONE else None,
                spread=seeds.spread if seeds else None,
                seeds=len(fits),
                experiment_id=first.id,
            )
        )

    def order(row: Row) -> tuple[int, float, str]:
        if row.fitness is not None:
            return (0, -row.fitness, row.name)
        if row.status in (Standing.FAILED, Standing.INTERRUPTED):
            return (2, 0.0, row.name)
        return (1, 0.0, row.name)

    return sorted(rows, key=order)


def for_campaign(store: Store, campaign: CampaignRow) -> list[Row]:
    """The leaderboard of a stored campaign, promotion judged by its own config."""
    config = campaign.config
    return build(
        store.list_candidates(campaign.id),
        store.list_experiments(campaign.id),
        promote_margin=float(config.get("promote_margin", 0.0)),
        seeds_needed=1 + len(config.get("rerun_seeds", ())),
    )


def _set_order(name: str) -> tuple[int, ...] | tuple[float, str]:
    """Test sets named like '128x32' sort by length, then pairs; other names after."""
    parts = name.split("x")
    if len(parts) == 2 and all(p.isdigit() for p in parts):
        return (int(parts[0]), int(parts[1]))
    return (float("inf"), name)


NAME_WIDTH = 40


def _cut(name: str) -> str:
    """A name that fits its column; a cut one ends in an ellipsis (the id tells rows
    apart whose names begin alike)."""
    return name if len(name) <= NAME_WIDTH else name[: NAME_WIDTH - 1] + "…"


def render(rows: Sequence[Row]) -> str:
    """A fixed-width text table for the terminal."""
    sets = sorted({k for r in rows for k in r.accuracies}, key=_set_order)
    head = (
        f"{'#':>2}  {'candidate':<17} {'name':<{NAME_WIDTH}} {'origin':<8} "
        + " ".join(f"{s:>7}" for s in sets)
        + f" {'mean':>6} {'state':>7} {'params':>7} {'fitness':>8} {'spread':>6}"
        + f" {'seeds':>5}  status"
    )
    lines = [head, "-" * len(head)]
    for i, r in enumerate(rows, 1):
        accs = " ".join(
            f"{r.accuracies[s]:7.3f}" if s in r.accuracies else f"{'-':>7}" for s in sets
        )
        score = f"{r.score:6.3f}" if r.score is not None else f"{'-':>6}"
        state = f"{r.state_size:7d}" if r.state_size is not None else f"{'-':>7}"
        params = f"{r.params:7d}" if r.params is not None else f"{'-':>7}"
        fit = f"{r.fitness:+8.3f}" if r.fitness is not None else f"{'-':>8}"
        spread = f"{r.spread:6.3f}" if r.spread is not None and r.seeds > 1 else f"{'-':>6}"
        status = r.status + (f" ({r.failure_class})" if r.failure_class else "")
        lines.append(
            f"{i:>2}  {r.candidate_id:<17} {_cut(r.name):<{NAME_WIDTH}} {r.origin:<8} "
            f"{accs} {score} {state} {params} {fit} "
            f"{spread} {r.seeds:>5}  {status}"
        )
    return "\n".join(lines)
