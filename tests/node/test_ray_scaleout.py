"""Experiments on a Ray cluster: a head and two worker nodes on this machine run a real
campaign for one daemon (the one writer); a pause requeues, SIGKILL of a Ray worker
process loses nothing, and each Ray node's evidence goes into the daemon's log.

The cluster tests start real Ray processes, sandboxes and training: slow and integration.
The error mapping and the missing-Ray error are fast.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from attestation.schema import ExperimentStatus
from loop.outcome import FailureClass
from node.campaign.config import Budget, CampaignConfig
from node.campaign.ray_engineer import RayEngineer, import_ray, interrupted_by
from node.campaign.scheduler import RunEnd
from node.errors import ConfigError
from node.runtime import open_node
from node.settings import load_settings
from node.tlog.records import predicate_of

OBJECT_STORE = 80 * 2**20  # Ray's smallest object store: the machine is shared
TASK_TITLE = b"ray::run_on_worker"  # the process title of a worker running an experiment


def test_without_ray_a_set_address_names_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'asi-node\[ray\]'"):
        import_ray()


def test_a_node_set_for_ray_without_ray_refuses_to_run_experiments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASI_NODE_RAY__ADDRESS", "auto")
    node = open_node(tmp_path / "home", create=True)
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match=r"asi-node\[ray\]"):
        node.engineer()


def test_the_ray_section_is_off_by_default_and_set_from_the_environment(tmp_path: Path) -> None:
    assert load_settings(tmp_path, env={}).ray.address == ""
    env = {"ASI_NODE_RAY__ADDRESS": "auto", "ASI_NODE_RAY__GPUS_PER_EXPERIMENT": "0"}
    section = load_settings(tmp_path, env=env).ray
    assert (section.address, section.gpus_per_experiment) == ("auto", 0)


def test_a_lost_worker_requeues_and_an_error_of_the_task_is_raised() -> None:
    ray = pytest.importorskip("ray")
    lost = [
        ray.exceptions.WorkerCrashedError(),
        ray.exceptions.NodeDiedError("node gone"),
        ray.exceptions.TaskCancelledError(),
        ray.exceptions.LocalRayletDiedError(),
    ]
    for exc in lost:
        assert interrupted_by(ray, exc), type(exc).__name__
    raised = ray.exceptions.RayTaskError("run_on_worker", "Traceback ...", ValueError("bug"))
    assert interrupted_by(ray, raised) is None
    assert interrupted_by(ray, ValueError("not ray's")) is None


def test_a_task_killed_for_memory_is_the_candidates_oom_not_a_requeue() -> None:
    """Ray's memory monitor killing a task again on every try must not loop: the
    experiment fails as OOM, as an out-of-memory sandbox does."""
    from types import SimpleNamespace

    ray = pytest.importorskip("ray")

    class Task:
        def options(self, **_: object) -> Task:
            return self

        def remote(self, *_: object) -> str:
            return "ref"

    class KilledForMemory:
        exceptions = ray.exceptions

        def remote(self, **_: object) -> Callable[[object], Task]:
            return lambda fn: Task()

        def wait(self, refs: list[str], timeout: float) -> tuple[list[str], list[str]]:
            return refs, []

        def get(self, ref: str) -> object:
            raise ray.exceptions.OutOfMemoryError("Task was killed due to low memory.\nMore")

    plan = SimpleNamespace(gpus_per_experiment=0, cpus_per_experiment=1, workspaces=None)
    engineer = RayEngineer(KilledForMemory(), plan, None)  # type: ignore[arg-type]
    job = SimpleNamespace(on_progress=None, experiment_id="e-1")
    result = engineer.run(job)  # type: ignore[arg-type]
    assert result.failure is FailureClass.OOM
    assert result.message == (
        "Ray's memory monitor killed its task: the worker ran out of memory (Task was "
        "killed due to low memory.)"
    )


# --- a local cluster -------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    pytest.importorskip("ray")
    import ray
    from ray.cluster_utils import Cluster

    # The head takes no experiments (no CPU slots): they run on the two worker nodes.
    head = {"num_cpus": 0, "include_dashboard": False, "object_store_memory": OBJECT_STORE}
    made = Cluster(initialize_head=True, head_node_args=head)
    for _ in range(2):
        made.add_node(num_cpus=1, object_store_memory=OBJECT_STORE)
    made.wait_for_nodes()
    try:
        yield made
    finally:
        ray.shutdown()
        made.shutdown()


def worker_node_ids(cluster: Any) -> set[str]:
    return {node.node_id for node in cluster.worker_nodes}


def pids_of(match: Any) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if match((entry / "cmdline").read_bytes()):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def experiment_pids() -> list[int]:
    return pids_of(lambda cmdline: cmdline.startswith(TASK_TITLE))


def sandbox_pids(workspaces: Path) -> list[int]:
    return pids_of(lambda cmdline: b"loop.worker" in cmdline and bytes(workspaces) in cmdline)


def wait_for(
    what: str, check: Any, timeout_s: float = 90.0, alive: threading.Thread | None = None
) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        if alive is not None and not alive.is_alive():
            raise AssertionError(f"the run ended while waiting for {what}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
@pytest.mark.integration
def test_a_campaign_on_two_ray_workers_runs_each_experiment_once_through_pause_and_kill(
    cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASI_NODE_RAY__ADDRESS", cluster.address)
    monkeypatch.setenv("ASI_NODE_RAY__GPUS_PER_EXPERIMENT", "0")
    monkeypatch.setenv("ASI_NODE_RAY__WORKSPACES", str(tmp_path / "ws"))
    node = open_node(tmp_path / "home", create=True)
    config = CampaignConfig(
        preset="quick",
        train_steps=20,
        baselines=("deltanet",),
        rerun_seeds=(),
        budget=Budget(max_candidates=1),
    )
    camp = node.store.create_campaign("ray", config.model_dump(mode="json"))
    events: list[tuple[str, dict[str, Any]]] = []

    def background(stop: threading.Event) -> tuple[threading.Thread, list[Any]]:
        summary: list[Any] = []

        def run() -> None:
            try:
                on_event = lambda kind, data: events.append((kind, data))  # noqa: E731
                summary.append(node.run_campaign("ray", on_event=on_event, stop=stop))
            except BaseException as exc:
                summary.append(exc)
                raise

        thread = threading.Thread(target=run)
        thread.start()
        return thread, summary

    # 1. A pause mid-run: the running tasks are cancelled, their experiments requeued.
    pause = threading.Event()
    thread, summary = background(pause)
    wait_for("an experiment on a Ray worker", experiment_pids, alive=thread)
    time.sleep(1.0)
    pause.set()
    thread.join(timeout=60)
    assert summary and getattr(summary[0], "reason", summary) == RunEnd.STOPPED
    interrupted = [data["experiment"] for kind, data in events if kind == "interrupted"]
    assert interrupted, "the pause should have interrupted a running experiment"
    exps = {e.id: e for e in node.store.list_experiments(camp.id)}
    assert all(exps[i].status is ExperimentStatus.QUEUED for i in interrupted)
    assert all(exps[i].attempts == 0 for i in interrupted)
    wait_for("the cancelled tasks to end", lambda: not experiment_pids(), timeout_s=30)

    # 2. Run again; SIGKILL a Ray worker process mid-experiment: nothing is lost.
    thread, summary = background(threading.Event())
    killed = wait_for("an experiment to kill", experiment_pids, alive=thread)[0]
    time.sleep(1.0)
    os.kill(killed, signal.SIGKILL)
    thread.join(timeout=300)
    assert not thread.is_alive(), "the campaign did not finish"
    assert summary and getattr(summary[0], "reason", summary) in (RunEnd.BUDGET, RunEnd.COMPLETE)
    lost = [data for kind, data in events if kind == "interrupted"]
    assert len(lost) > len(interrupted), "the killed worker's experiment should be requeued"
    assert not sandbox_pids(tmp_path / "ws"), "a sandbox outlived its Ray worker"

    exps = {e.id: e for e in node.store.list_experiments(camp.id)}
    finished = Counter(data["experiment"] for kind, data in events if kind == "finished")
    assert set(finished) == set(exps), "every experiment finished"
    assert set(finished.values()) == {1}, f"an experiment finished twice: {finished}"
    # At 20 steps most runs end as "hopeless" (the early-abort check): the candidate's
    # outcome, recorded once, never an interruption.
    assert FailureClass.INTERRUPTED not in {e.failure_class for e in exps.values()}
    workers = worker_node_ids(cluster)
    predicates = [predicate_of(row.envelope) for row in node.log().entries(0, node.log().size)]
    records = {p["experiment_id"]: p for p in predicates if "experiment_id" in p}
    assert set(records) == set(exps), "each experiment is signed into the log once"
    for exp in exps.values():
        assert exp.status in (ExperimentStatus.DONE, ExperimentStatus.FAILED)
        assert exp.attempts == 1
        where = records[exp.id]["training"]["worker"]
        assert where["ray_node"] in workers and where["gpus"] == []

    # 3. At each run's start every Ray node attested into the daemon's log.
    attested = [p for p in predicates if p.get("event") == "attestation"]
    assert len(attested) == 2 * 3  # two runs; the head and two workers
    assert {p["evidence"]["provider"] for p in attested} == {"none"}
    assert workers < {p["reason"].removeprefix("ray worker ") for p in attested}
    key = node.node_key().public.raw.hex()
    bindings = [p["evidence"]["binding"] for p in attested]
    assert all(b["log_public_key"] == key for b in bindings)
    assert len({b["nonce"] for b in bindings}) == len(bindings), "a fresh nonce each"
