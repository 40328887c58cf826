"""Run untrusted candidate work in a contained subprocess and get back validated data.

Each run gets its own workspace, a clean environment with no secrets, its own session
and process group, rlimits (address space, CPU, processes and threads, file size, no
core dumps) and a wall-clock limit that kills everything it started. When the node runs
as root and util-linux `unshare` works, the run also gets fresh PID, mount, network, IPC
and UTS namespaces: every mount read-only, private /tmp, /var/tmp and /dev/shm, /run and
the caller's hidden paths masked, no network at all (not even loopback), the candidate
working in a size-limited tmpfs over the workspace as an unprivileged user with
no_new_privs and no capabilities, and the namespace's death taking every leftover process
with it. What was actually in force is recorded in `SandboxOutcome.isolation`.

The child reports back only through WORKSPACE/result.json (plus files under artifacts/),
which the parent reads without following links, caps in size and validates; anything
else is BAD_OUTPUT. How the child ended comes from the jail's init over a pipe the
candidate never holds (loop/worker.py). Every outcome of the candidate is a value;
`SandboxError` is for a host that cannot build the sandbox at all.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import select
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pydantic

from loop.errors import LoopError
from loop.outcome import CheckResult, FailureClass, ScreenReport
from loop.worker import JOB_FILE, RESULT_FILE

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[1]  # the directory holding `loop`
SCRATCH_DIRS = ("/tmp", "/var/tmp", "/dev/shm")  # world-writable: replaced by private tmpfs
MASKED_DIRS = ("/run",)  # sockets of host daemons live here
TAIL_BYTES = 4096
STATUS_BYTES = 65536
KILL_GRACE_S = 2.0  # time for the jail's top process to reap what was killed


class SandboxError(LoopError):
    """The sandbox itself could not run (a broken host, not a bad candidate).

    Fix the host (util-linux tools, permissions, the workspace path) or run with
    `Limits(isolate=False)`; retrying the same candidate will not help.
    """


@dataclass(frozen=True)
class Limits:
    """Resources and isolation for one run. Defaults suit one CPU job on the 2-core host.

    `address_space_bytes` must be None on CUDA machines (the driver reserves huge virtual
    ranges). `max_processes` counts threads too, for all processes of the sandbox user, so
    concurrent runs as the same user share it. `hidden_paths` (the node's home, keys) are
    masked with empty file systems; `readable_paths` (data shards) stay readable even when
    under a masked directory; `shared_cache` is a writable compile cache (Triton, Inductor)
    that the sandbox user must own. `isolate=False` runs as the node's own user without
    namespaces (rlimits, process handling and result checks only): for development.
    """

    wall_s: float = 600.0
    cpu_s: int = 1200
    address_space_bytes: int | None = 8 * 2**30
    max_processes: int = 64
    max_file_bytes: int = 256 * 2**20
    threads: int = 1
    tmpfs_bytes: int = 64 * 2**20  # each of the private /tmp, /var/tmp and /dev/shm
    workspace_bytes: int = 2**30  # the jail's workspace is a tmpfs of this size
    max_result_bytes: int = 2**20
    isolate: bool = True
    uid: int = 65534  # nobody
    gid: int = 65534  # nogroup
    hidden_paths: tuple[Path, ...] = ()
    readable_paths: tuple[Path, ...] = ()
    shared_cache: Path | None = None
    extra_env: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.wall_s <= 0 or self.cpu_s <= 0 or self.threads < 1 or self.max_processes < 1:
            raise ValueError("wall_s, cpu_s, threads and max_processes must be positive")


@dataclass(frozen=True)
class SandboxOutcome:
    """How a run ended. `failure` is None only when the worker reported success."""

    returncode: int | None  # the runner's exit code, negative for a signal; None if unknown
    result: dict[str, Any] | None  # the validated result.json
    failure: FailureClass | None
    message: str
    stderr_tail: str
    wall_s: float
    isolation: tuple[str, ...]
    cpu_s: float | None = None  # CPU seconds of the runner and everything it waited for
    max_rss_bytes: int | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None


class _Check(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)
    name: str = pydantic.Field(max_length=100)
    passed: bool
    detail: str = pydantic.Field(max_length=4000)


class _Probe(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)
    values: list[float] = pydantic.Field(max_length=64)
    state_floats: int = pydantic.Field(ge=0)
    dtype: Literal["float64", "float32"]


class _Screen(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)
    checks: list[_Check] = pydantic.Field(max_length=64)
    failure: FailureClass | None
    message: str = pydantic.Field(max_length=4000)
    probe: _Probe | None = None  # loop.probe's, when screening passed


class WorkerResult(pydantic.BaseModel):
    """The schema of result.json; anything that does not match is BAD_OUTPUT."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)
    failure: FailureClass | None
    message: str = pydantic.Field(max_length=20_000)
    screen: _Screen | None = None
    payload: dict[str, pydantic.JsonValue] = pydantic.Field(default_factory=dict)


def screen_report(outcome: SandboxOutcome) -> ScreenReport | None:
    """The screening report inside a run's result, if the run got that far."""
    screen = (outcome.result or {}).get("screen")
    if not isinstance(screen, dict):
        return None
    parsed = _Screen.model_validate(screen)
    return ScreenReport(
        checks=tuple(CheckResult(c.name, c.passed, c.detail) for c in parsed.checks),
        failure=parsed.failure,
        message=parsed.message,
    )


def namespaces_available() -> bool:
    """Whether this host gives a child fresh PID, mount and network namespaces (needs root)."""
    unshare = shutil.which("unshare")
    if os.geteuid() != 0 or unshare is None:
        return False
    try:
        probe = subprocess.run(
            [unshare, *_UNSHARE_FLAGS, "true"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


_UNSHARE_FLAGS = (
    "--fork",
    "--pid",
    "--mount-proc",
    "--net",
    "--mount",
    "--ipc",
    "--uts",
    "--kill-child",
)


@dataclass(frozen=True)
class _Plan:
    """The command that starts the jail's init, and what the init is told to build."""

    prefix: tuple[str, ...]  # unshare and its flags, or nothing
    env: dict[str, str]
    spec: dict[str, Any]
    isolation: tuple[str, ...]

    def command(self, status_fd: int, lifeline_fd: int) -> list[str]:
        init = [sys.executable, "-P", "-s", "-m", "loop.worker", "--init"]
        fds = {"status_fd": status_fd, "lifeline_fd": lifeline_fd}
        return [*self.prefix, *init, json.dumps(self.spec | fds)]


def _child_env(workspace: Path, limits: Limits) -> dict[str, str]:
    threads = str(limits.threads)
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(workspace),
        "LANG": "C.UTF-8",
        "TMPDIR": "/tmp",
        "PYTHONPATH": str(PROJECT_ROOT),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "OPENBLAS_NUM_THREADS": threads,
        "MALLOC_ARENA_MAX": "2",  # each glibc arena reserves 64 MiB of address space
    }
    if limits.shared_cache is not None:
        cache = str(limits.shared_cache)
        env |= {"TRITON_CACHE_DIR": cache, "TORCHINDUCTOR_CACHE_DIR": cache}
    env |= dict(limits.extra_env)
    return env


def _under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _closed_ancestor(path: Path) -> Path | None:
    """The outermost directory above `path` that other users cannot traverse."""
    for ancestor in reversed(path.parents):
        if ancestor == Path("/"):
            continue
        if not ancestor.stat().st_mode & stat.S_IXOTH:
            return ancestor
    return None


def _real_dirs(paths: list[Path]) -> list[Path]:
    return [p for p in paths if p.is_dir() and not p.is_symlink()]


def _jail_paths(workspace: Path, limits: Limits) -> dict[str, list[str]]:
    """What the init hides, replaces and re-mounts; see loop.worker._build_jail."""
    needed = {
        Path(p).resolve()
        for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)
    }
    needed |= {Path(sys.executable).resolve().parent, PROJECT_ROOT}
    needed |= {p.resolve() for p in limits.readable_paths}
    scratch = _real_dirs([Path(p) for p in SCRATCH_DIRS])
    masks = _real_dirs([Path(p) for p in MASKED_DIRS])
    masks += _real_dirs([p.resolve() for p in limits.hidden_paths])
    masks += [a for p in sorted(needed) if (a := _closed_ancestor(p)) is not None]
    masks = list(dict.fromkeys(masks))
    hidden = scratch + masks
    rw = [limits.shared_cache.resolve()] if limits.shared_cache else []
    ro = sorted(p for p in needed if any(_under(p, h) for h in hidden))
    ro = [p for p in ro if not any(q != p and _under(p, q) for q in ro + rw + [workspace])]
    # What sits in a scratch dir is gone already, unless a path exposed again brings it
    # back (the project checked out under /tmp): then its mask must stay.
    masks = [
        m
        for m in masks
        if not any(_under(m, s) for s in scratch) or any(_under(m, e) for e in ro + rw)
    ]
    return {
        "scratch": [str(p) for p in scratch],
        "masks": [str(p) for p in masks],
        "expose_ro": [str(p) for p in ro],
        "expose_rw": [str(p) for p in rw],
    }


def _check_reachable(workspace: Path) -> None:
    """Without a mount namespace the dropped user needs a path to Python, code and workspace."""
    for path in (Path(sys.base_prefix), Path(sys.prefix), PROJECT_ROOT, workspace):
        closed = _closed_ancestor(path.resolve())
        if closed is not None:
            raise SandboxError(
                f"{path} is under {closed}, which the sandbox user cannot enter; install "
                "the node and its workspaces under world-traversable directories"
            )


def _plan(workspace: Path, limits: Limits) -> _Plan:
    env = _child_env(workspace, limits)
    root = os.geteuid() == 0
    use_namespaces = limits.isolate and namespaces_available()
    python = sys.executable
    spec: dict[str, Any] = {
        "namespaces": use_namespaces,
        "workspace": str(workspace),
        "uid": limits.uid if root and limits.isolate else None,
        "gid": limits.gid if root and limits.isolate else None,
        "rlimits": {
            "as": limits.address_space_bytes,
            "cpu": limits.cpu_s,
            "nproc": limits.max_processes,
            "fsize": limits.max_file_bytes,
            "core": 0,
        },
        "tmpfs_bytes": limits.tmpfs_bytes,
        "workspace_bytes": limits.workspace_bytes,
        "max_result_bytes": limits.max_result_bytes,
        "argv": [python, "-P", "-s", "-m", "loop.worker", str(workspace)],
        "env": env,
        "scratch": [],
        "masks": [],
        "expose_ro": [],
        "expose_rw": [],
    }
    isolation = ["process_group", "clean_env", "rlimits", "no_new_privs"]
    prefix: tuple[str, ...] = ()
    unshare = shutil.which("unshare")
    if use_namespaces and unshare is not None:
        spec |= _jail_paths(workspace, limits)
        prefix = (unshare, *_UNSHARE_FLAGS)
        isolation += [
            "pid_namespace",
            "mount_namespace",
            "net_namespace",
            "ipc_namespace",
            "read_only_root",
            "private_tmp",
            *(f"masked:{m}" for m in spec["masks"]),
        ]
    elif limits.isolate:
        logger.warning("sandbox runs without namespaces", extra={"root": root})
        if spec["uid"] is not None:
            _check_reachable(workspace)
    if spec["uid"] is not None:
        isolation.append(f"user:{limits.uid}:{limits.gid}")
    return _Plan(prefix=prefix, env=env, spec=spec, isolation=tuple(isolation))


def _prepare_workspace(workspace: Path, job: Mapping[str, Any], plan: _Plan) -> None:
    """Create the workspace with the job in it.

    In a jail the candidate works in a tmpfs over this directory and only the init copies
    results back, so the directory stays root's; otherwise the sandbox user must own it.
    """
    workspace.mkdir(parents=True, exist_ok=True)
    if any(workspace.iterdir()):
        raise ValueError(f"workspace {workspace} must be new or empty")
    (workspace / JOB_FILE).write_text(json.dumps(dict(job)), encoding="utf-8")
    (workspace / JOB_FILE).chmod(0o644)
    workspace.chmod(0o700)
    uid, gid = plan.spec["uid"], plan.spec["gid"]
    if uid is not None and not plan.spec["namespaces"]:
        os.chown(workspace, uid, gid)


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _signal(pid: int, sig: int, *, group: bool = False) -> None:
    try:
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_readable(fd: int, timeout_s: float) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(max(0, math.ceil(timeout_s * 1000))))


def _kill(pid: int, pidfd: int) -> None:
    """Kill the jail from below so its top process reaps what dies, then the group."""
    for child in _children(pid):
        _signal(child, signal.SIGKILL)  # the namespace's init, or the runner
    if not _wait_readable(pidfd, KILL_GRACE_S):
        _signal(pid, signal.SIGKILL, group=True)


def _wait(
    proc: subprocess.Popen[bytes], limits: Limits, stop: threading.Event | None, start: float
) -> tuple[FailureClass | None, int, float]:
    """Wait for the child under the wall-clock limit; returns (why killed, status, cpu)."""
    pidfd = os.pidfd_open(proc.pid)
    killed: FailureClass | None = None
    reaped: tuple[int, int, Any] | None = None
    try:
        deadline = start + limits.wall_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                killed = FailureClass.TIMEOUT
                break
            if stop is not None and stop.is_set():
                killed = FailureClass.INTERRUPTED
                break
            if _wait_readable(pidfd, remaining if stop is None else min(remaining, 0.1)):
                break
        if killed is not None:
            _kill(proc.pid, pidfd)
        reaped = os.wait4(proc.pid, 0)
    finally:
        if reaped is None:  # the parent itself was interrupted: leave nothing behind
            _kill(proc.pid, pidfd)
            os.wait4(proc.pid, 0)
        os.close(pidfd)
        # Strays that left the jail's init behind (only possible without a PID namespace).
        _signal(proc.pid, signal.SIGKILL, group=True)
    _, status, usage = reaped
    proc.returncode = os.waitstatus_to_exitcode(status)
    return killed, proc.returncode, usage.ru_utime + usage.ru_stime


def _status_events(fd: int) -> list[dict[str, Any]]:
    data = b""
    while len(data) < STATUS_BYTES:
        try:
            chunk = os.read(fd, STATUS_BYTES)
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
    events = []
    for line in data.decode("utf-8", "replace").splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


class _OutputTail:
    """Keeps the last TAIL_BYTES of what the child prints, read from a pipe by a thread.

    A pipe, not a file: a candidate that prints without end costs the host no disk.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._tail = bytearray()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, name="sandbox-output", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while not self._stop.is_set():
            if not _wait_readable(self._fd, 0.1):
                continue
            try:
                chunk = os.read(self._fd, 65536)
            except BlockingIOError:
                continue
            if not chunk:
                return
            self._tail += chunk
            del self._tail[:-TAIL_BYTES]

    def finish(self) -> str:
        """The tail, once every writer is gone (or after a short grace for stray holders)."""
        self._thread.join(timeout=1.0)
        self._stop.set()
        self._thread.join()
        os.close(self._fd)
        return self._tail.decode("utf-8", "replace")


def _read_result(workspace: Path, limit: int) -> tuple[WorkerResult | None, str]:
    """result.json as the candidate left it: maybe missing, a link, a FIFO, huge or junk."""
    path = workspace / RESULT_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None, "the sandbox wrote no result"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None, "result.json is a symbolic link"
        return None, f"cannot open result.json: {exc.strerror}"
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            return None, "result.json is not a plain file"
        if info.st_size > limit:
            return None, f"result.json is {info.st_size} bytes; the limit is {limit}"
        data = os.read(fd, limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        return None, f"result.json is over {limit} bytes"
    try:
        return WorkerResult.model_validate_json(data), ""
    except pydantic.ValidationError as exc:
        # Never echo the content: a hostile file may hold anything.
        errors = exc.errors(include_input=False, include_url=False)[:3]
        where = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in errors)
        return None, f"result.json is not a valid result ({where})"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _classify_exit(
    code: int | None, cpu_s: float, limits: Limits, tail: str
) -> tuple[FailureClass, str] | None:
    """A failure read from how the runner ended, or None when it exited on its own."""
    if code is None:
        return FailureClass.BAD_OUTPUT, "the sandbox ended without reporting how the runner ended"
    if code >= 0:
        return None
    sig = -code
    if sig == signal.SIGXCPU:
        return FailureClass.TIMEOUT, f"CPU-time limit of {limits.cpu_s} s reached"
    if sig == signal.SIGKILL:
        if cpu_s >= limits.cpu_s:
            return FailureClass.TIMEOUT, f"CPU-time limit of {limits.cpu_s} s reached"
        return FailureClass.OOM, "killed by SIGKILL (out of memory)"
    if sig == signal.SIGXFSZ:
        return FailureClass.CRASH, f"file size limit of {limits.max_file_bytes} bytes reached"
    if any(word in tail for word in ("bad_alloc", "Cannot allocate memory", "MemoryError")):
        return FailureClass.OOM, f"killed by {_signal_name(sig)} after an allocation failure"
    return FailureClass.CRASH, f"killed by {_signal_name(sig)}"


@dataclass(frozen=True)
class _Ended:
    """How the process tree ended, as the parent saw it and as the jail's init reported."""

    killed: FailureClass | None  # set when the parent killed it (wall clock, stop)
    top_code: int  # exit code of the process the parent started
    events: tuple[dict[str, Any], ...]  # the init's reports from the status pipe
    cpu_s: float
    wall_s: float
    tail: str

    def event(self, kind: str) -> dict[str, Any] | None:
        return next((e for e in self.events if e.get("event") == kind), None)


def _spawn_and_wait(plan: _Plan, limits: Limits, stop: threading.Event | None) -> _Ended:
    """Start the jail and wait for it. Three pipes: the init's status reports, the output
    tail, and a lifeline whose write end only this process holds, so that the jail ends
    itself if this process dies without killing it."""
    status_read, status_write = os.pipe()
    output_read, output_write = os.pipe()
    lifeline_read, lifeline_write = os.pipe()
    for fd in (status_read, output_read):
        os.set_blocking(fd, False)
    output = _OutputTail(output_read)
    try:
        start = time.monotonic()
        try:
            proc = subprocess.Popen(
                plan.command(status_write, lifeline_read),
                env=plan.env,
                cwd="/",
                stdin=subprocess.DEVNULL,
                stdout=output_write,
                stderr=output_write,
                start_new_session=True,
                pass_fds=(status_write, lifeline_read),
            )
        except OSError as exc:
            raise SandboxError(f"cannot start the sandbox: {exc}") from exc
        finally:
            for fd in (status_write, output_write, lifeline_read):
                os.close(fd)
        killed, top_code, cpu = _wait(proc, limits, stop, start)
        wall = time.monotonic() - start
        events = tuple(_status_events(status_read))
    finally:
        os.close(status_read)
        os.close(lifeline_write)
        tail = output.finish()
    return _Ended(killed, top_code, events, cpu, wall, tail)


def run_sandboxed(
    job: Mapping[str, Any],
    workspace: Path,
    limits: Limits | None = None,
    *,
    stop: threading.Event | None = None,
) -> SandboxOutcome:
    """Run `job` (see loop.worker.screen_job / train_job) in a fresh sandbox and wait.

    Blocks for at most about `limits.wall_s`; setting `stop` ends the run early with
    INTERRUPTED. `workspace` must be new or empty; afterwards it holds the job, the result
    and any artifacts/ (in a jail only those come out of it). All of them were written by
    untrusted code: read them as hostile. Raises SandboxError only when the host cannot
    run the sandbox.
    """
    limits = limits or Limits()
    workspace = workspace.resolve()
    plan = _plan(workspace, limits)
    _prepare_workspace(workspace, job, plan)
    ended = _spawn_and_wait(plan, limits, stop)
    exited = ended.event("exited")
    code = None if exited is None else int(exited["code"])
    cpu = ended.cpu_s if exited is None else float(exited["cpu_s"])
    logger.info(
        "sandbox run ended",
        extra={"wall_s": ended.wall_s, "cpu_s": cpu, "code": code, "killed": ended.killed},
    )

    def outcome(
        failure: FailureClass | None, message: str, result: WorkerResult | None = None
    ) -> SandboxOutcome:
        return SandboxOutcome(
            returncode=code,
            result=None if result is None else result.model_dump(mode="json"),
            failure=failure,
            message=message,
            stderr_tail=ended.tail,
            wall_s=ended.wall_s,
            isolation=plan.isolation,
            cpu_s=cpu,
            max_rss_bytes=None if exited is None else int(exited["max_rss_kb"]) * 1024,
        )

    if ended.killed is FailureClass.TIMEOUT:
        return outcome(
            ended.killed, f"wall-clock limit of {limits.wall_s:g} s reached; the sandbox was killed"
        )
    if ended.killed is FailureClass.INTERRUPTED:
        return outcome(ended.killed, "stopped from outside")
    if ended.event("started") is None:
        error = ended.event("error")
        detail = (
            str(error.get("message"))
            if error is not None
            else f"exit code {ended.top_code}; output: {ended.tail[-500:]}"
        )
        raise SandboxError(f"the sandbox could not start: {detail}")
    exit_failure = _classify_exit(code, cpu, limits, ended.tail)
    if exit_failure is not None:
        return outcome(*exit_failure)
    result, problem = _read_result(workspace, limits.max_result_bytes)
    if result is None:
        message = problem if code == 0 else f"{problem} (runner exit code {code})"
        notes = exited.get("notes") if exited is not None else None
        if notes:
            message += "; " + "; ".join(str(n) for n in notes)
        return outcome(FailureClass.BAD_OUTPUT, message)
    return outcome(result.failure, result.message, result)
