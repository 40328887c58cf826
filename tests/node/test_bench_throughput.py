"""scripts/bench_throughput.py --against: the revision's report read back, a bad revision
refused before anything trains."""

from __future__ import annotations

import argparse
import json
import threading
from pathlib import Path

import pytest

from scripts import bench_throughput as bench

REPORT = """baselines deltanet, linear, softmax: 512 s

arm    candidates   finished   outpaced     wall s   per hour      CPU s  per CPU-h
today           6          6          0       1490       14.5       1402       15.4
"""


def test_the_revision_s_rate_and_candidates_are_read_from_its_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    curves = tmp_path / "curves.json"
    runs = [
        {"candidate": "deltanet", "role": "baseline"},
        {"candidate": "add-elu1", "role": "candidate"},
        {"candidate": "add-silu-l2-conv4-rms", "role": "candidate"},
    ]
    curves.write_text(json.dumps({"about": "x", "today": runs}))
    assert bench.reported_rate("HEAD~3", REPORT, curves) == 14.5
    assert "HEAD~3 trained: add-elu1, add-silu-l2-conv4-rms" in capsys.readouterr().out
    assert bench.reported_rate("HEAD~3", "Traceback ...", curves) is None
    assert "printed no report: no ratio" in capsys.readouterr().out


def test_an_unknown_revision_is_refused_by_name() -> None:
    args = argparse.Namespace(
        against="no-such-revision", candidates=2, preset="quick", skip=0, steps=None
    )
    with pytest.raises(SystemExit, match="cannot check out no-such-revision"):
        bench.against(args, threading.Event())


def test_a_stop_before_the_baselines_exits_without_training_or_a_report(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """What Ctrl-C does (stop_on_signals sets the event): the baselines' run ends at once
    and the script exits instead of going on to the arms."""
    args = argparse.Namespace(
        candidates=1, preset="quick", steps=None, today_only=True, skip=0, top=1, curves=None
    )
    stop = threading.Event()
    stop.set()
    with pytest.raises(SystemExit, match="stopped; no report"):
        bench.run(args, stop)
    out = capsys.readouterr().out
    assert "baselines deltanet" not in out and "candidates per" not in out
