"""The evaluator's sandbox starts while training ends and waits for the handed-over graphs."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from test_sandbox import GOOD_MIXER

from loop import head_start
from loop.heartbeat import HEARTBEAT_FILE, Progress
from loop.model import BackboneConfig
from loop.outcome import FailureClass
from loop.sandbox import Limits, SandboxOutcome
from loop.tasks import MQARSpec
from loop.train import TrainConfig

METRICS = {
    "task": "mqar",
    "n_params": 10,
    "state_size": 4,
    "eval_seconds": 0.1,
    "mean_accuracy": 0.5,
    "accuracies": {"64x8": 0.5},
}


def _outcome(failure: FailureClass | None, payload: dict[str, Any] | None = None) -> SandboxOutcome:
    result = {"failure": failure, "message": "", "payload": payload or {}}
    return SandboxOutcome(0, result, failure, "", "", 0.0, ("fake",))


class FakeSandboxes:
    """run_sandboxed for the Engineer and its head start: a training run that beats (so the
    evaluator is started), then writes its artifacts; evaluators that wait as the real one."""

    def __init__(self, *, beat: bool = True, train_failure: FailureClass | None = None) -> None:
        self.beat = beat
        self.train_failure = train_failure
        self.evaluations: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def __call__(
        self,
        spec: dict[str, Any],
        workspace: Path,
        limits: Limits,
        *,
        stop: threading.Event | None = None,
    ) -> SandboxOutcome:
        workspace.mkdir(parents=True)
        if spec["kind"] == "train":
            return self._train(workspace)
        artifacts = Path(spec["evaluate"]["artifact_dir"])
        record = {"spec": spec, "limits": limits, "seen": None}
        with self.lock:
            self.evaluations.append(record)
        while spec["wait_for_artifacts"] and not artifacts.is_dir():
            if stop is not None and stop.is_set():
                return _outcome(FailureClass.INTERRUPTED)
            time.sleep(0.01)
        record["seen"] = sorted(p.name for p in artifacts.iterdir())
        return _outcome(None, {"evaluation": {"metrics": METRICS}})

    def _train(self, workspace: Path) -> SandboxOutcome:
        if self.beat:
            beat = {"step": 9, "steps": 10, "loss": 2.0, "tok_s": 100.0, "elapsed_s": 0.9}
            (workspace / HEARTBEAT_FILE).write_text(json.dumps(beat))
            deadline = time.monotonic() + 5.0
            while not self.evaluations and time.monotonic() < deadline:
                time.sleep(0.01)  # the head start begins before training ends
        if self.train_failure is not None:
            return _outcome(self.train_failure)
        (workspace / "artifacts").mkdir()
        (workspace / "artifacts" / "manifest.json").write_text("{}")
        return _outcome(None, {"train_log": {"wall_seconds": 1.0}})


@pytest.fixture
def sandboxes(monkeypatch: pytest.MonkeyPatch) -> FakeSandboxes:
    monkeypatch.setattr("loop.heartbeat.POLL_INTERVAL_S", 0.02)
    fake = FakeSandboxes()
    monkeypatch.setattr("loop.engineer.run_sandboxed", fake)
    monkeypatch.setattr("loop.head_start.run_sandboxed", fake)
    return fake


def _job() -> Any:
    from loop.engineer import ExperimentJob

    spec = MQARSpec.quick()
    return ExperimentJob(
        experiment_id="e1",
        code=GOOD_MIXER,
        task=spec,
        train=TrainConfig(steps=10, abort_step=None),
        seed=0,
        heldout_seed=1,
        backbone=BackboneConfig(vocab_size=spec.vocab_size),
    )


def _engineer(tmp_path: Path) -> Any:
    from loop.engineer import Engineer

    return Engineer(tmp_path / "ws", Limits(hidden_paths=(tmp_path / "home",)), True)


def test_the_evaluator_started_ahead_scores_the_handed_over_artifacts(
    tmp_path: Path, sandboxes: FakeSandboxes
) -> None:
    result = _engineer(tmp_path).run(_job())
    assert result.failure is None, result.message
    assert result.metrics["mean_acc"] == 0.5
    assert "eval_started_ahead_s" in result.timings
    [evaluation] = sandboxes.evaluations
    assert evaluation["spec"]["wait_for_artifacts"] is True
    assert evaluation["seen"] == ["manifest.json"]
    root = tmp_path / "ws" / "e1"
    # The evaluator is shown the hand-off folder, never the training workspace.
    assert evaluation["limits"].readable_paths == (root / "handoff",)
    assert evaluation["limits"].wall_s == Limits().wall_s + head_start.MAX_WAIT_S
    assert not (root / "train" / "artifacts").exists()
    assert (root / "handoff" / "artifacts" / "manifest.json").is_file()


def test_a_failed_training_stops_the_evaluator_started_ahead(
    tmp_path: Path, sandboxes: FakeSandboxes
) -> None:
    sandboxes.train_failure = FailureClass.CRASH
    result = _engineer(tmp_path).run(_job())
    assert result.failure is FailureClass.CRASH
    [evaluation] = sandboxes.evaluations
    assert evaluation["seen"] is None  # stopped while it waited
    assert "sandbox_eval_s" not in result.timings


def test_without_a_heartbeat_the_evaluation_runs_in_a_fresh_sandbox(
    tmp_path: Path, sandboxes: FakeSandboxes
) -> None:
    sandboxes.beat = False
    result = _engineer(tmp_path).run(_job())
    assert result.failure is None, result.message
    [evaluation] = sandboxes.evaluations
    assert evaluation["spec"]["wait_for_artifacts"] is False
    assert evaluation["limits"].wall_s == Limits().wall_s
    assert "eval_started_ahead_s" not in result.timings


def test_an_evaluator_that_waited_too_long_is_replaced(
    tmp_path: Path, sandboxes: FakeSandboxes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("loop.head_start.MAX_WAIT_S", 0.0)
    result = _engineer(tmp_path).run(_job())
    assert result.failure is None, result.message
    early, fresh = sandboxes.evaluations
    assert early["spec"]["wait_for_artifacts"] is True and early["seen"] is None
    assert fresh["spec"]["wait_for_artifacts"] is False
    assert fresh["seen"] == ["manifest.json"]


def test_the_head_start_is_due_near_the_end_of_training() -> None:
    def at(step: int, elapsed_s: float) -> Progress:
        return Progress(step=step, steps=100, loss=1.0, tok_s=1.0, elapsed_s=elapsed_s)

    assert not head_start.due(at(0, 0.0))
    assert not head_start.due(at(50, 50.0))  # 50 s to go
    assert head_start.due(at(95, 95.0))  # 5 s to go
    assert head_start.due(at(100, 100.0))


def test_hand_over_moves_the_folder_whole_or_makes_an_empty_one(tmp_path: Path) -> None:
    source = tmp_path / "train" / "artifacts"
    source.mkdir(parents=True)
    (source / "step.pt2").write_bytes(b"graph")
    inode = (source / "step.pt2").stat().st_ino
    (tmp_path / "handoff").mkdir()
    head_start.hand_over(source, tmp_path / "handoff" / "artifacts")
    assert not source.exists()
    assert (tmp_path / "handoff" / "artifacts" / "step.pt2").stat().st_ino == inode
    head_start.hand_over(tmp_path / "missing", tmp_path / "handoff" / "empty")
    assert list((tmp_path / "handoff" / "empty").iterdir()) == []


def test_a_head_start_starts_once_and_never_after_it_was_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []

    def fake(spec: Any, workspace: Path, limits: Limits, *, stop: threading.Event) -> Any:
        calls.append(workspace)
        stop.wait(5.0)
        return _outcome(FailureClass.INTERRUPTED)

    monkeypatch.setattr("loop.head_start.run_sandboxed", fake)
    with head_start.HeadStart({}, tmp_path / "a", Limits()) as ahead:
        ahead.start()
        ahead.start()
        assert ahead.usable()
    assert calls == [tmp_path / "a"]
    assert not ahead.usable()  # ended
    stopped = head_start.HeadStart({}, tmp_path / "b", Limits())
    stopped.stop()
    stopped.start()
    assert not stopped.usable() and calls == [tmp_path / "a"]


def test_a_head_start_is_stopped_by_the_experiments_cancel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fake(spec: Any, workspace: Path, limits: Limits, *, stop: threading.Event) -> Any:
        stop.wait(5.0)
        return _outcome(FailureClass.INTERRUPTED if stop.is_set() else None)

    monkeypatch.setattr("loop.head_start.run_sandboxed", fake)
    cancel = threading.Event()
    cancel.set()
    with head_start.HeadStart({}, tmp_path / "a", Limits()) as ahead:
        ahead.start()
        assert ahead.result(cancel).failure is FailureClass.INTERRUPTED


def test_a_started_evaluator_waits_for_its_artifacts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import loop.evaluate
    from loop.worker import _evaluate, evaluate_job

    seen: list[bool] = []

    def fake_run_job(job: loop.evaluate.EvalJob) -> loop.evaluate.EvalOutput:
        seen.append(job.artifact_dir.is_dir())
        return loop.evaluate.EvalOutput(ok=False, error="fake", failure=FailureClass.CRASH)

    monkeypatch.setattr(loop.evaluate, "run_job", fake_run_job)
    artifacts = tmp_path / "handoff" / "artifacts"
    job = evaluate_job(artifacts, MQARSpec.quick(), 1, wait_for_artifacts=True)
    thread = threading.Thread(target=_evaluate, args=(job,))
    thread.start()
    time.sleep(0.3)
    assert thread.is_alive() and seen == []
    artifacts.mkdir(parents=True)
    thread.join(5.0)
    assert not thread.is_alive() and seen == [True]


@pytest.mark.slow
def test_a_head_start_scores_exactly_what_a_fresh_evaluator_scores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real sandboxes (jailed where the host allows): the same experiment evaluated by an
    evaluator started at the first heartbeat and by one started after training."""
    from loop.engineer import Engineer, EvalResult, ExperimentJob

    monkeypatch.setattr("loop.heartbeat.POLL_INTERVAL_S", 0.2)
    spec = MQARSpec.quick()
    job = ExperimentJob(
        experiment_id="e1",
        code=GOOD_MIXER,
        task=spec,
        train=TrainConfig(steps=200, abort_step=None, threads=1),
        seed=0,
        heldout_seed=1234,
        backbone=BackboneConfig(vocab_size=spec.vocab_size),
    )
    results: list[EvalResult] = []
    for lead_s in (1e9, -1.0):  # at the first heartbeat; never
        monkeypatch.setattr("loop.head_start.LEAD_S", lead_s)
        engineer = Engineer(tmp_path / f"ws{len(results)}", Limits(wall_s=300))
        results.append(engineer.run(job, threading.Event()))
    ahead, fresh = results
    assert ahead.failure is None and fresh.failure is None, (ahead.message, fresh.message)
    assert "eval_started_ahead_s" in ahead.timings and "eval_started_ahead_s" not in fresh.timings
    timing = {"eval_seconds", "time_ratio", "tokens_per_s"}
    assert {k: v for k, v in ahead.metrics.items() if k not in timing} == {
        k: v for k, v in fresh.metrics.items() if k not in timing
    }
