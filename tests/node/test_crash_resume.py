"""kill -9 of the runner mid-experiment, then a restart: resumed, nothing lost or duplicated.

Runs the real CLI, sandbox and training on a tiny campaign, so it is marked integration.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from node.store import Store

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CONFIG = """
preset = "quick"
train_steps = 40
baselines = ["deltanet"]
rerun_seeds = [1, 2]
[budget]
max_candidates = 1
"""


def cli(home: Path, *argv: str) -> list[str]:
    return [sys.executable, "-m", "node.cli.main", "--home", str(home), *argv]


def sandbox_pids(workspaces: Path) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "loop.worker" in cmdline and str(workspaces) in cmdline:
            pids.append(int(entry.name))
    return pids


def test_kill_9_mid_experiment_then_restart_resumes_exactly(tmp_path: Path) -> None:
    home = tmp_path / "home"
    subprocess.run(cli(home, "init"), check=True, capture_output=True)
    config = tmp_path / "c.toml"
    config.write_text(CONFIG)
    subprocess.run(cli(home, "campaign", "create", "crash", "--config", str(config)), check=True)
    store = Store.open(f"sqlite:///{home / 'node.db'}")
    camp = store.get_campaign("crash")

    runner = subprocess.Popen(cli(home, "campaign", "run", "crash"), stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    running = []
    while time.monotonic() < deadline and not running:
        running = store.list_experiments(camp.id, status="running")
        time.sleep(0.2)
    assert running, "no experiment started"
    while time.monotonic() < deadline and not sandbox_pids(home / "workspaces"):
        time.sleep(0.1)
    time.sleep(1.0)  # mid-experiment: the sandbox is loading or training
    os.kill(runner.pid, signal.SIGKILL)
    runner.wait()
    killed = {e.id for e in store.list_experiments(camp.id, status="running")}
    assert killed, "the experiment should still be marked running after kill -9"
    gone_by = time.monotonic() + 15
    while sandbox_pids(home / "workspaces") and time.monotonic() < gone_by:
        time.sleep(0.2)
    assert not sandbox_pids(home / "workspaces"), "the jail outlived its parent"

    done = subprocess.run(
        cli(home, "campaign", "run", "crash"), capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    assert "interrupted experiment(s) queued again" in done.stdout
    exps = store.list_experiments(camp.id)
    assert all(e.status in ("done", "failed") for e in exps)
    for exp_id in killed:
        assert store.get_experiment(exp_id).attempts == 2  # ran again exactly once
    keys = [(e.candidate_id, e.seed) for e in exps]
    assert len(keys) == len(set(keys))
    generated = [c for c in store.list_candidates(camp.id) if c.origin != "baseline"]
    assert len(generated) == 1
    # The run trained in standbys (loop.standby); the idle one was stopped at its end.
    assert not sandbox_pids(home / "workspaces")
    assert not list((home / "workspaces").glob(".standby-*"))
    store.close()
