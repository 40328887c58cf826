"""A node home anywhere runs experiments: in an XDG data folder, or with HOME set to a
folder inside the root user's home, whose ancestors the sandbox user cannot enter.

Runs the real CLI, sandbox and training on a one-candidate campaign, so it is marked
integration and slow.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from loop.sandbox import namespaces_available
from node.store import Store

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0 or not namespaces_available(),
        reason="needs root and working util-linux unshare (the jail)",
    ),
]

CONFIG = """
preset = "quick"
train_steps = 20
baselines = ["deltanet"]
rerun_seeds = []
[budget]
max_candidates = 1
"""


@pytest.fixture
def in_roots_home() -> Iterator[Path]:
    """A fresh folder inside the root user's home (mode 0700 there), removed afterwards."""
    base = Path(tempfile.mkdtemp(dir=pwd.getpwuid(0).pw_dir, prefix=".asi-node-test-"))
    yield base
    shutil.rmtree(base, ignore_errors=True)


def run_campaign(env: dict[str, str], home: Path, tmp_path: Path) -> None:
    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "node.cli.main", *argv]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)

    config = tmp_path / "c.toml"
    config.write_text(CONFIG)
    for argv in (("init",), ("campaign", "create", "homes", "--config", str(config))):
        done = cli(*argv)
        assert done.returncode == 0, done.stderr
    done = cli("campaign", "run", "homes")
    assert done.returncode == 0, done.stdout + done.stderr
    store = Store.open(f"sqlite:///{home / 'node.db'}")
    try:
        experiments = store.list_experiments(store.get_campaign("homes").id)
        assert len(experiments) == 2  # the baseline and the one candidate
        # Each one trained: done, or judged hopeless by its own early abort after so few
        # steps; never a sandbox that could not start or a crash.
        for exp in experiments:
            assert exp.status == "done" or exp.failure_class == "hopeless", exp.analysis
            assert exp.train, exp.analysis
    finally:
        store.close()


def clean_env(home_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASI_NODE_")}
    return env | {"HOME": str(home_dir)}


def test_a_home_in_an_xdg_data_folder_runs_experiments(in_roots_home: Path, tmp_path: Path) -> None:
    home = in_roots_home / ".local" / "share" / "asi-node"
    env = clean_env(in_roots_home) | {"ASI_NODE_HOME": "~/.local/share/asi-node"}
    run_campaign(env, home, tmp_path)


def test_a_home_under_a_home_inside_roots_home_runs_experiments(
    in_roots_home: Path, tmp_path: Path
) -> None:
    user = in_roots_home / "user"
    user.mkdir()
    run_campaign(clean_env(user), user / ".asi-node", tmp_path)  # the default ~/.asi-node
