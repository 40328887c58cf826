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
    assert len(fir) == 4 and all(row["value"] <= row["bound"] for row in fir)
    # The second e2e experiment trained in the standby the first one started.
    [standby] = [row for row in rows if row["name"].endswith("outside training, in a standby")]
    assert standby["note"].startswith("standby started")


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


def test_gpu_check_fla_branches_run_against_a_fake_cuda_platform(
    monkeypatch: pytest.MonkeyPatch, fake_fla: object
) -> None:
    """The rows only a GPU with fla produces, computed on the CPU by a stand-in for fla."""
    import importlib.util

    from kernels import dispatch, fla_ops

    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    assert spec is not None and spec.loader is not None
    gpu_check = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_check", gpu_check)  # its dataclasses look it up
    spec.loader.exec_module(gpu_check)
    hopper = dispatch.Platform("cuda", (3, 6, 0), fla=True, hopper=True, tilelang=False)
    monkeypatch.setattr(dispatch, "probe_platform", lambda device: hopper)
    monkeypatch.setattr(fla_ops, "_fla_function", fake_fla)
    monkeypatch.setattr(fla_ops, "DEVICE_TYPES", ("cuda", "cpu"))  # the stand-in runs here
    rows = gpu_check.section_agreement_rnn(gpu_check.Sizes.smoke(), fp32=True)
    by_name = {row.name: row for row in rows}
    assert not [row for row in rows if row.failed]
    assert by_name["rnn delta bf16 grads"].backend == "fla"
    assert by_name["rnn delta fp32"].backend == "reference"  # fla refuses fp32 delta rule
    assert "refuses the gated backward" in by_name["rnn gated_delta bf16 grads"].note
    speed = gpu_check.section_speed(gpu_check.Sizes.smoke())
    assert {row.backend for row in speed} >= {"fla", "reference", "sdpa", "triton"}
