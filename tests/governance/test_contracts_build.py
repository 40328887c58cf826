"""The committed contract artifacts match the sources, and the forge tests pass."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from chains import CONTRACTS, FORGE, NPM_MISSING

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _toolchain() -> None:
    if shutil.which("node") is None or not (CONTRACTS / "node_modules" / "solc").exists():
        pytest.skip(NPM_MISSING)


def test_recompiling_the_sources_reproduces_the_committed_artifacts() -> None:
    _toolchain()
    done = subprocess.run(
        ["node", "scripts/compile.js", "--check"],
        cwd=CONTRACTS,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "artifacts match sources (4 contracts)" in done.stdout


def test_forge_tests_pass_with_solc_js() -> None:
    _toolchain()
    if not FORGE.exists():
        pytest.skip(NPM_MISSING)
    done = subprocess.run(
        [str(FORGE), "test", "--offline"],
        cwd=CONTRACTS,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 failed" in done.stdout
