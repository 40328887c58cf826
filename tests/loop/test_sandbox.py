"""The sandbox contains hostile candidates and turns every ending into a value.

Hostile sources live in tests/loop/hostile/ as data. The tests call run_sandboxed
directly, skipping the static check, because the OS has to contain what slips past it.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from loop import sandbox
from loop.outcome import FailureClass
from loop.sandbox import (
    LIBRARY_DIRS,
    PROJECT_ROOT,
    Limits,
    SandboxError,
    SandboxOutcome,
    _loader_dirs,
    check_isolation,
    namespaces_available,
    run_sandboxed,
    screen_report,
)
from loop.screen import check_source
from loop.worker import JOB_FILE, RESULT_FILE, screen_job, train_job

HOSTILE = Path(__file__).parent / "hostile"
FAST = Limits(wall_s=20, cpu_s=20, max_processes=32)
SECRET = "s3cr3t-node-key-material"

needs_root_jail = pytest.mark.skipif(
    os.geteuid() != 0 or not namespaces_available(),
    reason="needs root and working util-linux unshare (namespaces, user drop)",
)

GOOD_MIXER = '''
import torch
from torch import nn


class Mixer(nn.Module):
    """Causal running mean of a projection: tiny, linear, with a fixed-size state."""

    def __init__(self, d_model, n_heads, **options):
        super().__init__()
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x):
        steps = torch.arange(1, x.shape[1] + 1, dtype=x.dtype).view(1, -1, 1)
        return torch.cumsum(self.proj(x), dim=1) / steps

    def init_state(self, batch):
        weight = self.proj.weight
        return (weight.new_zeros(batch, weight.shape[0]), weight.new_zeros(batch, 1))

    def step(self, x_t, state):
        total, count = state
        total, count = total + self.proj(x_t), count + 1
        return total / count, (total, count)
'''


def hostile(name: str, **fill: str) -> str:
    code = (HOSTILE / name).read_text()
    for key, value in fill.items():
        code = code.replace("{" + key + "}", value)
    return code


def run(
    code: str, workspace: Path, limits: Limits = FAST, stop: threading.Event | None = None
) -> SandboxOutcome:
    return run_sandboxed(screen_job(code), workspace, limits, stop=stop)


def _stat_fields(pid: str) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # state, ppid, ...


def leftovers(workspace: Path) -> list[str]:
    """Processes still running for this workspace, and zombies left to this test process."""
    found = []
    marker = str(workspace).encode()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        fields = _stat_fields(pid)
        if marker in cmdline:
            found.append(f"{pid}: {cmdline[:120]!r}")
        elif fields is not None and fields[0] == "Z" and int(fields[1]) == os.getpid():
            found.append(f"{pid}: zombie child")
    return found


def jailed(workspace: Path) -> list[int]:
    """Processes of the sandbox user running for this workspace."""
    marker = str(workspace).encode()
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            owner = Path(f"/proc/{pid}").stat().st_uid
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if owner == FAST.uid and marker in cmdline:
            pids.append(int(pid))
    return pids


def assert_clean(workspace: Path) -> None:
    # SIGKILLed processes take a moment to disappear from /proc.
    deadline = time.monotonic() + 5
    while (left := leftovers(workspace)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert left == []


@pytest.fixture
def visible_dir() -> Iterator[Path]:
    """A directory the sandbox can see (outside /tmp and the masks), removed afterwards."""
    base = PROJECT_ROOT / ".pytest_cache" / "sandbox-tests"
    base.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(dir=base))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_wall_clock_limit_kills_the_whole_group(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    started = time.monotonic()
    out = run(hostile("loop_forever.txt"), ws, Limits(wall_s=2, cpu_s=60))
    assert out.failure is FailureClass.TIMEOUT
    assert "wall-clock" in out.message
    assert time.monotonic() - started < 2 + 5
    assert_clean(ws)


def test_children_left_behind_are_killed_when_the_runner_exits(tmp_path: Path) -> None:
    code = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    time.sleep(600)\n"
        "raise ValueError('parent done')\n"
    )
    ws = tmp_path / "ws"
    out = run(code, ws)
    assert out.failure is FailureClass.CRASH
    assert out.wall_s < 10
    assert_clean(ws)


@needs_root_jail
def test_the_jail_ends_when_its_parent_dies(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from loop.sandbox import Limits, run_sandboxed\n"
        "from loop.worker import screen_job\n"
        "run_sandboxed(screen_job(sys.argv[1]), Path(sys.argv[2]), Limits(wall_s=600))\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script, hostile("loop_forever.txt"), str(ws)],
        cwd=PROJECT_ROOT,
    )
    try:
        # Wait for the candidate itself: a runner with its own child (the forked sleeper).
        deadline = time.monotonic() + 30
        while len(jailed(ws)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(jailed(ws)) >= 2, "the sandbox never started"
    finally:
        parent.kill()
        parent.wait()
    assert_clean(ws)


def test_cpu_limit_is_a_timeout(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    out = run(hostile("burn_cpu.txt"), ws, Limits(wall_s=30, cpu_s=1))
    assert out.failure is FailureClass.TIMEOUT
    assert "CPU-time" in out.message
    assert out.returncode == -signal.SIGXCPU
    assert_clean(ws)


def test_stop_event_interrupts_a_run(tmp_path: Path) -> None:
    stop = threading.Event()
    timer = threading.Timer(0.5, stop.set)
    timer.start()
    try:
        out = run(hostile("loop_forever.txt"), tmp_path / "ws", stop=stop)
    finally:
        timer.cancel()
    assert out.failure is FailureClass.INTERRUPTED
    assert out.wall_s < 5
    assert_clean(tmp_path / "ws")


def test_allocating_50_gb_is_oom(tmp_path: Path) -> None:
    out = run(hostile("allocate_50gb.txt"), tmp_path / "ws")
    assert out.failure is FailureClass.OOM
    assert "MemoryError" in out.message


@pytest.mark.slow
def test_allocating_50_gb_through_torch_is_oom(tmp_path: Path) -> None:
    out = run(hostile("allocate_50gb_torch.txt"), tmp_path / "ws", Limits(wall_s=120))
    assert out.failure is FailureClass.OOM


@needs_root_jail
def test_fork_bomb_is_contained_and_cleaned_up(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    started = time.monotonic()
    out = run(hostile("fork_bomb.txt"), ws, Limits(wall_s=3, cpu_s=60, max_processes=32))
    assert out.failure is FailureClass.TIMEOUT
    assert time.monotonic() - started < 3 + 10
    assert_clean(ws)


@needs_root_jail
def test_no_network_even_to_loopback(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        out = run(hostile("connect_out.txt", port=str(port)), tmp_path / "ws")
        server.settimeout(0.2)
        with pytest.raises(TimeoutError):
            server.accept()  # a completed handshake would be waiting here
    assert out.failure is FailureClass.CRASH
    assert "BLOCKED" in out.message and "CONNECTED" not in out.message
    assert "net_namespace" in out.isolation


@needs_root_jail
def test_root_only_and_hidden_files_cannot_be_read(tmp_path: Path, visible_dir: Path) -> None:
    visible = visible_dir / "node.key"  # in sight, but root's and 0600
    in_tmp = tmp_path / "config.toml"  # under /tmp, which the jail replaces
    hidden_dir = visible_dir / "home"
    hidden_dir.mkdir(mode=0o755)
    readable_but_hidden = hidden_dir / "wallet.json"  # world-readable, in a hidden path
    for path, mode in ((visible, 0o600), (in_tmp, 0o600), (readable_but_hidden, 0o644)):
        path.write_text(SECRET)
        path.chmod(mode)
    paths = [str(visible), str(in_tmp), str(readable_but_hidden)]
    limits = Limits(wall_s=20, hidden_paths=(hidden_dir,))
    for name in ("read_secrets.txt", "escape_static_check.txt"):
        code = hostile(name, paths=repr(paths))
        out = run(code, tmp_path / name, limits)
        assert out.failure is FailureClass.CRASH, out.message
        assert SECRET not in out.message and SECRET not in out.stderr_tail
        assert f"DENIED {visible} PermissionError" in out.message
        assert f"DENIED {in_tmp} FileNotFoundError" in out.message
        assert f"DENIED {readable_but_hidden} FileNotFoundError" in out.message
    assert not check_source(hostile("escape_static_check.txt", paths="[]")).passed


@needs_root_jail
def test_nothing_outside_the_workspace_changes(tmp_path: Path, visible_dir: Path) -> None:
    sentinel = tmp_path / "sentinel"
    sentinel.write_text("original")
    sentinel.chmod(0o666)
    open_dir = visible_dir / "world-writable"
    open_dir.mkdir()
    open_dir.chmod(0o777)  # even a directory anyone may write to stays unchanged
    ws = visible_dir / "ws"  # a workspace outside /tmp: bound in place, not re-created
    targets = [
        str(sentinel),
        "/tmp/planted",
        "/dev/shm/planted",
        "/var/tmp/planted",
        str(open_dir / "planted"),
        str(visible_dir / "planted"),
        str(PROJECT_ROOT / "planted.py"),
    ]
    before = {p: sorted(os.listdir(p)) for p in ("/tmp", "/dev/shm", "/var/tmp", open_dir)}
    out = run(hostile("write_outside.txt", paths=repr(targets)), ws)
    assert out.failure is FailureClass.CRASH, out.message
    assert "WROTE-WORKSPACE" in out.message
    # Inside the jail /tmp, /var/tmp and /dev/shm are private scratch space; the rest is
    # read-only, even where permissions would allow writing.
    assert f"DENIED {sentinel} FileNotFoundError" in out.message
    for target in targets[4:]:
        assert f"DENIED {target} OSError Read-only file system" in out.message
    assert sentinel.read_text() == "original"
    assert {p: sorted(os.listdir(p)) for p in before} == before
    assert not (PROJECT_ROOT / "planted.py").exists()
    # The candidate's workspace was a tmpfs: only the result comes back out of it.
    assert sorted(os.listdir(ws)) == [JOB_FILE, RESULT_FILE]


@needs_root_jail
def test_workspace_is_a_size_limited_tmpfs(tmp_path: Path) -> None:
    code = (
        "with open('big.bin', 'wb') as f:\n    for _ in range(64):\n        f.write(b'x' * 2**20)\n"
    )
    out = run(code, tmp_path / "ws", Limits(wall_s=20, workspace_bytes=8 * 2**20))
    # Even the worker's own result no longer fits, and the host's disk never saw a byte.
    assert out.failure is FailureClass.BAD_OUTPUT
    assert "the workspace is full" in out.message
    assert "No space left on device" in out.stderr_tail
    assert sorted(os.listdir(tmp_path / "ws")) == [JOB_FILE]


@needs_root_jail
def test_only_the_result_and_plain_artifacts_come_back(tmp_path: Path) -> None:
    code = (
        "import json, os\n"
        "os.mkdir('artifacts')\n"
        "open('artifacts/model.pt2', 'wb').write(b'weights')\n"
        "os.symlink('/etc/passwd', 'artifacts/link.pt2')\n"
        "open('artifacts/-rf', 'w').write('odd name')\n"
        "open('notes.txt', 'w').write('stays inside')\n"
        "json.dump({'failure': None, 'message': 'forged'}, open('result.json', 'w'))\n"
        "os._exit(0)\n"
    )
    ws = tmp_path / "ws"
    out = run(code, ws)
    # A candidate can forge its own result: it is data to check, never a score.
    assert out.failure is None and out.message == "forged"
    assert sorted(os.listdir(ws)) == ["artifacts", JOB_FILE, RESULT_FILE]
    assert os.listdir(ws / "artifacts") == ["model.pt2"]
    assert (ws / "artifacts" / "model.pt2").read_bytes() == b"weights"
    assert (ws / "artifacts" / "model.pt2").stat().st_uid == os.getuid()


def test_concurrent_runs_do_not_mix(tmp_path: Path) -> None:
    outcomes: dict[int, SandboxOutcome] = {}

    def one(i: int) -> None:
        outcomes[i] = run(f"raise ValueError('run {i}')", tmp_path / f"ws{i}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i in range(3):
        assert outcomes[i].failure is FailureClass.CRASH
        assert f"ValueError: run {i}" in outcomes[i].message


GARBAGE = {
    "junk_bytes": "open('result.json', 'wb').write(b'\\x00\\xffnot json')",
    "wrong_schema": "open('result.json', 'w').write('{\"failure\": \"won\", \"score\": 1.0}')",
    "oversized": "open('result.json', 'w').write('{\"message\": \"' + 'x' * 3_000_000 + '\"}')",
    "symlink": "os.symlink('/etc/passwd', 'result.json')",
    "fifo": "os.mkfifo('result.json')",
    "nothing": "pass",
}


@pytest.mark.parametrize("kind", sorted(GARBAGE))
def test_garbage_results_are_bad_output(tmp_path: Path, kind: str) -> None:
    code = (
        "import os, sys\n"
        "sys.stdout.write('garbage ' * 10000)\n"
        f"{GARBAGE[kind]}\n"
        "os._exit(0)\n"  # the worker never gets to write its own result
    )
    out = run(code, tmp_path / "ws")
    assert out.failure is FailureClass.BAD_OUTPUT
    assert out.result is None
    assert "root:" not in out.message  # a linked file's content is never echoed
    assert out.returncode == 0


def test_syntax_error_comes_back_as_syntax_import(tmp_path: Path) -> None:
    out = run("class Mixer(:\n    pass\n", tmp_path / "ws")
    assert out.failure is FailureClass.SYNTAX_IMPORT
    assert out.result is not None and "SyntaxError" in out.message


def test_workspace_must_be_new_or_empty(tmp_path: Path) -> None:
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / RESULT_FILE).write_text("{}")
    with pytest.raises(ValueError, match="new or empty"):
        run("pass", tmp_path / "ws")


def test_runs_without_namespaces_when_asked(tmp_path: Path) -> None:
    out = run("raise ValueError('plain')", tmp_path / "ws", Limits(wall_s=20, isolate=False))
    assert out.failure is FailureClass.CRASH
    assert "ValueError: plain" in out.message
    assert "net_namespace" not in out.isolation and "rlimits" in out.isolation


def test_without_namespaces_leftovers_are_still_killed(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    out = run(hostile("loop_forever.txt"), ws, Limits(wall_s=2, isolate=False))
    assert out.failure is FailureClass.TIMEOUT
    assert_clean(ws)  # the setsid() child too: the init is its subreaper


def test_parent_carries_on_and_screens_a_good_mixer(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    out = run_sandboxed(screen_job(GOOD_MIXER), ws, Limits(wall_s=120))
    assert out.failure is None, (out.message, out.stderr_tail)
    report = screen_report(out)
    assert report is not None and report.passed
    assert [c.name for c in report.checks][-1] == "cost_scaling"
    workspace_mode = (ws).stat()
    assert stat.S_IMODE(workspace_mode.st_mode) == 0o700
    assert_clean(ws)


@pytest.mark.slow
def test_train_job_screens_trains_and_exports(tmp_path: Path) -> None:
    from loop.tasks import MQARSpec
    from loop.train import TrainConfig

    config = TrainConfig(steps=10, abort_step=None, log_every=5)
    ws = tmp_path / "ws"
    out = run_sandboxed(train_job(GOOD_MIXER, MQARSpec.quick(), config), ws, Limits(wall_s=300))
    assert out.failure is None, (out.message, out.stderr_tail)
    assert out.result is not None
    payload = out.result["payload"]
    assert payload["train_log"]["steps_done"] == 10
    manifest = payload["export"]["manifest"]
    files = [entry["file"] for entry in manifest["forward"]] + [manifest["step"]["file"]]
    for name in files:
        assert (ws / "artifacts" / name).is_file()
    assert set(payload["timings"]) == {"load", "screen", "probe", "train"}


@pytest.mark.slow
def test_train_job_reports_an_unexportable_model(tmp_path: Path) -> None:
    from loop.tasks import MQARSpec
    from loop.train import TrainConfig

    branch = "        if float(x.abs().max()) > 1e9:\n            x = x * 0\n"
    code = GOOD_MIXER.replace("    def forward(self, x):\n", "    def forward(self, x):\n" + branch)
    config = TrainConfig(steps=2, abort_step=None)
    out = run_sandboxed(
        train_job(code, MQARSpec.quick(), config), tmp_path / "ws", Limits(wall_s=300)
    )
    assert out.failure is FailureClass.EXPORT, (out.message, out.stderr_tail)
    assert "could not export" in out.message


@needs_root_jail
def test_a_candidate_walking_everything_it_reaches_finds_nothing_of_the_host(
    tmp_path: Path, visible_dir: Path
) -> None:
    # Host files the jail must not show: beside the project, in /tmp, in the node's home
    # (inside the project here, so masked), and everywhere else a candidate might look.
    beside = Path(tempfile.mkdtemp(dir=PROJECT_ROOT.parent, prefix=".sandbox-walk-"))
    try:
        beside.chmod(0o755)
        for folder in (beside, tmp_path, visible_dir / "home"):
            folder.mkdir(exist_ok=True)
            (folder / "secret.txt").write_text(SECRET)
            (folder / "secret.txt").chmod(0o644)
        shards = visible_dir / "home" / "shards"  # a shard folder inside the hidden home
        shards.mkdir()
        (shards / "train.bin").write_bytes(b"tokens")
        ws = tmp_path / "ws"
        host: list[str | Path] = [
            sys.prefix,
            sys.base_prefix,
            PROJECT_ROOT,
            ws,
            shards,
            *LIBRARY_DIRS,
        ]
        host += _loader_dirs()
        jail = [  # the jail's own: a fresh /proc and /dev, two-line passwd and group
            "/proc",
            *(f"/dev/{name}" for name in ("null", "zero", "full", "random", "urandom", "shm")),
            *(f"/dev/{name}" for name in ("fd", "stdin", "stdout", "stderr")),
            "/etc/passwd",
            "/etc/group",
            "/etc/ld.so.cache",
            "/etc/ld.so.conf",
            "/etc/ld.so.conf.d",
            "/sys/devices/system/cpu",
            "/sys/devices/system/node",
            "/tmp",
            "/var/tmp",
        ]
        roots = sorted({str(Path(p).resolve()) for p in host} | {str(p) for p in host + jail})
        limits = Limits(
            wall_s=120, cpu_s=120, hidden_paths=(visible_dir / "home",), readable_paths=(shards,)
        )
        out = run(hostile("walk_host.txt", roots=repr(roots)), ws, limits)
        assert "WALKED" in out.message, out.message + out.stderr_tail
        walk = eval((ws / "artifacts" / "walk.txt").read_text())  # written by the walker
        assert walk["listed"] > 20 and walk["modules"] > 100  # it did get around
        assert walk["strays"] == []
        assert len(walk["pids"]) <= 2  # the jail's init and the runner: no host process
        assert SECRET not in out.message and SECRET not in out.stderr_tail
    finally:
        shutil.rmtree(beside, ignore_errors=True)


def test_a_host_without_namespaces_refuses_unless_the_operator_opts_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As in a container started without the flags: unshare exists but is denied.
    monkeypatch.setattr(
        sandbox,
        "namespace_problem",
        lambda: "cannot create the jail's namespaces (unshare: Operation not permitted)",
    )
    with pytest.raises(SandboxError) as refused:
        check_isolation(FAST)
    for named in ("Operation not permitted", "--cap-add SYS_ADMIN", "sandbox.allow_unisolated"):
        assert named in str(refused.value)
    with pytest.raises(SandboxError, match="allow_unisolated"):
        run("raise ValueError('never runs')", tmp_path / "refused", FAST)
    assert not (tmp_path / "refused").exists()
    opted_in = dataclasses.replace(FAST, allow_unisolated=True)
    check_isolation(opted_in)
    try:
        out = run("raise ValueError('ran')", tmp_path / "ws", opted_in)
    except SandboxError as exc:  # as root, Python sits where the dropped user cannot go
        assert "cannot enter" in str(exc) and "allow_unisolated" not in str(exc)
    else:
        assert out.failure is FailureClass.CRASH and "ValueError: ran" in out.message
        assert "unisolated" in out.isolation and "net_namespace" not in out.isolation


@needs_root_jail
def test_crash_text_is_bounded_and_scrubbed_before_anyone_reads_it(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "for n in range(3000):\n"
        "    print('row', n, 'of the data', file=sys.stderr)\n"
        "print('\\x1b[31mred\\x07 /srv/host/file.txt', file=sys.stderr)\n"
        "frame = compile('x = 1 / 0', '/etc/shadow', 'exec')\n"
        "exec(frame)\n"
    )
    out = run(code, tmp_path / "ws")
    assert out.failure is FailureClass.CRASH
    for text in (out.message, out.stderr_tail):
        assert "/etc/shadow" not in text and "/srv/host" not in text
        assert "\x1b" not in text and "\x07" not in text
    assert "ZeroDivisionError: division by zero" in out.message
    assert f"{tmp_path / 'ws'}/candidate.py" in out.message  # the jail's own paths stay
    assert "row 2999" not in out.stderr_tail and "other output line(s) left out" in (
        out.stderr_tail
    )
    assert len(out.stderr_tail) <= 4100
