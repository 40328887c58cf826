"""The child side of the sandbox: the jail's init, and the job runner that loads a candidate.

Two entry points, both started by loop/sandbox.py, never by hand:

- `python -m loop.worker --init SPEC` runs first, as root when the node is root, inside
  fresh PID/mount/network namespaces when the host allows. It builds a new root from
  nothing (read-only binds of only what the runner needs, masks over hidden paths inside
  them, a minimal /dev and /etc, its own /proc, private /tmp, /var/tmp and /dev/shm, and
  a size-limited tmpfs over the workspace seeded with the job), pivots into it so the
  rest of the host is gone from the namespace, forks the runner with
  rlimits set and root dropped, and waits for it as the namespace's PID 1 (without
  namespaces, as a child subreaper). When the runner ends it kills whatever else the
  candidate left running, copies result.json and plain files under artifacts/ out to the
  real workspace, and reports how the runner ended on a status pipe the candidate never
  holds. If the parent dies first, the jail ends itself.
- `python -m loop.worker WORKSPACE` is the runner: it reads WORKSPACE/job.json, loads the
  candidate source as a module, screens it (and trains and exports it for `train` jobs)
  and writes WORKSPACE/result.json atomically. A `standby` job (loop.standby) first
  imports what training loads, then waits for its real job in a hand-in folder.
  Containment is the OS's job; nothing here trusts the candidate, which can patch
  anything in this process, result included.

Only the stdlib (and `loop.errors`, which imports nothing) is imported at module level
so the init starts fast; torch and the training code load inside the runner's job
functions. The job builders `screen_job` and `train_job` are the public way to describe
work for `loop.sandbox.run_sandboxed`.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import importlib.util
import json
import logging
import math
import os
import re
import resource
import select
import signal
import stat
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loop.errors import LoopError
from loop.heartbeat import HEARTBEAT_FILE, MAX_HEARTBEAT_BYTES, Heartbeat

if TYPE_CHECKING:
    from types import ModuleType

    from loop.model import BackboneConfig
    from loop.outcome import ScreenReport
    from loop.probe import Probe
    from loop.screen import ScreenConfig
    from loop.tasks import TaskSpec
    from loop.train import TrainConfig
    from loop.train_device import DeviceConfig

logger = logging.getLogger(__name__)

JOB_FILE = "job.json"
RESULT_FILE = "result.json"
CANDIDATE_FILE = "candidate.py"
ARTIFACTS_DIR = "artifacts"
MAX_JOB_BYTES = 4 * 2**20
RELAY_INTERVAL_S = 0.5  # the heartbeat's copy out of the jail: the last step's is awaited
ARTIFACT_POLL_S = 0.02  # how often a started evaluator looks for its artifacts
# What a standby runner imports before its job comes: all a CPU training job loads.
STANDBY_IMPORTS = ("torch", "loop.export", "loop.model", "loop.probe", "loop.screen", "loop.train")
MESSAGE_CHARS = 4000  # traceback tail kept in a result's message
STANDBY_IDLE = "no job came to the standby runner"
SETUP_FAILED = 125  # the init's exit code when the jail could not be built
ARTIFACT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")

# mount(2) flags, from <sys/mount.h>.
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
PR_SET_NO_NEW_PRIVS = 38
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36

SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}  # glibc has no wrapper for it

NEW_ROOT = "/tmp"  # where the jail's root is assembled; the host's /tmp is never shown
SCRATCH_DIRS = ("/tmp", "/var/tmp", "/dev/shm")  # private tmpfs in the jail
DEV_LINKS = (
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
)
# Files of a fresh /proc that still describe the whole machine (other namespaces' tasks,
# kernel timers and keys), covered with /dev/null as container runtimes do.
PROC_MASKS = (
    "/proc/sched_debug",
    "/proc/timer_list",
    "/proc/keys",
    "/proc/kcore",
    "/proc/latency_stats",
    "/proc/timer_stats",
    "/proc/sysrq-trigger",
)

RLIMITS = {
    "as": resource.RLIMIT_AS,
    "cpu": resource.RLIMIT_CPU,
    "nproc": resource.RLIMIT_NPROC,
    "fsize": resource.RLIMIT_FSIZE,
    "core": resource.RLIMIT_CORE,
}


def screen_job(
    code: str, options: Mapping[str, Any] | None = None, config: ScreenConfig | None = None
) -> dict[str, Any]:
    """A `screen` job for `run_sandboxed`: load `code`, run `screen_mixer` on its Mixer."""
    return {
        "kind": "screen",
        "code": code,
        "options": dict(options or {}),
        "screen": None if config is None else dataclasses.asdict(config),
    }


def train_job(
    code: str,
    task: TaskSpec,
    train: TrainConfig,
    *,
    options: Mapping[str, Any] | None = None,
    backbone: BackboneConfig | None = None,
    model_seed: int = 0,
    screen: ScreenConfig | None = None,
    device: DeviceConfig | None = None,
    twins: Sequence[tuple[str, Probe]] = (),
) -> dict[str, Any]:
    """A `train` job: screen, train a Backbone around the Mixer, export it to artifacts/.

    With `device`, training runs there (loop.train_device: bf16 autocast, tokens/s) and the
    model comes back to the CPU for export; without it, loop.train trains on the CPU.
    `twins` are (label, probe) of trained candidates: a mixer whose probe matches one
    ends after screening as a behaviour twin, untrained.
    """
    job = screen_job(code, options, screen)
    job.update(
        kind="train",
        task=dataclasses.asdict(task),
        train=dataclasses.asdict(train),
        backbone=None if backbone is None else dataclasses.asdict(backbone),
        model_seed=model_seed,
        twins=[{"label": label, "probe": probe.to_json()} for label, probe in twins],
    )
    if device is not None:
        job["device"] = dataclasses.asdict(device)
    return job


def standby_job(job_file: Path, wait_s: float) -> dict[str, Any]:
    """A `standby` job (loop.standby.Standbys): import what training needs, then wait up
    to `wait_s` for a `train` or `screen` job to appear at `job_file` (shown read-only),
    and run it as if it had been this run's own job."""
    return {"kind": "standby", "job_file": str(job_file), "wait_s": wait_s}


def evaluate_job(
    artifact_dir: Path,
    task: TaskSpec,
    heldout_seed: int,
    threads: int = 1,
    device: str = "cpu",
    benchmarks: Path | None = None,
    wait_for_artifacts: bool = False,
) -> dict[str, Any]:
    """An `evaluate` job: run loop.evaluate on `artifact_dir` (exposed read-only), on the
    CPU or ("cuda") on the one GPU the sandbox is shown, and on the staged `benchmarks`
    folder (exposed read-only too) when given. With `wait_for_artifacts` the evaluator
    starts up (its imports) and then waits for `artifact_dir` to appear (loop.head_start)."""
    return {
        "kind": "evaluate",
        "wait_for_artifacts": wait_for_artifacts,
        "evaluate": {
            "artifact_dir": str(artifact_dir),
            "spec": dataclasses.asdict(task),
            "heldout_seed": heldout_seed,
            "threads": threads,
            "device": device,
            "benchmarks": None if benchmarks is None else str(benchmarks),
        },
    }


# The jail's init (trusted; runs before any candidate code exists in the process tree).


class SetupError(LoopError):
    """The jail's init failed (a mount or a privilege change, or its runner vanished).

    The init reports it on the status pipe and exits; if the runner had not started,
    the parent raises `SandboxError`: fix the host, as that error says. Inside the init,
    a failed read-only remount of a mount point other than / is tolerated.
    """


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    libc = _libc()
    result = libc.mount(
        None if source is None else source.encode(),
        target.encode(),
        None if fstype is None else fstype.encode(),
        ctypes.c_ulong(flags),
        data.encode() if data else None,
    )
    if result != 0:
        errno = ctypes.get_errno()
        raise SetupError(f"mount {source} on {target} ({fstype}, {flags:#x}): {os.strerror(errno)}")


def _kept_flags(target: str) -> int:
    """The per-mount flags a bind remount must repeat, or the kernel refuses it."""
    f_flag = os.statvfs(target).f_flag
    kept = 0
    for st_flag, ms_flag in ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV)):
        if f_flag & st_flag:
            kept |= ms_flag
    if f_flag & os.ST_NOEXEC:
        kept |= MS_NOEXEC
    return kept


def _remount(target: str, *, read_only: bool) -> None:
    flags = MS_REMOUNT | MS_BIND | _kept_flags(target) | (MS_RDONLY if read_only else 0)
    _mount(None, target, None, flags)


def _mount_points() -> list[str]:
    points = []
    with open("/proc/self/mountinfo", encoding="utf-8") as mountinfo:
        for line in mountinfo:
            raw = line.split()[4]
            # mountinfo escapes space, tab, newline and backslash as octal.
            points.append(raw.encode().decode("unicode_escape"))
    return points


def _place(target: str, directory: bool) -> None:
    """An empty directory or file at `target` to mount over (parents created)."""
    if directory:
        if not os.path.isdir(target):
            os.makedirs(target)
        return
    parent = os.path.dirname(target)
    if not os.path.isdir(parent):
        os.makedirs(parent)
    if not os.path.lexists(target):
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644))


def _bind(handle: int, target: str, *, read_only: bool) -> None:
    _place(target, stat.S_ISDIR(os.fstat(handle).st_mode))
    _mount(f"/proc/self/fd/{handle}", target, None, MS_BIND | MS_REC)
    _remount(target, read_only=read_only)


def _users(spec: Mapping[str, Any]) -> tuple[str, str]:
    """/etc/passwd and /etc/group of the jail: root and the sandbox user, nobody else."""
    uid = 65534 if spec["uid"] is None else int(spec["uid"])
    gid = 65534 if spec["gid"] is None else int(spec["gid"])
    shell, home = "/usr/sbin/nologin", spec["workspace"]
    passwd = f"root:x:0:0:root:/nonexistent:{shell}\n"
    group = "root:x:0:\n"
    if uid != 0:
        passwd += f"nobody:x:{uid}:{gid}:sandbox:{home}:{shell}\n"
    if gid != 0:
        group += f"nogroup:x:{gid}:\n"
    return passwd, group


def _pivot_root(new_root: str) -> None:
    """Make `new_root` the root and drop the host's tree from this mount namespace."""
    number = SYS_PIVOT_ROOT.get(os.uname().machine)
    if number is None:
        raise SetupError(f"pivot_root: no system call number known for {os.uname().machine}")
    libc = _libc()
    os.chdir(new_root)
    if libc.syscall(number, b".", b".") != 0:
        raise SetupError(f"pivot_root to {new_root}: {os.strerror(ctypes.get_errno())}")
    # The old root now sits on top of the new one: detach it, and the host is gone.
    if libc.umount2(b".", MNT_DETACH) != 0:
        raise SetupError(f"detaching the host's root: {os.strerror(ctypes.get_errno())}")
    os.chdir("/")


def _build_jail(spec: Mapping[str, Any]) -> int:
    """Build the jail's root from nothing and switch to it (see the module docstring).

    Handles on everything shown are taken first, then a tmpfs at NEW_ROOT receives, in
    depth order, binds of them (read-only unless `writable`) and masks over hidden paths
    inside them, the links met on the way to them, /dev, /proc, a two-user /etc and the
    scratch tmpfs; the candidate's workspace is a size-limited tmpfs at the workspace's
    path, seeded with the job. Returns a handle on the real workspace for `_copy_back`.
    """
    os.umask(0o022)  # the directories made on the way must let the sandbox user through
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    workspace = spec["workspace"]
    # The real workspace as its own mount, left writable for the init's copy-back.
    _mount(workspace, workspace, None, MS_BIND)
    real = os.open(workspace, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    # Every host mount read-only first, so that recursive binds bring submounts (driver
    # files a container runtime mounts one by one) in read-only too.
    for point in sorted(_mount_points(), key=len):
        if point == "/proc" or point.startswith("/proc/") or point == workspace:
            continue
        try:
            _remount(point, read_only=True)
        except (SetupError, OSError):
            if point == "/":
                raise
    sources = [*spec["binds"], *spec["writable"], *spec["devices"]]
    handles = {path: os.open(path, os.O_PATH | os.O_NOFOLLOW) for path in sources}
    root = NEW_ROOT
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=4m")
    # Shallowest first; at one depth a mask, then a private scratch tmpfs, then a bind, so
    # the deeper layer wins: a hidden home inside the project is masked, a shard inside
    # that home shown again, a shard or the artifacts under /tmp shown over the private /tmp.
    scratch = f"mode=1777,size={int(spec['tmpfs_bytes'])}"
    layers = [(path, 0) for path in spec["masks"]]
    layers += [(path, 1) for path in SCRATCH_DIRS if not path.startswith("/dev/")]
    layers += [(path, 2) for path in [*spec["binds"], *spec["writable"]]]
    for path, kind in sorted(layers, key=lambda layer: (len(Path(layer[0]).parts), layer[1])):
        if kind == 2:
            _bind(handles[path], root + path, read_only=path not in spec["writable"])
        else:
            _place(root + path, directory=True)
            data = scratch if kind == 1 else "mode=755,size=1m"
            _mount("tmpfs", root + path, "tmpfs", MS_NOSUID | MS_NODEV, data)
    dev = root + "/dev"
    _place(dev, directory=True)
    _mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=755,size=64k")
    for path in spec["devices"]:
        _bind(handles[path], root + path, read_only=False)
    for handle in handles.values():
        os.close(handle)
    for name, target in DEV_LINKS:
        os.symlink(target, f"{dev}/{name}")
    for path in (p for p in SCRATCH_DIRS if p.startswith("/dev/")):
        _place(root + path, directory=True)
        _mount("tmpfs", root + path, "tmpfs", MS_NOSUID | MS_NODEV, scratch)
    _place(root + "/proc", directory=True)
    _mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for path in PROC_MASKS:
        if os.path.isfile(root + path):
            _mount(root + "/dev/null", root + path, None, MS_BIND)
    _place(root + "/etc", directory=True)
    for name, text in zip(("passwd", "group"), _users(spec), strict=True):
        if not os.path.lexists(f"{root}/etc/{name}"):
            Path(f"{root}/etc/{name}").write_text(text, encoding="utf-8")
    for link, target in spec["links"]:
        if not os.path.lexists(root + link):
            _place(os.path.dirname(root + link), directory=True)
            os.symlink(target, root + link)
    _place(root + workspace, directory=True)
    owner = "" if spec["uid"] is None else f",uid={int(spec['uid'])},gid={int(spec['gid'])}"
    _mount(
        "tmpfs",
        root + workspace,
        "tmpfs",
        MS_NOSUID | MS_NODEV,
        f"mode=700,size={int(spec['workspace_bytes'])}{owner}",
    )
    inside = os.open(root + workspace, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _copy_file(real, inside, JOB_FILE, MAX_JOB_BYTES)
    finally:
        os.close(inside)
    for path in [*spec["masks"], "/dev", ""]:
        _remount(root + path if path else root, read_only=True)
    _pivot_root(root)
    return real


def _copy_file(src_dir: int, dst_dir: int, name: str, max_bytes: int) -> int:
    """Copy a regular file (never a link, FIFO or device) up to max_bytes; returns bytes."""
    src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=src_dir)
    try:
        if not stat.S_ISREG(os.fstat(src).st_mode):
            raise OSError(f"{name} is not a regular file")
        dst = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=dst_dir)
        copied = 0
        try:
            while copied < max_bytes and (chunk := os.read(src, min(2**20, max_bytes - copied))):
                os.write(dst, chunk)
                copied += len(chunk)
        finally:
            os.close(dst)
    finally:
        os.close(src)
    return copied


class _HeartbeatRelay:
    """Copies the training heartbeat from the jail's tmpfs workspace to the real one
    at every tick, so the Engineer sees progress while the runner still runs. The
    file is the candidate's to write: a plain file only, at most MAX_HEARTBEAT_BYTES,
    passed on as bytes (the Engineer parses it); a failed copy is skipped."""

    def __init__(self, inside: str, real: int) -> None:
        self.inside = inside
        self.real = real
        self.interval_s = RELAY_INTERVAL_S
        self._next = 0.0

    def __call__(self) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.interval_s
        tmp = HEARTBEAT_FILE + ".tmp"
        try:
            src = os.open(
                os.path.join(self.inside, HEARTBEAT_FILE),
                os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK,
            )
            try:
                if not stat.S_ISREG(os.fstat(src).st_mode):
                    return
                data = os.read(src, MAX_HEARTBEAT_BYTES + 1)
            finally:
                os.close(src)
            if len(data) > MAX_HEARTBEAT_BYTES:
                return
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
            dst = os.open(tmp, flags, 0o644, dir_fd=self.real)
            try:
                os.write(dst, data)
            finally:
                os.close(dst)
            os.replace(tmp, HEARTBEAT_FILE, src_dir_fd=self.real, dst_dir_fd=self.real)
        except OSError:
            return


def _copy_back(spec: Mapping[str, Any], real: int) -> list[str]:
    """Bring result.json and artifacts/* out of the jail's workspace; returns notes.

    Runs after every other process in the namespace is dead, so nothing can swap files
    underneath. Only plain files with plain names are copied, within a byte budget; the
    candidate's other files stay in the tmpfs and vanish with it.
    """
    notes: list[str] = []
    if os.statvfs(spec["workspace"]).f_bavail == 0:
        notes.append(f"the workspace is full (its limit is {spec['workspace_bytes']} bytes)")
    inside = os.open(spec["workspace"], os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            # One byte over the limit lets the parent say the result was too large.
            _copy_file(inside, real, RESULT_FILE, int(spec["max_result_bytes"]) + 1)
        except OSError as exc:
            notes.append(f"result.json not copied: {exc.strerror or exc}")
        try:
            artifacts = os.open(
                ARTIFACTS_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=inside
            )
        except OSError:
            return notes
        try:
            os.mkdir(ARTIFACTS_DIR, 0o755, dir_fd=real)
            target = os.open(
                ARTIFACTS_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=real
            )
            budget = int(spec["workspace_bytes"])
            try:
                for name in sorted(os.listdir(artifacts)):
                    if not ARTIFACT_NAME.fullmatch(name):
                        notes.append(f"artifact {name!r} skipped: not a plain file name")
                        continue
                    try:
                        budget -= _copy_file(artifacts, target, name, budget)
                    except OSError as exc:
                        notes.append(f"artifact {name!r} skipped: {exc.strerror or exc}")
            finally:
                os.close(target)
        finally:
            os.close(artifacts)
    finally:
        os.close(inside)
    return notes


def _drop_privileges(spec: Mapping[str, Any]) -> None:
    """In the forked runner, before exec: rlimits, then groups, gid, uid, no_new_privs."""
    for name, value in spec["rlimits"].items():
        if value is None:
            continue
        limit = int(value)
        soft, hard = limit, limit
        if name == "cpu":
            hard = limit + 5  # SIGXCPU at the soft limit names the cause; SIGKILL backs it up
        resource.setrlimit(RLIMITS[name], (soft, hard))
    if spec["uid"] is not None:
        libc = _libc()
        last_cap = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
        for cap in range(last_cap + 1):
            libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)  # no way back to privilege via exec
        os.setgroups([])
        os.setgid(int(spec["gid"]))
        os.setuid(int(spec["uid"]))
    if _libc().prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise SetupError("prctl(PR_SET_NO_NEW_PRIVS) failed")


def _report(status_fd: int, event: Mapping[str, Any]) -> None:
    os.write(status_fd, (json.dumps(event) + "\n").encode())


def _wait_for(
    child: int, lifeline: int, tick: Callable[[], None] | None = None
) -> tuple[int, resource.struct_rusage] | None:
    """Wait for the runner, reaping orphans as PID 1 must; None if the parent went away.

    The parent holds the other end of `lifeline` for as long as it waits; EOF means it
    died without killing the jail, so the jail ends itself rather than run unsupervised.
    `tick` runs about twice a second meanwhile.
    """
    runner = os.pidfd_open(child)
    poller = select.poll()
    poller.register(runner, select.POLLIN)
    poller.register(lifeline, select.POLLIN)
    try:
        while True:
            while True:
                try:
                    pid, status, usage = os.wait4(-1, os.WNOHANG)
                except ChildProcessError:
                    raise SetupError("the runner vanished") from None
                if pid == 0:
                    break
                if pid == child:
                    return status, usage
            if any(fd == lifeline for fd, _ in poller.poll(500)):
                os.kill(child, signal.SIGKILL)
                return None
            if tick is not None:
                tick()
    finally:
        os.close(runner)


def _reap_all() -> None:
    while True:
        try:
            os.wait4(-1, 0)
        except ChildProcessError:
            return
        except InterruptedError:
            continue


def _own_children() -> list[int]:
    children: list[int] = []
    for task in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError):
            text = Path(f"/proc/self/task/{task}/children").read_text()
            children += [int(pid) for pid in text.split()]
    return children


def _kill_leftovers(in_namespace: bool) -> None:
    """Kill everything the candidate left running, then reap it.

    In a PID namespace kill(-1) from its PID 1 reaches exactly those processes. Without
    one, the init is a child subreaper: orphans, even ones that left the session, are
    re-parented to it, so killing its children generation by generation gets them all.
    """
    if in_namespace:
        with contextlib.suppress(ProcessLookupError):  # nobody else was left
            os.kill(-1, signal.SIGKILL)
        _reap_all()
        return
    while children := _own_children():
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _reap_all()


def run_init(spec: Mapping[str, Any]) -> int:
    """Build the jail, start the runner unprivileged, wait, report its end on the pipe."""
    status_fd, lifeline = int(spec["status_fd"]), int(spec["lifeline_fd"])
    previous = 2
    for fd in sorted((status_fd, lifeline)):
        os.closerange(previous + 1, fd)
        os.set_inheritable(fd, False)  # the runner and the candidate never get them
        previous = fd
    os.closerange(previous + 1, 1024)
    real_workspace: int | None = None
    try:
        if spec["namespaces"]:
            real_workspace = _build_jail(spec)
        os.chdir(spec["workspace"])
    except (SetupError, OSError) as exc:
        _report(status_fd, {"event": "error", "message": f"sandbox setup: {exc}"})
        return SETUP_FAILED
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # only the parent's SIGKILL ends the jail
    if not spec["namespaces"]:
        _libc().prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    child = os.fork()
    if child == 0:
        try:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            if real_workspace is not None:
                os.close(real_workspace)
            _drop_privileges(spec)
            _report(status_fd, {"event": "started"})
            os.execve(spec["argv"][0], spec["argv"], spec["env"])
        except BaseException as exc:
            _report(status_fd, {"event": "error", "message": f"sandbox start: {exc}"})
        os._exit(SETUP_FAILED)
    relay = None if real_workspace is None else _HeartbeatRelay(spec["workspace"], real_workspace)
    ended = _wait_for(child, lifeline, relay)
    _kill_leftovers(in_namespace=bool(spec["namespaces"]))
    if ended is None:
        return SETUP_FAILED  # the parent is gone: nobody to report to
    status, usage = ended
    end: dict[str, Any] = {
        "event": "exited",
        "code": os.waitstatus_to_exitcode(status),
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "max_rss_kb": usage.ru_maxrss,
    }
    if real_workspace is not None:
        try:
            end["notes"] = _copy_back(spec, real_workspace)
        except OSError as exc:
            end["notes"] = [f"copying results out failed: {exc}"]
    _report(status_fd, end)
    return 0


# The runner (unprivileged; loads and runs the candidate).


def _json_safe(value: Any) -> Any:
    """Strict JSON: NaN and infinities (a diverged loss) become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _write_result(workspace: Path, result: Mapping[str, Any]) -> None:
    tmp = workspace / (RESULT_FILE + ".tmp")
    text = json.dumps(_json_safe(result), allow_nan=False, default=str)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, workspace / RESULT_FILE)


def _tail(text: str) -> str:
    return text if len(text) <= MESSAGE_CHARS else "..." + text[-MESSAGE_CHARS:]


def _failure_of(exc: BaseException) -> str:
    """FailureClass value for an exception escaping candidate code."""
    text = str(exc).lower()
    if isinstance(exc, SyntaxError | ImportError):
        return "syntax_import"
    if isinstance(exc, MemoryError) or "can't allocate" in text or "out of memory" in text:
        return "oom"
    if isinstance(exc, FloatingPointError) or "non-finite" in text:
        return "nan_divergence"
    return "crash"


def _error_result(failure: str, exc: BaseException, *, with_traceback: bool) -> dict[str, Any]:
    if with_traceback:
        message = "".join(traceback.format_exception(exc))
    else:
        message = "".join(traceback.format_exception_only(exc))
    return {"failure": failure, "message": _tail(message.strip()), "screen": None, "payload": {}}


def _load_candidate(workspace: Path, code: str) -> ModuleType:
    """The candidate as a real module file, so tracebacks show its lines."""
    path = workspace / CANDIDATE_FILE
    path.write_text(code, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("candidate", path)
    if spec is None or spec.loader is None:
        raise ImportError("cannot load the candidate module")
    module = importlib.util.module_from_spec(spec)
    sys.modules["candidate"] = module  # dataclasses and pickling look modules up here
    spec.loader.exec_module(module)
    return module


def _as_tuples(value: Any) -> Any:
    """JSON arrays back into the tuples the frozen config dataclasses hold."""
    if isinstance(value, list):
        return tuple(_as_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _as_tuples(v) for k, v in value.items()}
    return value


def _report_json(report: ScreenReport) -> dict[str, Any]:
    return {
        "checks": [dataclasses.asdict(check) for check in report.checks],
        "failure": None if report.failure is None else str(report.failure),
        "message": report.message,
    }


def _screen(job: Mapping[str, Any], mixer_cls: Callable[..., Any]) -> ScreenReport:
    from loop.screen import ScreenConfig, screen_mixer

    overrides = job.get("screen") or {}
    config = ScreenConfig(**_as_tuples(overrides))
    return screen_mixer(mixer_cls, job.get("options") or {}, config)


def _probe(job: Mapping[str, Any], mixer_cls: Callable[..., Any], result: dict[str, Any]) -> None:
    """Put the screened mixer's probe (loop.probe) in the screen result; when it matches
    one of the job's `twins`, end the run there as a behaviour twin, before training."""
    from loop.probe import Probe, find_twin, probe_mixer

    screen = result["screen"]
    try:
        probe = probe_mixer(mixer_cls, job.get("options") or {})
    except (Exception, SystemExit) as exc:  # rare once screened: no probe, no verdict
        logger.warning("probe failed", extra={"error": _tail(repr(exc))})
        return
    screen["probe"] = probe.to_json()
    known = [
        (str(entry.get("label")), other)
        for entry in job.get("twins") or ()
        if (other := Probe.from_json(entry.get("probe"))) is not None
    ]
    if not known:
        return
    twin = find_twin(probe, known)
    if twin is None:
        detail = f"computes something else than each of the {len(known)} trained candidates"
        screen["checks"].append({"name": "behaviour_twin", "passed": True, "detail": detail})
        return
    detail = (
        f"computes what {twin} computes (same outputs and gradients at the probe's fixed "
        "point, same state size): training it would repeat that experiment"
    )
    message = f"behaviour_twin: {detail}"
    screen["checks"].append({"name": "behaviour_twin", "passed": False, "detail": detail})
    screen.update(failure="behaviour_twin", message=message)
    result.update(failure="behaviour_twin", message=message)


def _task(data: Mapping[str, Any]) -> TaskSpec:
    from loop.tasks import LMSpec, MQARSpec

    fields = _as_tuples(dict(data))
    kind = fields.get("kind")
    if kind == "mqar":
        return MQARSpec(**fields)
    if kind == "lm":
        return LMSpec(**fields)
    raise ValueError(f"unknown task kind {kind!r}")


def _train(
    job: Mapping[str, Any], workspace: Path, mixer_cls: Callable[..., Any]
) -> dict[str, Any]:
    """Build, train and export; returns the result (failure set where a phase failed)."""
    from loop.export import ExportError, export_model
    from loop.model import Backbone, BackboneConfig
    from loop.train import TrainConfig, train

    spec = _task(job["task"])
    config = TrainConfig(**_as_tuples(job["train"]))
    backbone = BackboneConfig(**_as_tuples(job["backbone"] or {}))
    model = Backbone(mixer_cls, backbone, job.get("options") or {}, seed=int(job["model_seed"]))
    payload: dict[str, Any] = {}
    heartbeat = Heartbeat(workspace / HEARTBEAT_FILE)
    if job.get("device"):
        from loop.train_device import DeviceConfig, train_on_device

        log, throughput = train_on_device(
            model, spec, config, DeviceConfig(**job["device"]), heartbeat=heartbeat
        )
        model.cpu()  # export on the CPU, through the references: graphs of plain ATen ops
        payload["throughput"] = dataclasses.asdict(throughput)
    else:
        log = train(model, spec, config, heartbeat=heartbeat)
    payload["train_log"] = dataclasses.asdict(log)
    if log.failure is not None:
        return {"failure": str(log.failure), "message": log.detail, "payload": payload}
    try:
        exported = export_model(model, spec, workspace / ARTIFACTS_DIR)
    except ExportError as exc:
        return {"failure": "export", "message": _tail(str(exc)), "payload": payload}
    payload["export"] = {
        "directory": ARTIFACTS_DIR,
        "seconds": exported.seconds,
        "manifest": exported.manifest.model_dump(mode="json"),
    }
    return {"failure": None, "message": "", "payload": payload}


def _evaluate(job: Mapping[str, Any]) -> dict[str, Any]:
    """An `evaluate` job: the trusted evaluator on exported graphs; no candidate code loads."""
    from loop.evaluate import EvalJob, run_job

    evaluate = EvalJob.model_validate(job["evaluate"])
    if job.get("wait_for_artifacts"):
        # The folder appears in one rename once training has ended; until then (or until
        # the parent stops this run) there is nothing to read.
        while not evaluate.artifact_dir.is_dir():
            time.sleep(ARTIFACT_POLL_S)
    output = run_job(evaluate)
    return {
        "failure": None if output.failure is None else str(output.failure),
        "message": output.error or ("" if output.metrics is None else output.metrics.detail),
        "screen": None,
        "payload": {"evaluation": output.model_dump(mode="json")},
    }


def _read_job(path: Path) -> dict[str, Any]:
    raw = path.read_bytes()
    if len(raw) > MAX_JOB_BYTES:
        raise ValueError(f"{path.name} is over {MAX_JOB_BYTES} bytes")
    job = json.loads(raw)
    if not isinstance(job, dict):
        raise ValueError(f"{path.name} holds no job object")
    return job


def _standing_by(spec: Mapping[str, Any]) -> dict[str, Any] | None:
    """A standby's job: the modules a training job loads are imported first, then the job
    file is awaited; None when none came within the wait."""
    for name in STANDBY_IMPORTS:
        importlib.import_module(name)
    path = Path(str(spec["job_file"]))
    deadline = time.monotonic() + float(spec["wait_s"])
    while not path.is_file():
        if time.monotonic() >= deadline:
            return None
        time.sleep(ARTIFACT_POLL_S)
    return _read_job(path)


def run_job(workspace: Path) -> dict[str, Any]:
    """Run WORKSPACE/job.json and return the result; never raises for candidate faults."""
    started = time.perf_counter()
    job = _read_job(workspace / JOB_FILE)
    if job.get("kind") == "standby":
        handed = _standing_by(job)
        if handed is None:
            return {"failure": None, "message": STANDBY_IDLE, "screen": None, "payload": {}}
        job, started = handed, time.perf_counter()
    kind = job.get("kind")
    if kind == "evaluate":
        return _evaluate(job)
    if kind not in ("screen", "train"):
        raise ValueError(f"unknown job kind {kind!r}")
    timings: dict[str, float] = {}
    try:
        module = _load_candidate(workspace, job["code"])
    except (SyntaxError, ImportError) as exc:
        return _error_result("syntax_import", exc, with_traceback=False)
    except BaseException as exc:
        return _error_result(_failure_of(exc), exc, with_traceback=True)
    mixer_cls = getattr(module, "Mixer", None)
    if mixer_cls is None:
        return {
            "failure": "syntax_import",
            "message": "the candidate module defines no Mixer",
            "screen": None,
            "payload": {},
        }
    # The candidate's import; in a fresh run also torch's, which a standby had loaded.
    timings["load"] = time.perf_counter() - started

    mark = time.perf_counter()
    report = _screen(job, mixer_cls)
    timings["screen"] = time.perf_counter() - mark
    result: dict[str, Any] = {
        "failure": None if report.failure is None else str(report.failure),
        "message": report.message,
        "screen": _report_json(report),
        "payload": {},
    }
    if report.passed:
        mark = time.perf_counter()
        _probe(job, mixer_cls, result)
        timings["probe"] = time.perf_counter() - mark
    if kind == "train" and result["failure"] is None:
        mark = time.perf_counter()
        try:
            trained = _train(job, workspace, mixer_cls)
        except BaseException as exc:
            trained = _error_result(_failure_of(exc), exc, with_traceback=True)
        timings["train"] = time.perf_counter() - mark
        result.update(failure=trained["failure"], message=trained["message"])
        result["payload"] = trained["payload"]
    result["payload"]["timings"] = timings
    return result


def _is_private_dir(path: Path) -> bool:
    info = path.lstat()
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 2 and args[0] == "--init":
        return run_init(json.loads(args[1]))
    if len(args) != 1:
        sys.stderr.write("usage: python -m loop.worker WORKSPACE | --init SPEC\n")
        return 2
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    workspace = Path(args[0])
    if not _is_private_dir(workspace):
        sys.stderr.write(f"{workspace} is not a directory owned by this user\n")
        return 2
    try:
        result = run_job(workspace)
    except MemoryError as exc:
        result = _error_result("oom", exc, with_traceback=False)
    except BaseException as exc:
        result = _error_result(_failure_of(exc), exc, with_traceback=True)
    _write_result(workspace, result)
    # Skip interpreter teardown: with torch loaded it costs over a second per run, and
    # nothing the candidate registered (atexit, __del__) should run after the result.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    raise SystemExit(main())
