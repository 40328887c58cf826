"""The discovery rate: promoted candidates per compute-hour a campaign spent.

Compute is what the experiments held, read from the timings each one recorded:

- GPU-hours: the `gpu_s` of the experiments that trained on a GPU (the seconds the
  experiment leased its GPU, training and evaluation; one GPU each);
- CPU-hours: for the others, `total_s` (the experiment's wall time, from the static
  check to the last evaluation) times the torch threads each worker is given (the
  node's `loop.threads_per_worker`; the sandbox runs with that many threads, so that
  many cores are the experiment's while it runs).

Every experiment that recorded timings counts: baselines, re-runs and failed ones too.
One put back in the queue (a pause, a shutdown) recorded none, and its lost run is not
counted; nor are the debugger's intermediate repair rounds, which are not experiments.
A fork's experiments include the copies it inherited, so a fork counts its parent's
compute and promotions up to the fork point.

Promotion is the leaderboard's (`Standing.PROMOTED`), counted over generated candidates
only: a baseline is no discovery. The rate is in GPU-hours when any experiment of the
campaign trained on a GPU, else in CPU-hours; None until some compute is recorded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from attestation.schema import CandidateOrigin
from node.campaign import leaderboard
from node.campaign.leaderboard import Standing
from node.store import CampaignRow, ExperimentRow, Store


class ComputeUnit(StrEnum):
    GPU = "gpu"
    CPU = "cpu"


@dataclass(frozen=True)
class Discovery:
    """A campaign's promoted candidates, the compute it spent, and their ratio."""

    promoted: int
    experiments: int  # those that recorded timings, i.e. were costed
    gpu_hours: float
    cpu_hours: float
    unit: ComputeUnit  # the unit of `compute_hours` and `rate`
    compute_hours: float
    rate: float | None  # promoted per compute-hour; None while no compute is recorded

    def line(self) -> str:
        """One line for the terminal."""
        label = "GPU-hour" if self.unit is ComputeUnit.GPU else "CPU-hour"
        rate = "-" if self.rate is None else f"{self.rate:.3g}"
        extra = (
            f" (+{self.cpu_hours:.3g} CPU-hours off the GPUs)"
            if self.unit is ComputeUnit.GPU and self.cpu_hours > 0
            else ""
        )
        return (
            f"discovery: {self.promoted} promoted in {self.compute_hours:.3g} {label}s over "
            f"{self.experiments} experiments{extra}: {rate} per {label}"
        )


def compute_seconds(timings: Mapping[str, float] | None, threads: int) -> tuple[float, float]:
    """(GPU-seconds, CPU-seconds) of one experiment's timings; (0, 0) without any."""
    if not timings:
        return 0.0, 0.0
    if "gpu_s" in timings:
        return float(timings["gpu_s"]), 0.0
    return 0.0, float(timings.get("total_s", 0.0)) * threads


def measure(
    rows: Sequence[leaderboard.Row],
    experiments: Sequence[ExperimentRow],
    threads_per_worker: int,
) -> Discovery:
    """The discovery figures from a leaderboard and the experiments behind it."""
    if threads_per_worker < 1:
        raise ValueError("threads_per_worker must be at least 1")
    promoted = sum(
        1
        for r in rows
        if r.status is Standing.PROMOTED and r.origin is not CandidateOrigin.BASELINE
    )
    gpu_s = cpu_s = 0.0
    costed = 0
    for exp in experiments:
        if not exp.timings:
            continue
        gpu, cpu = compute_seconds(exp.timings, threads_per_worker)
        gpu_s += gpu
        cpu_s += cpu
        costed += 1
    unit = ComputeUnit.GPU if gpu_s > 0 else ComputeUnit.CPU
    hours = (gpu_s if unit is ComputeUnit.GPU else cpu_s) / 3600
    return Discovery(
        promoted=promoted,
        experiments=costed,
        gpu_hours=gpu_s / 3600,
        cpu_hours=cpu_s / 3600,
        unit=unit,
        compute_hours=hours,
        rate=promoted / hours if hours > 0 else None,
    )


def for_campaign(store: Store, campaign: CampaignRow, threads_per_worker: int) -> Discovery:
    """The discovery figures of a stored campaign, promotion judged by its own config."""
    return measure(
        leaderboard.for_campaign(store, campaign),
        store.list_experiments(campaign.id),
        threads_per_worker,
    )
