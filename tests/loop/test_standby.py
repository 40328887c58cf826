"""A training sandbox started before its job: the next experiment takes it, under the
same limits, and gets what a fresh sandbox would have given it."""

from __future__ import annotations

import json
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from test_head_start import FakeSandboxes as HeadStartSandboxes
from test_sandbox import GOOD_MIXER

from loop import standby as standby_module
from loop.devices import DevicePool
from loop.engineer import Engineer, EvalResult, ExperimentJob
from loop.heartbeat import HEARTBEAT_FILE
from loop.model import BackboneConfig
from loop.outcome import FailureClass
from loop.sandbox import Limits, SandboxOutcome
from loop.standby import NextStart, Standbys
from loop.tasks import MQARSpec
from loop.train import TrainConfig
from loop.worker import JOB_FILE, STANDBY_IDLE, run_job, screen_job, standby_job


def _outcome(failure: FailureClass | None, message: str = "") -> SandboxOutcome:
    result: dict[str, Any] = {"failure": failure, "message": message, "payload": {}}
    return SandboxOutcome(0, result, failure, message, "", 0.0, ("fake",))


class FakeSandboxes(HeadStartSandboxes):
    """The head start's fake sandboxes, and standbys: a standby waits for its job file
    (or gives up after `wait_s`), then runs it as a training run."""

    def __init__(self, wait_s: float = 5.0) -> None:
        super().__init__(beat=False)
        self.wait_s = wait_s
        self.runs: list[tuple[str, Path, Limits]] = []  # (kind as started, workspace, limits)
        self.handed: list[Path] = []  # the standbys' workspaces that were handed a job
        self.standby_seen_in_training = False

    def __call__(
        self,
        spec: dict[str, Any],
        workspace: Path,
        limits: Limits,
        *,
        stop: threading.Event | None = None,
    ) -> SandboxOutcome:
        with self.lock:
            self.runs.append((spec["kind"], workspace, limits))
        if spec["kind"] == "standby":
            path = Path(spec["job_file"])
            deadline = time.monotonic() + self.wait_s
            while not path.is_file():
                if stop is not None and stop.is_set():
                    return _outcome(FailureClass.INTERRUPTED)
                if time.monotonic() > deadline:
                    return _outcome(None, STANDBY_IDLE)
                time.sleep(0.01)
            spec = json.loads(path.read_text())
            with self.lock:
                self.handed.append(workspace)
        return super().__call__(spec, workspace, limits, stop=stop)

    def kinds(self) -> list[str]:
        return [kind for kind, _, _ in self.runs]


@pytest.fixture
def sandboxes(monkeypatch: pytest.MonkeyPatch) -> FakeSandboxes:
    fake = FakeSandboxes()
    for where in ("loop.engineer", "loop.head_start"):
        monkeypatch.setattr(f"{where}.run_sandboxed", fake)
    return fake


def _job(experiment_id: str, steps: int = 10, threads: int = 1) -> ExperimentJob:
    spec = MQARSpec.quick()
    return ExperimentJob(
        experiment_id=experiment_id,
        code=GOOD_MIXER,
        task=spec,
        train=TrainConfig(steps=steps, abort_step=None, threads=threads),
        seed=0,
        heldout_seed=1234,
        backbone=BackboneConfig(vocab_size=spec.vocab_size),
    )


def _standby_dirs(workspaces: Path) -> list[str]:
    return sorted(p.name for p in workspaces.glob(".standby-*"))


def test_the_next_experiment_trains_in_the_standby_the_last_one_started(
    tmp_path: Path, sandboxes: FakeSandboxes
) -> None:
    engineer = Engineer(tmp_path / "ws", Limits(), standby=True)
    first = engineer.run(_job("e1"))
    assert first.failure is None and "train_started_ahead_s" not in first.timings
    waiting = _standby_dirs(tmp_path / "ws")
    assert len(waiting) == 1  # started when e1's training ended
    second = engineer.run(_job("e2"))
    assert second.failure is None, second.message
    assert second.timings["train_started_ahead_s"] > 0
    assert sandboxes.handed == [tmp_path / "ws" / waiting[0] / "train"]
    # The standby's jail shows its hand-in folder, read-only, besides what training sees.
    standby_limits = next(lim for kind, _, lim in sandboxes.runs if kind == "standby")
    assert standby_limits.readable_paths == (tmp_path / "ws" / waiting[0] / "handin",)
    engineer.close()
    assert _standby_dirs(tmp_path / "ws") == []  # the used one removed, the idle one stopped
    # e1: fresh training, evaluation, the standby e2 trains in, then e2's evaluation and
    # the standby started for a next experiment.
    assert sorted(sandboxes.kinds()) == ["evaluate", "evaluate", "standby", "standby", "train"]


def test_a_standby_serves_only_jobs_under_its_own_limits(
    tmp_path: Path, sandboxes: FakeSandboxes
) -> None:
    engineer = Engineer(tmp_path / "ws", Limits(), standby=True)
    engineer.run(_job("e1", threads=1))
    other = engineer.run(_job("e2", threads=2))  # another thread count: other limits
    assert "train_started_ahead_s" not in other.timings
    assert sandboxes.handed == []
    engineer.close()


def test_a_standby_that_waited_too_long_is_stopped_not_used(
    tmp_path: Path, sandboxes: FakeSandboxes, monkeypatch: pytest.MonkeyPatch
) -> None:
    engineer = Engineer(tmp_path / "ws", Limits(), standby=True)
    engineer.run(_job("e1"))
    monkeypatch.setattr(standby_module, "MAX_IDLE_S", 0.0)
    late = engineer.run(_job("e2"))
    assert late.failure is None and "train_started_ahead_s" not in late.timings
    assert sandboxes.handed == []
    engineer.close()
    assert _standby_dirs(tmp_path / "ws") == []


def test_a_standby_that_gave_up_waiting_leaves_the_job_to_a_fresh_sandbox(
    tmp_path: Path, sandboxes: FakeSandboxes
) -> None:
    sandboxes.wait_s = 0.0  # the runner gives up at once, though the node still counts it
    engineer = Engineer(tmp_path / "ws", Limits(), standby=True)
    engineer.run(_job("e1"))
    time.sleep(0.1)
    standbys = engineer._standbys
    assert standbys is not None
    taken = standbys.take(Limits(threads=1))
    assert taken is None  # its run has ended: no longer usable
    result = engineer.run(_job("e2"))
    assert result.failure is None and "train_started_ahead_s" not in result.timings


def test_a_handed_job_that_came_too_late_is_left_to_the_caller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner gave up just before the job came: `Standby.run` says so (None), and the
    Engineer then runs the job in a fresh sandbox."""
    calls: list[str] = []

    def gave_up(spec: dict[str, Any], workspace: Path, limits: Limits, **_: Any) -> SandboxOutcome:
        calls.append(spec["kind"])
        return _outcome(None, STANDBY_IDLE)

    monkeypatch.setattr("loop.head_start.run_sandboxed", gave_up)
    standby = standby_module.Standby(tmp_path / "s", Limits())
    standby.start()
    assert standby.run(screen_job(GOOD_MIXER), None) is None
    assert calls == ["standby"]


def test_idle_standbys_are_capped(tmp_path: Path, sandboxes: FakeSandboxes) -> None:
    pool = Standbys(tmp_path / "ws")
    for _ in range(3):
        pool.start(Limits(), cap=2)
    assert len(_standby_dirs(tmp_path / "ws")) == 2
    pool.close()
    assert _standby_dirs(tmp_path / "ws") == []
    assert sandboxes.handed == []


def test_the_next_standby_starts_once(tmp_path: Path, sandboxes: FakeSandboxes) -> None:
    pool = Standbys(tmp_path / "ws")
    started = NextStart(pool, Limits(), lambda: 5)
    started.now()  # the last step's beat
    started.now()  # the training run's end
    assert len(_standby_dirs(tmp_path / "ws")) == 1
    stopped = NextStart(pool, Limits(), lambda: 5)
    stopped.cancel()  # the run failed or was stopped
    stopped.now()
    assert len(_standby_dirs(tmp_path / "ws")) == 1
    pool.close()


def test_an_experiment_leases_the_gpu_its_standby_was_started_for(
    tmp_path: Path, sandboxes: FakeSandboxes
) -> None:
    pool = DevicePool([0, 1])
    engineer = Engineer(tmp_path / "ws", Limits(), devices=pool, standby=True)
    with ExitStack() as gpu0:
        assert gpu0.enter_context(pool.lease()) == 0
        assert engineer.run(_job("e1")).failure is None  # on GPU 1; its standby is GPU 1's
        with pool.lease() as gpu1:
            assert gpu1 == 1
            gpu0.close()
    # GPU 0 is now the first free one; the next experiment still leases GPU 1.
    second = engineer.run(_job("e2"))
    assert second.timings["train_started_ahead_s"] > 0
    trained_on = [
        lim.extra_env["CUDA_VISIBLE_DEVICES"]
        for kind, _, lim in sandboxes.runs
        if kind != "evaluate"
    ]
    assert trained_on == ["1", "1", "1"]  # e1, the standby e2 trained in, the next standby
    engineer.close()


def test_a_lease_prefers_the_free_gpus_it_is_given() -> None:
    pool = DevicePool([0, 1, 2])
    with pool.lease(prefer={2}) as first, pool.lease(prefer={2}) as second:
        assert (first, second) == (2, 0)  # 2 is busy the second time: the first free one
    with pool.lease() as plain:
        assert plain == 1  # the free order is kept: 1, then 2 and 0 as they came back


def test_the_standby_starts_at_training_s_last_step_while_it_exports(
    tmp_path: Path, sandboxes: FakeSandboxes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The training run beats its last step, then "exports" until a standby is running:
    the Engineer started it from the beat, not at the run's end."""
    monkeypatch.setattr("loop.heartbeat.POLL_INTERVAL_S", 0.02)
    train = sandboxes._train

    def beating(workspace: Path) -> SandboxOutcome:
        beat = {"step": 10, "steps": 10, "loss": 2.0, "tok_s": 100.0, "elapsed_s": 1.0}
        (workspace / HEARTBEAT_FILE).write_text(json.dumps(beat))
        deadline = time.monotonic() + 5.0
        while "standby" not in sandboxes.kinds() and time.monotonic() < deadline:
            time.sleep(0.01)
        sandboxes.standby_seen_in_training = "standby" in sandboxes.kinds()
        return train(workspace)

    monkeypatch.setattr(sandboxes, "_train", beating)
    engineer = Engineer(tmp_path / "ws", Limits(), standby=True)
    assert engineer.run(_job("e1")).failure is None
    assert sandboxes.standby_seen_in_training
    engineer.close()


def test_a_standby_runner_runs_the_job_handed_in(tmp_path: Path) -> None:
    handin = tmp_path / "handin"
    handin.mkdir()
    workspace = tmp_path / "w"
    workspace.mkdir()
    (workspace / JOB_FILE).write_text(json.dumps(standby_job(handin / JOB_FILE, 30.0)))
    results: list[dict[str, Any]] = []
    thread = threading.Thread(target=lambda: results.append(run_job(workspace)))
    thread.start()
    time.sleep(0.3)
    assert thread.is_alive() and not (workspace / "candidate.py").exists()
    (handin / JOB_FILE).write_text(json.dumps(screen_job(GOOD_MIXER)))
    thread.join(60.0)
    (result,) = results
    assert result["failure"] is None, result["message"]
    assert {c["name"] for c in result["screen"]["checks"]} >= {"causality"}
    assert (workspace / "candidate.py").read_text() == GOOD_MIXER


def test_a_standby_runner_without_a_job_ends_idle(tmp_path: Path) -> None:
    workspace = tmp_path / "w"
    workspace.mkdir()
    (workspace / JOB_FILE).write_text(json.dumps(standby_job(tmp_path / "none" / JOB_FILE, 0.1)))
    result = run_job(workspace)
    assert result["failure"] is None and result["message"] == STANDBY_IDLE


def test_a_standby_trains_and_scores_what_a_fresh_sandbox_does(tmp_path: Path) -> None:
    """Real sandboxes (jailed where the host allows): the same job in a fresh sandbox,
    then in the standby the first run started."""
    engineer = Engineer(tmp_path / "ws", Limits(wall_s=300), standby=True)
    results: list[EvalResult] = []
    for name in ("fresh", "standby"):
        results.append(engineer.run(_job(name, steps=30), threading.Event()))
    engineer.close()
    fresh, ahead = results
    assert fresh.failure is None and ahead.failure is None, (fresh.message, ahead.message)
    assert "train_started_ahead_s" in ahead.timings and "train_started_ahead_s" not in fresh.timings
    assert ahead.isolation == fresh.isolation
    timing = {"eval_seconds", "time_ratio", "tokens_per_s"}
    assert {k: v for k, v in ahead.metrics.items() if k not in timing} == {
        k: v for k, v in fresh.metrics.items() if k not in timing
    }
    assert ahead.train["final_loss"] == fresh.train["final_loss"]
    assert _standby_dirs(tmp_path / "ws") == []
