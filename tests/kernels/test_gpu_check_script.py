"""scripts/gpu_check.py: its CPU dry run goes through every section without a crash."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_check_cpu_smoke_runs_every_section(tmp_path: Path) -> None:
    """About 20-40 s on 2 cores: start-up probes, agreement, speed and training rows."""
    out = tmp_path / "rows.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--cpu-smoke",
         "--cache-dir", str(tmp_path / "cache"), "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = json.loads(out.read_text())
    sections = {row["section"] for row in rows}
    assert sections == {"start-up", "agree", "speed", "train"}
    assert not [row for row in rows if row["name"] == "section crashed"]
    fir = [row for row in rows if row["name"].startswith("fir") and row["section"] == "agree"]
    assert len(fir) == 6 and all(row["value"] <= row["bound"] for row in fir)


def test_gpu_check_without_cuda_points_to_the_dry_run() -> None:
    pytest.importorskip("triton")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu_check.py")],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and "--cpu-smoke" in done.stderr
