"""Test doubles for the node: an Engineer that scores code without training it."""

from __future__ import annotations

import hashlib
import threading

from loop.engineer import EvalResult, ExperimentJob
from loop.outcome import FailureClass

SETS = ("64x8", "128x16", "128x32", "256x64")


class FakeEngineer:
    """Scores from the code's digest; DeltaNet sits at 0.6, so some candidates beat it."""

    def __init__(self, fail_every: int = 0, best: float = 0.8) -> None:
        self.jobs: list[ExperimentJob] = []
        self.fail_every = fail_every
        self.best = best
        self.lock = threading.Lock()

    def score(self, job: ExperimentJob) -> float:
        if "DeltaNet as Mixer" in job.code:
            return 0.6
        if "LinearAttention as Mixer" in job.code:
            return 0.3
        h = int(hashlib.sha256(job.code.encode()).hexdigest()[:8], 16)
        return 0.3 + (self.best - 0.3) * (h % 1000) / 999

    def run(self, job: ExperimentJob, cancel: threading.Event | None = None) -> EvalResult:
        with self.lock:
            self.jobs.append(job)
            n = len(self.jobs)
        if self.fail_every and n % self.fail_every == 0 and "kernels.baselines" not in job.code:
            return EvalResult(FailureClass.FUTURE_LEAK, "outputs moved when future tokens changed")
        score = self.score(job) + 0.002 * job.seed
        metrics = {f"acc_{s}": score for s in SETS}
        metrics |= {"mean_acc": score, "state_size": 4096.0, "params": 20000.0}
        return EvalResult(None, "", metrics=metrics, timings={"total_s": 1.0, "train_s": 0.9})
