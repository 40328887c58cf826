"""The Engineer: one experiment from code to honest metrics.

1. static check in this (trusted) process; the code never runs here;
2. a sandboxed run screens the mixer, stops it there if it computes what a trained
   candidate computes (loop.probe), else trains the model and exports it as graphs;
3. a second sandboxed run, which loads no candidate code, evaluates those graphs on
   held-out data (MQAR: drawn from a seed the first run never saw; LM: the campaign's
   held-out windows, which training never reads) and on the campaign's staged zero-shot
   benchmarks, whose folder only this run is shown; it starts while training ends and
   waits for the graphs (loop.head_start), so its start-up adds no wall time;
4. a score that looks too good is evaluated again on a second held-out draw.
On a GPU node the experiment leases one GPU for steps 2 and 3: training and evaluation
both run on it. What training reported about itself (tokens seen, tokens/s, peak GPU
memory) goes into the metrics, and the seconds the GPU was held into the timings.
Failures of the candidate come back as an EvalResult with a failure class, never raised.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import shutil
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loop.devices import DevicePool, sandbox_gpu_env
from loop.head_start import HeadStart, due, hand_over
from loop.heartbeat import HEARTBEAT_FILE, OnProgress, Progress, watch
from loop.model import BackboneConfig
from loop.outcome import FailureClass
from loop.probe import Probe
from loop.sandbox import Limits, SandboxError, SandboxOutcome, run_sandboxed
from loop.screen import ScreenConfig, check_source
from loop.standby import NextStart, Standby, Standbys
from loop.tasks import TaskSpec
from loop.train import TrainConfig
from loop.train_device import DeviceConfig
from loop.worker import ARTIFACTS_DIR, evaluate_job, train_job

log = logging.getLogger(__name__)

RECHECK_SCORE = 0.98  # a mean accuracy at or above this is evaluated a second time
RECHECK_GAP = 0.05  # two held-out draws further apart than this mean something is wrong
HANDOFF_DIR = "handoff"  # the evaluators' view: the artifacts, moved here after training


@dataclass(frozen=True)
class ExperimentJob:
    """Everything one experiment needs; built by the scheduler from the store."""

    experiment_id: str
    code: str
    task: TaskSpec
    train: TrainConfig
    seed: int
    heldout_seed: int
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    options: Mapping[str, Any] = field(default_factory=dict)
    screen: ScreenConfig = field(default_factory=ScreenConfig)
    benchmarks: Path | None = None  # a staged benchmark folder (LM campaigns)
    # (label, probe) of the campaign's trained candidates: a candidate computing what one
    # of them computes stops after screening as a behaviour twin (loop.probe). Empty for
    # baselines and re-runs, which are never rejected.
    twins: tuple[tuple[str, Probe], ...] = ()
    # Called (from a watcher thread) with each new training heartbeat while it trains.
    on_progress: OnProgress | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class EvalResult:
    """How an experiment ended: metrics when it was scored, a failure class when not."""

    failure: FailureClass | None
    message: str
    screen: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    isolation: tuple[str, ...] = ()


def flat_metrics(evaluation: Mapping[str, Any]) -> dict[str, float]:
    """The evaluator's Metrics as the flat name -> number map the store keeps; standard
    errors sit beside their numbers as `<name>_stderr` (left out where not finite)."""
    params = float(evaluation["n_params"])
    embedding = float(evaluation.get("n_embedding_params") or 0)
    out: dict[str, float] = {
        "params": params,
        "params_embedding": embedding,
        "params_non_embedding": params - embedding,
        "state_size": float(evaluation["state_size"]),
        "eval_seconds": float(evaluation["eval_seconds"]),
    }
    if evaluation.get("time_ratio") is not None:
        out["time_ratio"] = float(evaluation["time_ratio"])
    if evaluation.get("peak_memory_bytes") is not None:
        out["eval_peak_gpu_memory_bytes"] = float(evaluation["peak_memory_bytes"])
    if evaluation["task"] == "lm":
        loss = float(evaluation["mean_loss"])
        out["heldout_loss"] = loss
        if loss < 700:  # records are strict JSON: no infinities
            out["heldout_ppl"] = math.exp(loss)
        out["heldout_acc"] = float(evaluation["mean_accuracy"])
        out["heldout_tokens"] = float(evaluation.get("n_targets") or 0)
        sets = evaluation.get("sets") or ()
        if sets:
            stderr = math.sqrt(sum(float(s.get("loss_stderr", math.nan)) ** 2 for s in sets))
            _finite(out, "heldout_loss_stderr", stderr / len(sets))
        out |= benchmark_metrics(evaluation.get("benchmarks") or ())
    else:
        out["mean_acc"] = float(evaluation["mean_accuracy"])
        for name, acc in evaluation["accuracies"].items():
            out[f"acc_{name}"] = float(acc)
    return out


def _finite(out: dict[str, float], name: str, value: float | None) -> None:
    if value is not None and math.isfinite(value):
        out[name] = float(value)


def benchmark_metrics(benchmarks: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """bench_<name>_<metric> (acc, acc_norm, ppl) with their standard errors and item
    counts, and bench_mean_acc: the mean of each benchmark's headline accuracy, with the
    standard error of that mean (the benchmarks' errors taken as independent)."""
    out: dict[str, float] = {}
    headline: list[tuple[float, float]] = []
    for bench in benchmarks:
        prefix = f"bench_{bench['name']}"
        out[f"{prefix}_items"] = float(bench["items"])
        for metric, key in (("acc", "acc"), ("acc_norm", "acc_norm"), ("perplexity", "ppl")):
            _finite(out, f"{prefix}_{key}", bench.get(metric))
            _finite(out, f"{prefix}_{key}_stderr", bench.get(f"{metric}_stderr"))
        name = bench["headline"]
        headline.append((float(bench[name]), float(bench[f"{name}_stderr"])))
    if headline:
        out["bench_mean_acc"] = sum(v for v, _ in headline) / len(headline)
        spread = math.sqrt(sum(e * e for _, e in headline)) / len(headline)
        _finite(out, "bench_mean_acc_stderr", spread)
    return out


def training_report(payload: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, float]]:
    """(metrics, timings) from what the training sandbox said about itself: tokens seen,
    tokens/s (the steady rate after warm-up on a GPU, else the whole run's), peak GPU
    memory, and the device's own training seconds and first step."""
    metrics: dict[str, float] = {}
    timings: dict[str, float] = {}
    train_log = payload.get("train_log") or {}
    throughput = payload.get("throughput") or {}
    tokens = throughput.get("tokens", train_log.get("tokens_seen"))
    if tokens:
        metrics["tokens_seen"] = float(tokens)
    rate = throughput.get("steady_tokens_per_s") or throughput.get("tokens_per_s")
    if rate is None and tokens and train_log.get("wall_seconds"):
        rate = float(tokens) / float(train_log["wall_seconds"])
    if rate:
        metrics["tokens_per_s"] = float(rate)
    if throughput.get("peak_memory_bytes") is not None:
        metrics["peak_gpu_memory_bytes"] = float(throughput["peak_memory_bytes"])
    if throughput:
        timings["train_device_s"] = float(throughput.get("seconds") or 0.0)
        timings["first_step_s"] = float(throughput.get("first_step_s") or 0.0)
    return metrics, timings


def second_seed(heldout_seed: int) -> int:
    """A second, independent held-out draw for the re-check."""
    digest = hashlib.sha256(f"recheck:{heldout_seed}".encode()).digest()
    return int.from_bytes(digest[:6], "big")


class Engineer:
    """Runs experiments in sandboxes under one set of limits; each in its own workspace.

    With a non-empty `devices` pool each training run leases one GPU for its duration and
    trains there (bf16, loop.train_device); evaluation stays on the CPU. With `standby`,
    each training run that ends starts the next one's sandbox (loop.standby); `close`
    stops those still idle.
    """

    def __init__(
        self,
        workspaces: Path,
        limits: Limits,
        keep_workspaces: bool = False,
        devices: DevicePool | None = None,
        standby: bool = False,
    ) -> None:
        self.workspaces = workspaces
        self.limits = limits
        self.keep = keep_workspaces
        self.devices = devices
        self._standbys = Standbys(workspaces, keep_workspaces) if standby else None
        self._running = 0  # experiments in `run` now: at most this many standbys wait
        self._running_lock = threading.Lock()

    def close(self) -> None:
        """Stop the standbys still waiting for a job."""
        if self._standbys is not None:
            self._standbys.close()

    @contextmanager
    def _training_device(self, limits: Limits) -> Iterator[tuple[Limits, DeviceConfig | None]]:
        """The limits and device for one experiment's sandboxes: a leased GPU, or the CPU."""
        if not self.devices:
            yield limits, None
            return
        # A GPU whose standby waits for these limits is leased first: the standby can only
        # serve an experiment on the GPU it was started for.
        on_gpu = {i: _on_gpu(limits, i) for i in self.devices.devices}
        standbys = self._standbys
        prefer = {i for i, lim in on_gpu.items() if standbys is not None and standbys.waiting(lim)}
        with self.devices.lease(prefer=prefer) as index:
            yield on_gpu[index], DeviceConfig("cuda")

    def run(self, job: ExperimentJob, cancel: threading.Event | None = None) -> EvalResult:
        started = time.perf_counter()
        timings: dict[str, float] = {}
        static = check_source(job.code)
        timings["check_s"] = time.perf_counter() - started
        if not static.passed:
            assert static.failure is not None
            return EvalResult(
                static.failure,
                static.message,
                screen=_screen_json(static.checks, static.failure, static.message),
                timings=_total(timings, started),
            )
        root = self.workspaces / job.experiment_id
        if root.exists():
            shutil.rmtree(root)  # a previous attempt's leftovers
        root.mkdir(parents=True, mode=0o711)
        with self._running_lock:
            self._running += 1
        try:
            return self._sandboxed(job, root, timings, started, cancel)
        finally:
            with self._running_lock:
                self._running -= 1
            if not self.keep:
                shutil.rmtree(root, ignore_errors=True)

    def _sandboxed(
        self,
        job: ExperimentJob,
        root: Path,
        timings: dict[str, float],
        started: float,
        cancel: threading.Event | None,
    ) -> EvalResult:
        # Training never sees the staged benchmarks (their answers): masked like the home.
        limits = dataclasses.replace(
            self.limits,
            threads=job.train.threads,
            readable_paths=self._data_dirs(job.task),
            hidden_paths=(*self.limits.hidden_paths, *self._benchmark_dirs(job)),
        )
        with self._training_device(limits) as (limits, device):
            leased = time.perf_counter()
            result = self._train_and_evaluate(job, root, timings, started, cancel, limits, device)
            if device is None:
                return result
            held = {"gpu_s": time.perf_counter() - leased}
            return dataclasses.replace(result, timings=result.timings | held)

    def _train_and_evaluate(
        self,
        job: ExperimentJob,
        root: Path,
        timings: dict[str, float],
        started: float,
        cancel: threading.Event | None,
        limits: Limits,
        device: DeviceConfig | None,
    ) -> EvalResult:
        # Evaluation runs where training did: on a GPU node, the GPU this experiment holds.
        # The evaluators see the hand-off folder, empty until training has ended.
        handoff = root / HANDOFF_DIR
        handoff.mkdir(mode=0o755)
        readable = (handoff, *self._data_dirs(job.task), *self._benchmark_dirs(job))
        eval_limits = dataclasses.replace(
            limits, readable_paths=readable, hidden_paths=self.limits.hidden_paths
        )
        eval_device = "cpu" if device is None else "cuda"
        artifacts = handoff / ARTIFACTS_DIR
        spec = self._evaluate_spec(job, artifacts, job.heldout_seed, eval_device, wait=True)
        standby, next_start = None, None
        if self._standbys is not None:
            standby = self._standbys.take(limits)
            next_start = NextStart(self._standbys, limits, lambda: self._running)
        workspace = root / "train" if standby is None else standby.workspace
        try:
            with HeadStart(spec, root / "eval", eval_limits) as ahead:

                def on_progress(progress: Progress) -> None:
                    if job.on_progress is not None:
                        job.on_progress(progress)
                    if due(progress):
                        ahead.start()
                    if next_start is not None and progress.step == progress.steps:
                        next_start.now()  # training's loop is done: it exports now

                with watch(workspace / HEARTBEAT_FILE, on_progress):
                    trained, workspace = self._train(
                        job, root, cancel, limits, device, standby, timings
                    )
                if next_start is not None and not (cancel is not None and cancel.is_set()):
                    next_start.now()
                return self._evaluated(
                    job,
                    root,
                    timings,
                    started,
                    cancel,
                    trained,
                    workspace,
                    ahead,
                    eval_limits,
                    eval_device,
                )
        finally:
            if next_start is not None:
                next_start.cancel()  # a run stopped or failed before its training ended
            if standby is not None and self._standbys is not None:
                self._standbys.remove(standby)

    def _train(
        self,
        job: ExperimentJob,
        root: Path,
        cancel: threading.Event | None,
        limits: Limits,
        device: DeviceConfig | None,
        standby: Standby | None,
        timings: dict[str, float],
    ) -> tuple[SandboxOutcome, Path]:
        """The training run, in `standby` when one was taken, and its workspace;
        `sandbox_train_s` is its wall time from the job's hand-in."""
        handed = time.perf_counter()
        train_spec = train_job(
            job.code,
            job.task,
            job.train,
            options=job.options,
            backbone=job.backbone,
            model_seed=job.seed,
            screen=job.screen,
            device=device,
            twins=job.twins,
        )
        if standby is not None:
            outcome = standby.run(train_spec, cancel)
            if outcome is not None:
                timings["train_started_ahead_s"] = standby.waited_s
                timings["sandbox_train_s"] = time.perf_counter() - handed
                return outcome, standby.workspace
        workspace = root / "train"
        outcome = run_sandboxed(train_spec, workspace, limits, stop=cancel)
        timings["sandbox_train_s"] = time.perf_counter() - handed
        return outcome, workspace

    def _evaluated(
        self,
        job: ExperimentJob,
        root: Path,
        timings: dict[str, float],
        started: float,
        cancel: threading.Event | None,
        trained: SandboxOutcome,
        workspace: Path,
        ahead: HeadStart,
        limits: Limits,
        device: str,
    ) -> EvalResult:
        """The experiment's result from its training run (in `workspace`): the
        evaluation's, when it trained and exported (and a re-check's on a second draw for
        a top score)."""
        if trained.cpu_s is not None:
            timings["sandbox_train_cpu_s"] = trained.cpu_s
        payload = (trained.result or {}).get("payload") or {}
        inner = payload.get("timings") or {}
        train_log = payload.get("train_log") or {}
        timings |= {f"worker_{k}_s": float(v) for k, v in inner.items()}
        timings["train_s"] = float(train_log.get("wall_seconds", 0.0))
        if "cpu_seconds" in train_log:
            timings["train_cpu_s"] = float(train_log["cpu_seconds"])
        if "export" in payload:
            timings["export_s"] = float(payload["export"].get("seconds", 0.0))
        reported, device_timings = training_report(payload)
        timings |= device_timings
        screen = (trained.result or {}).get("screen") or {}
        if not trained.ok:
            assert trained.failure is not None
            return EvalResult(
                trained.failure,
                _message(trained),
                screen=screen,
                train=train_log,
                metrics=reported,
                timings=_total(timings, started),
                isolation=trained.isolation,
            )
        # Decided before the hand-over, so that a run not used never sees the artifacts.
        use_ahead = ahead.usable()
        if not use_ahead:
            ahead.stop()
            shutil.rmtree(root / "eval", ignore_errors=True)
        # Only now, with nothing of the candidate's running, do the evaluators see them.
        artifacts = root / HANDOFF_DIR / ARTIFACTS_DIR
        hand_over(workspace / ARTIFACTS_DIR, artifacts)
        evaluation, failure, message = self._evaluate(
            job,
            artifacts,
            job.heldout_seed,
            root,
            cancel,
            timings,
            limits,
            device,
            ahead=ahead if use_ahead else None,
        )
        if failure is None and evaluation is not None:
            metrics = flat_metrics(evaluation) | reported
            score = metrics.get("mean_acc")
            if score is not None and score >= RECHECK_SCORE:
                again, failure, message = self._evaluate(
                    job,
                    artifacts,
                    second_seed(job.heldout_seed),
                    root,
                    cancel,
                    timings,
                    limits,
                    device,
                    "recheck",
                )
                if again is not None:
                    other = flat_metrics(again)["mean_acc"]
                    metrics["recheck_mean_acc"] = other
                    if abs(other - score) > RECHECK_GAP:
                        failure = FailureClass.BAD_OUTPUT
                        message = (
                            f"held-out re-check disagrees: {score:.3f} then {other:.3f}; "
                            "the score is not trusted"
                        )
            return EvalResult(
                failure,
                message,
                screen=screen,
                train=train_log,
                metrics=metrics,
                timings=_total(timings, started),
                isolation=trained.isolation,
            )
        return EvalResult(
            failure or FailureClass.BAD_OUTPUT,
            message,
            screen=screen,
            train=train_log,
            metrics=reported,
            timings=_total(timings, started),
            isolation=trained.isolation,
        )

    def _data_dirs(self, task: Any) -> tuple[Path, ...]:
        """The folder of the task's data shard (an LM task on tokenised data): readable
        in the jail even under a hidden path such as the node's home. SandboxError when
        that folder holds a hidden path itself: exposing it would expose the node's keys."""
        data_path = getattr(task, "data_path", None)
        if data_path is None:
            return ()
        folder = Path(data_path).resolve().parent
        self._refuse_hidden(folder, f"the data shard {data_path} lies", "shards")
        return (folder,)

    def _benchmark_dirs(self, job: ExperimentJob) -> tuple[Path, ...]:
        """The staged benchmark folder: hidden from training (a candidate must not read
        the answers), shown to the evaluator, and refused when it holds a hidden path."""
        if job.benchmarks is None:
            return ()
        folder = job.benchmarks.resolve()
        self._refuse_hidden(folder, "the staged benchmarks lie", "staged benchmarks")
        return (folder,)

    def _refuse_hidden(self, folder: Path, what: str, kind: str) -> None:
        for hidden in self.limits.hidden_paths:
            if hidden.resolve().is_relative_to(folder):
                raise SandboxError(
                    f"{what} in {folder}, which holds the hidden {hidden}: keep "
                    f"{kind} in a folder of their own"
                )

    def _evaluate(
        self,
        job: ExperimentJob,
        artifacts: Path,
        heldout_seed: int,
        root: Path,
        cancel: threading.Event | None,
        timings: dict[str, float],
        limits: Limits,
        device: str,
        label: str = "eval",
        ahead: HeadStart | None = None,
    ) -> tuple[dict[str, Any] | None, FailureClass | None, str]:
        """Evaluate in `ahead`, the evaluator started while training ended, or else in a
        fresh sandbox; `sandbox_<label>_s` is the wall time from here to its end."""
        handed = time.perf_counter()
        if ahead is not None:
            assert ahead.started_at is not None
            timings[f"{label}_started_ahead_s"] = handed - ahead.started_at
            outcome = ahead.result(cancel)
        else:
            spec = self._evaluate_spec(job, artifacts, heldout_seed, device, wait=False)
            outcome = run_sandboxed(spec, root / label, limits, stop=cancel)
        timings[f"sandbox_{label}_s"] = time.perf_counter() - handed
        if outcome.cpu_s is not None:
            timings[f"sandbox_{label}_cpu_s"] = outcome.cpu_s
        payload = (outcome.result or {}).get("payload") or {}
        evaluation = (payload.get("evaluation") or {}).get("metrics")
        if not outcome.ok:
            return evaluation, outcome.failure, _message(outcome)
        if evaluation is None:
            return None, FailureClass.BAD_OUTPUT, "the evaluator returned no metrics"
        return evaluation, None, ""

    def _evaluate_spec(
        self, job: ExperimentJob, artifacts: Path, heldout_seed: int, device: str, *, wait: bool
    ) -> dict[str, Any]:
        return evaluate_job(
            artifacts,
            job.task,
            heldout_seed,
            threads=job.train.threads,
            device=device,
            benchmarks=job.benchmarks,
            wait_for_artifacts=wait,
        )


def _on_gpu(limits: Limits, index: int) -> Limits:
    """`limits` for a sandbox that sees only GPU `index`."""
    return dataclasses.replace(
        limits, extra_env={**limits.extra_env, **sandbox_gpu_env(index)}, gpu=True
    )


def _message(outcome: SandboxOutcome) -> str:
    if outcome.message:
        return outcome.message
    return outcome.stderr_tail[-2000:]


def _screen_json(checks: Any, failure: FailureClass | None, message: str) -> dict[str, Any]:
    return {
        "checks": [dataclasses.asdict(c) for c in checks],
        "failure": None if failure is None else str(failure),
        "message": message,
    }


def _total(timings: dict[str, float], started: float) -> dict[str, float]:
    timings["total_s"] = time.perf_counter() - started
    return timings
