"""Experiments as tasks on a Ray cluster, while this daemon stays the one writer.

The RayEngineer has the Engineer's `run(job, cancel)`: it sends the job to a Ray task
that holds one GPU (or CPU slots), builds a plain `loop.engineer.Engineer` on the worker
machine and runs the experiment there, in the same sandboxes, returning the EvalResult.
Nothing on a worker touches the store, the log, the anchors or the governance state:
the result comes back to the daemon, which records it.

- A pause (`cancel` set) cancels the task (killing its worker process, and with it the
  sandbox) and returns an INTERRUPTED result, which the scheduler requeues uncounted.
- A worker process or machine that dies is INTERRUPTED too: Ray never retries the task
  itself (`max_retries=0`), so an experiment runs again only when the scheduler hands it
  out again, and it is recorded once.
- A task Ray's memory monitor kills is the candidate's failure (OOM), as an out-of-memory
  sandbox is: requeued, a candidate that needs more memory than the worker has would be
  killed again on every try.
- The result's `train` names where it ran: the Ray node id and the GPU ids Ray gave it.
- `attest_workers` collects each Ray node's TEE evidence there, for the daemon to log.

Workers read what the job names at the same paths as the daemon (an LM campaign's data
shard, staged benchmarks): on more than one machine the node home's data folders must be
a shared volume mounted at the same path. Workspaces stay on the worker.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from attestation.tee.binding import BindingDocument
from loop.devices import DevicePool
from loop.engineer import Engineer, EvalResult, ExperimentJob
from loop.outcome import FailureClass
from loop.sandbox import Limits
from node.errors import ConfigError

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'asi-node[ray]'"
POLL_S = 0.2  # how often a waiting experiment thread looks at `cancel`
NAMESPACE = "asi-node"


@dataclass(frozen=True)
class RayPlan:
    """Where experiments go and what each one's task holds."""

    address: str  # "auto", "host:port" or "ray://host:port"
    gpus_per_experiment: int = 1  # 0: CPU training, `cpus` slots per experiment
    cpus_per_experiment: int = 0  # 0: the job's torch threads
    workspaces: str = ""  # on the worker; "": its temp folder


@dataclass(frozen=True)
class WorkerEvidence:
    """One Ray node's evidence bundle (`EvidenceBundle.to_json()`) and its Ray node id."""

    ray_node: str
    evidence: dict[str, Any]


def import_ray() -> Any:
    """The ray module; ConfigError naming the extra to install when it is missing."""
    try:
        import ray
    except ImportError:
        raise ConfigError(
            f"[ray] address is set, but Ray is not installed: {INSTALL_HINT}, or set "
            '[ray] address = "" to run experiments on this machine'
        ) from None
    return ray


def run_on_worker(job: ExperimentJob, limits: Limits, workspaces: str, keep: bool) -> EvalResult:
    """The body of the Ray task: a plain Engineer on the worker, on the GPU Ray gave it."""
    import ray

    context = ray.get_runtime_context()
    gpus = [str(g) for g in context.get_accelerator_ids().get("GPU", [])]
    # Ray's GPU ids are the machine's device indices; the sandbox is shown only that one.
    devices = DevicePool([int(g) for g in gpus]) if gpus else None
    root = Path(workspaces or tempfile.gettempdir()) / "asi-node-workspaces"
    engineer = Engineer(root, limits, keep_workspaces=keep, devices=devices)
    result = engineer.run(job)
    where = {"ray_node": context.get_node_id(), "gpus": gpus}
    return dataclasses.replace(result, train={**result.train, "worker": where})


def collect_on_worker(binding: BindingDocument, provider: str, section: dict[str, Any]) -> Any:
    """The body of an attestation task: this machine's evidence over `binding`."""
    import ray

    from attestation.tee.collect import collect_evidence

    bundle = collect_evidence(
        provider,
        binding,
        collected_at=datetime.now(UTC).isoformat(timespec="seconds"),
        tsm_root=Path(section["tsm_path"]),
        sev_device=Path(section["sev_guest_device"]),
        gpus=bool(section["gpus"]),
    )
    return ray.get_runtime_context().get_node_id(), bundle.to_json()


def interrupted_by(ray: Any, exc: BaseException) -> str | None:
    """Why an experiment's task ended without a result when its worker, machine or the
    cluster's bookkeeping failed under it (the experiment is requeued); None for an error
    the task itself raised, which is a broken invariant as on the daemon's machine."""
    lost = (
        ray.exceptions.WorkerCrashedError,
        ray.exceptions.NodeDiedError,
        ray.exceptions.LocalRayletDiedError,
        ray.exceptions.TaskCancelledError,
        ray.exceptions.ObjectLostError,  # OwnerDiedError, ObjectReconstructionFailedError
        ray.exceptions.RaySystemError,
        ray.exceptions.TaskUnschedulableError,
    )
    if isinstance(exc, ray.exceptions.RayTaskError):
        return None
    if isinstance(exc, lost):
        return f"the Ray worker running it was lost ({type(exc).__name__}): requeued"
    return None


class RayEngineer:
    """Runs each experiment as a Ray task; see the module docstring."""

    def __init__(self, ray: Any, plan: RayPlan, limits: Limits, keep: bool = False) -> None:
        self._ray = ray
        self.plan = plan
        self.limits = limits
        self.keep = keep
        self._run = ray.remote(max_retries=0)(run_on_worker)
        self._collect = ray.remote(max_retries=0, num_cpus=0)(collect_on_worker)

    @classmethod
    def connect(cls, plan: RayPlan, limits: Limits, keep: bool = False) -> RayEngineer:
        """Join the cluster at `plan.address`; ConfigError when Ray is missing or the
        cluster has no GPU while experiments ask for one."""
        ray = import_ray()
        if not ray.is_initialized():
            ray.init(address=plan.address, namespace=NAMESPACE, log_to_driver=False)
        engineer = cls(ray, plan, limits, keep)
        if plan.gpus_per_experiment and not ray.cluster_resources().get("GPU"):
            raise ConfigError(
                f"the Ray cluster at {plan.address} has no GPU, but [ray] "
                "gpus_per_experiment is 1: add GPU workers, or set it to 0 to train on CPUs"
            )
        return engineer

    def capacity(self, threads: int) -> int:
        """How many experiments the cluster's resources hold at once (at least one)."""
        resources = self._ray.cluster_resources()
        if self.plan.gpus_per_experiment:
            return max(1, int(resources.get("GPU", 0) // self.plan.gpus_per_experiment))
        cpus = self.plan.cpus_per_experiment or threads
        return max(1, int(resources.get("CPU", 0) // cpus))

    def _options(self, job: ExperimentJob) -> dict[str, Any]:
        cpus = self.plan.cpus_per_experiment or job.train.threads
        return {"num_gpus": self.plan.gpus_per_experiment, "num_cpus": cpus}

    def run(self, job: ExperimentJob, cancel: threading.Event | None = None) -> EvalResult:
        ray = self._ray
        if job.on_progress is not None:
            # A callback into this process does not travel: the worker's training
            # heartbeats stay on the worker.
            job = dataclasses.replace(job, on_progress=None)
        ref = self._run.options(**self._options(job)).remote(
            job, self.limits, self.plan.workspaces, self.keep
        )
        while not ray.wait([ref], timeout=POLL_S)[0]:
            if cancel is not None and cancel.is_set():
                ray.cancel(ref, force=True)
                return EvalResult(FailureClass.INTERRUPTED, "stopped: its Ray task was cancelled")
        try:
            result: EvalResult = ray.get(ref)
        except ray.exceptions.OutOfMemoryError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            log.warning("ray task killed for memory", extra={"experiment": job.experiment_id})
            return EvalResult(
                FailureClass.OOM,
                f"Ray's memory monitor killed its task: the worker ran out of memory ({first})",
            )
        except ray.exceptions.RayError as exc:
            why = interrupted_by(ray, exc)
            if why is None:
                raise
            log.warning("ray task lost", extra={"experiment": job.experiment_id, "error": why})
            return EvalResult(FailureClass.INTERRUPTED, why)
        return result

    def attest_workers(
        self, binding: Callable[[], BindingDocument], provider: str, section: dict[str, Any]
    ) -> list[WorkerEvidence]:
        """Every alive Ray node's evidence, each over a fresh `binding()`, collected on
        that node (one task pinned to it); raises what collection raised there."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        ray = self._ray
        refs = []
        for node in ray.nodes():
            if not node.get("Alive"):
                continue
            pinned = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
            task = self._collect.options(scheduling_strategy=pinned)
            refs.append(task.remote(binding(), provider, section))
        return [WorkerEvidence(node, evidence) for node, evidence in ray.get(refs)]
