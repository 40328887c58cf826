"""A staged run end to end on the CPU, through the command line and the real pipeline: a
quick MQAR exploration, then a verification stage on the tiny language-model task that
re-trains the top candidate on three seeds beside its (parameter-matched) baselines,
then `asi-node audit` on the exported log, which checks each verification record's link
to its exploration record."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from node.cli.main import main

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, out + err
    return out


def test_explore_then_verify_then_audit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = str(tmp_path / "home")
    _cli(capsys, "--home", home, "init")
    explore = tmp_path / "explore.toml"
    explore.write_text(
        'preset = "quick"\ntrain_steps = 200\nbaselines = ["deltanet", "linear"]\n'
        "[budget]\nmax_candidates = 2\nmax_rerun_candidates = 0\n"
    )
    out = _cli(capsys, "--home", home, "campaign", "create", "explore", "--config", str(explore))
    source = re.search(r"created campaign (\S+)", out)
    assert source is not None
    _cli(capsys, "--home", home, "campaign", "run", source.group(1))

    stage = tmp_path / "verify.toml"
    stage.write_text(
        'task = "lm"\npreset = "quick"\ntrain_steps = 120\nbaselines = ["deltanet", "linear"]\n'
        f'[verify]\nsource = "{source.group(1)}"\ntop_k = 1\n'
    )
    out = _cli(capsys, "--home", home, "campaign", "create", "verify", "--config", str(stage))
    assert "verifies " in out and "lower bound" in out
    verify = re.search(r"created campaign (\S+)", out)
    assert verify is not None
    out = _cli(capsys, "--home", home, "campaign", "run", verify.group(1))
    # The chosen candidate and the baselines ran on three seeds each.
    board = out.split("leaderboard of verify")[1]
    rows = [ln for ln in board.splitlines() if re.match(r"\s*\d+\s", ln)]
    assert len(rows) >= 3
    assert all(re.search(r"\s3\s+(scored|promoted)", ln) for ln in rows), board

    bundle = tmp_path / "log.json"
    _cli(capsys, "--home", home, "log", "export", str(bundle))
    assert json.loads(bundle.read_text())["entries"]
    out = _cli(capsys, "audit", str(bundle))
    assert "result: PASS" in out
    assert "3 verification record(s) linked to the records they verify" in out
