"""Run untrusted candidate work in a contained subprocess and get back validated data.

Each run gets its own workspace, a clean environment with no secrets, its own session
and process group, rlimits (address space, CPU, processes and threads, file size, no
core dumps) and a wall-clock limit that kills everything it started. When the node runs
as root and util-linux `unshare` works, the run also gets fresh PID, mount, network, IPC
and UTS namespaces and a root file system of its own, built from nothing: read-only
binds of the Python runtime (prefixes, the interpreter's sys.path), the system's library
directories, the project's code, the readable paths (data shards) and the compile cache
(writable); a /dev with only null, zero, full, random and urandom (and the NVIDIA device
nodes when the run has a GPU); its namespace's own /proc; /sys's CPU topology only (all
of /sys with a GPU); an /etc with a two-line passwd and group and the loader's cache;
private /tmp, /var/tmp and /dev/shm. The rest of the host (/etc, /home, /root, /run,
/var, /opt, the node's home, ...) is absent, not merely read-only. There is no network
at all (not even loopback); the candidate works in a size-limited tmpfs over the
workspace as an unprivileged user with no_new_privs and no capabilities, and the
namespace's death takes every leftover process with it. A host without namespaces is
refused unless `Limits.allow_unisolated` says to run with rlimits only. What was
actually in force is recorded in `SandboxOutcome.isolation`.

The child reports back only through WORKSPACE/result.json (plus files under artifacts/),
which the parent reads without following links, caps in size and validates; anything
else is BAD_OUTPUT. Every text in the outcome (messages, the result's strings, the output
tail) is scrubbed (loop.scrub) before anything else sees it. How the child ended comes
from the jail's init over a pipe the candidate never holds (loop/worker.py). Every
outcome of the candidate is a value; `SandboxError` is for a host that cannot build the
sandbox at all.
"""

from __future__ import annotations

import errno
import functools
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
from loop.scrub import error_lines, scrub
from loop.worker import JOB_FILE, RESULT_FILE

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[1]  # the directory holding `loop`
# What the jail shows of the host besides Python, the project and the job's own paths:
# the library directories the dynamic loader searches (plus those of /etc/ld.so.conf),
# the loader's cache, the harmless character devices and the CPU topology torch reads.
LIBRARY_DIRS = (
    "/lib",
    "/lib64",
    "/lib32",
    "/libx32",
    "/usr/lib",
    "/usr/lib64",
    "/usr/lib32",
    "/usr/libx32",
    "/usr/local/lib",
    "/usr/local/lib64",
)
LOADER_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d")
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
CPU_SYSFS = ("/sys/devices/system/cpu", "/sys/devices/system/node")
# With a GPU: the driver's device nodes, the whole of /sys (the CUDA driver and NVML walk
# PCI devices there) and /usr (the C compiler and headers Triton builds its launchers
# with, ldconfig that finds libcuda).
GPU_DEVICES = "/dev/nvidia*"
GPU_PATHS = ("/usr", "/bin", "/sbin", "/sys")
# The jail's own scratch space and kernel views: paths there are no host paths.
JAIL_ROOTS = ("/tmp", "/var/tmp", "/dev", "/proc", "/sys", "/etc/passwd", "/etc/group")
CONTAINER_FLAGS = "--cap-add SYS_ADMIN --security-opt apparmor=unconfined"
TAIL_BYTES = 4096
MESSAGE_CHARS = 20_000  # a result's messages, as WorkerResult allows them
STATUS_BYTES = 65536
KILL_GRACE_S = 2.0  # time for the jail's top process to reap what was killed
MAX_LINK_HOPS = 40


class SandboxError(LoopError):
    """The sandbox itself could not run (a broken host, not a bad candidate).

    Fix the host as the message says (root, util-linux tools, the container's flags, the
    workspace path), or accept running candidates without namespaces
    (`Limits.allow_unisolated`, the setting `sandbox.allow_unisolated`); retrying the
    same candidate will not help.
    """


@dataclass(frozen=True)
class Limits:
    """Resources and isolation for one run. Defaults suit one CPU job on the 2-core host.

    `address_space_bytes` must be None on CUDA machines (the driver reserves huge virtual
    ranges). `max_processes` counts threads too, for all processes of the sandbox user, so
    concurrent runs as the same user share it. The jail shows only what the run needs (see
    the module docstring): `readable_paths` (data shards, artifacts to evaluate) are shown
    read-only, `shared_cache` is a writable compile cache (Triton, Inductor) that the
    sandbox user must own, `gpu` adds the GPU's device nodes, /sys and /usr.
    `hidden_paths` (the node's home, staged benchmarks) are masked with empty file systems
    where they lie inside something shown. Without namespaces a run is refused
    (`SandboxError` naming what is missing) unless `allow_unisolated`: then it runs with
    rlimits, as the sandbox user when root, seeing the host. `isolate=False` runs as the
    node's own user without namespaces (rlimits, process handling and result checks
    only): for development.
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
    allow_unisolated: bool = False
    gpu: bool = False
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


def namespace_problem() -> str | None:
    """Why this host cannot give a child fresh PID, mount and network namespaces, or None.

    The probe runs `unshare` with the jail's own flags, so a container whose seccomp or
    AppArmor profile denies the namespaces or the mounts fails it as the jail would.
    """
    unshare = shutil.which("unshare")
    if os.geteuid() != 0:
        return f"the node runs as uid {os.geteuid()}; the jail needs root"
    if unshare is None:
        return "util-linux `unshare` is not installed"
    try:
        probe = subprocess.run(
            [unshare, *_UNSHARE_FLAGS, "true"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run unshare: {exc}"
    if probe.returncode != 0:
        said = probe.stderr.decode("utf-8", "replace").strip().splitlines()
        return f"cannot create the jail's namespaces ({said[-1] if said else probe.returncode})"
    return None


def namespaces_available() -> bool:
    """Whether this host gives a child fresh PID, mount and network namespaces (needs root)."""
    return namespace_problem() is None


def unisolated_refusal(problem: str) -> str:
    """The error for a host without namespaces: what is missing and the two ways on."""
    return (
        f"candidates would run without a jail: {problem}. Run the node as root with "
        f"util-linux installed (in a container: docker run {CONTAINER_FLAGS}), or set "
        "sandbox.allow_unisolated = true to run them with rlimits only, seeing the host"
    )


def check_isolation(limits: Limits) -> None:
    """Raise SandboxError when `limits` ask for a jail this host cannot build and do not
    allow running without one; the node calls it before a campaign starts."""
    if not limits.isolate or limits.allow_unisolated:
        return
    problem = namespace_problem()
    if problem is not None:
        raise SandboxError(unisolated_refusal(problem))


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
    roots: tuple[str, ...]  # what the runner sees of the host: the paths `scrub` keeps

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


@functools.cache
def _runner_sys_path() -> tuple[str, ...]:
    """The runner's sys.path (the interpreter as the jail starts it: -P -s, PYTHONPATH
    the project): the stdlib, site-packages and what their .pth files add."""
    env = {"PYTHONPATH": str(PROJECT_ROOT), "PYTHONNOUSERSITE": "1", "PATH": os.defpath}
    code = "import json, sys; print(json.dumps(sys.path))"
    try:
        out = subprocess.run(
            [sys.executable, "-P", "-s", "-c", code],
            env=env,
            cwd="/",
            capture_output=True,
            timeout=60,
            check=True,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise SandboxError(f"cannot ask {sys.executable} for its sys.path: {exc}") from exc
    return tuple(p for p in json.loads(out.stdout) if isinstance(p, str) and p.startswith("/"))


def _loader_dirs() -> list[Path]:
    """Directories named in /etc/ld.so.conf and the files it includes."""
    dirs: list[Path] = []
    pending, seen = [Path("/etc/ld.so.conf")], set()
    while pending:
        conf = pending.pop()
        if conf in seen or not conf.is_file():
            continue
        seen.add(conf)
        for line in conf.read_text(encoding="utf-8", errors="replace").splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("include "):
                pattern = line.split(None, 1)[1]
                base = conf.parent if not pattern.startswith("/") else Path("/")
                pending += sorted(base.glob(pattern.lstrip("/")))
            elif line.startswith("/"):
                dirs.append(Path(line))
    return dirs


def _follow(path: Path) -> tuple[list[tuple[str, str]], Path]:
    """The symbolic links met resolving `path` ((link, its target) in order) and where it
    ends, so the jail can recreate the links and bind only real directories."""
    links: list[tuple[str, str]] = []
    current, parts, hops = Path("/"), list(path.parts[1:]), 0
    while parts:
        part = parts.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            current = current.parent
            continue
        step = current / part
        if not step.is_symlink():
            current = step
            continue
        hops += 1
        if hops > MAX_LINK_HOPS:
            raise SandboxError(f"{path}: too many levels of symbolic links")
        target = os.readlink(step)
        links.append((str(step), target))
        if target.startswith("/"):
            current = Path("/")
        parts = list(Path(target).parts[1 if target.startswith("/") else 0 :]) + parts
    return links, current


def _wanted(limits: Limits) -> list[Path]:
    """Every host path the runner needs, as named (links still in them)."""
    wanted = [Path(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)]
    wanted += [Path(sys.base_exec_prefix), Path(sys.executable), PROJECT_ROOT]
    wanted += [Path(p) for p in _runner_sys_path()]
    wanted += [Path(p) for p in (*LIBRARY_DIRS, *LOADER_FILES, *CPU_SYSFS)]
    wanted += _loader_dirs()
    wanted += list(limits.readable_paths)
    extra = limits.extra_env.get("PYTHONPATH", "").split(":")  # unpacked wheels, say
    wanted += [Path(p) for p in extra if p.startswith("/")]
    if limits.gpu:
        wanted += [Path(p) for p in GPU_PATHS]
    return wanted


def _jail_paths(workspace: Path, limits: Limits) -> dict[str, Any]:
    """What the init binds, masks and links in the jail's new root; see
    loop.worker._build_jail. Everything else of the host stays out."""
    links: dict[str, str] = {}
    shown: set[Path] = set()
    for path in _wanted(limits):
        met, real = _follow(path.absolute())
        links |= dict(met)
        if real.exists() and real != Path("/"):
            shown.add(real)
    writable = [limits.shared_cache.resolve()] if limits.shared_cache else []
    shown -= set(writable)
    hidden = [p.resolve() for p in limits.hidden_paths]
    top = [*shown, *writable]
    # A hidden path inside a shown one is masked; a path shown inside a mask comes back.
    masks = sorted(h for h in hidden if h.is_dir() and any(_under(h, s) and h != s for s in top))

    def covered(path: Path) -> bool:
        return any(
            q != path
            and _under(path, q)
            and not any(_under(path, m) and _under(m, q) for m in masks)
            for q in top
        )

    binds = sorted(p for p in shown if not covered(p))
    devices = list(DEVICES)
    if limits.gpu:
        devices += sorted(str(p) for p in Path("/dev").glob(GPU_DEVICES.removeprefix("/dev/")))
    return {
        "binds": [str(p) for p in binds],
        "writable": [str(p) for p in writable],
        "masks": [str(p) for p in masks],
        "links": sorted([link, target] for link, target in links.items()),
        "devices": [d for d in devices if Path(d).exists()],
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
    problem = namespace_problem() if limits.isolate else "isolation turned off"
    use_namespaces = problem is None
    if limits.isolate and not use_namespaces and not limits.allow_unisolated:
        assert problem is not None
        raise SandboxError(unisolated_refusal(problem))
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
        "binds": [],
        "writable": [],
        "masks": [],
        "links": [],
        "devices": [],
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
            "own_root",
            "read_only_root",
            "private_tmp",
            *(["gpu_devices"] if limits.gpu and spec["devices"] != list(DEVICES) else []),
            *(f"masked:{m}" for m in spec["masks"]),
        ]
        roots = [*spec["binds"], *spec["writable"], *(link for link, _ in spec["links"])]
        roots += [str(workspace), *JAIL_ROOTS]
    else:
        if limits.isolate:
            logger.warning("sandbox runs without namespaces", extra={"problem": problem})
            isolation.append("unisolated")
            if spec["uid"] is not None:
                _check_reachable(workspace)
        shown = [Path(sys.prefix), Path(sys.base_prefix), PROJECT_ROOT, workspace]
        roots = [str(p.resolve()) for p in [*shown, *limits.readable_paths]]
        roots += [str(limits.shared_cache)] if limits.shared_cache else []
    if spec["uid"] is not None:
        isolation.append(f"user:{limits.uid}:{limits.gid}")
    return _Plan(prefix=prefix, env=env, spec=spec, isolation=tuple(isolation), roots=tuple(roots))


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


def _scrubbed(value: Any, roots: tuple[str, ...]) -> Any:
    """Every string in a result (all of it written by the candidate's process) scrubbed."""
    if isinstance(value, str):
        return scrub(value, roots, MESSAGE_CHARS)
    if isinstance(value, dict):
        return {key: _scrubbed(item, roots) for key, item in value.items()}
    if isinstance(value, list):
        return [_scrubbed(item, roots) for item in value]
    return value


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
    roots = plan.roots
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
            result=None if result is None else _scrubbed(result.model_dump(mode="json"), roots),
            failure=failure,
            message=scrub(message, roots, MESSAGE_CHARS),
            stderr_tail=scrub(error_lines(ended.tail), roots),
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
        raise SandboxError(f"the sandbox could not start: {scrub(detail, roots, 1000)}")
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
