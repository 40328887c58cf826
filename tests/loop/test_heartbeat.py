"""Training writes a heartbeat; the Engineer's side reads it defensively and relays it."""

from __future__ import annotations

import json
import math
import os
import threading
import time
from pathlib import Path

import pytest
from mixers import CumulativeMean
from test_sandbox import GOOD_MIXER
from test_train import TINY_MODEL, TINY_SPEC

from loop.heartbeat import (
    HEARTBEAT_FILE,
    MAX_HEARTBEAT_BYTES,
    Heartbeat,
    Progress,
    parse_progress,
    read_progress,
    watch,
)
from loop.model import Backbone, BackboneConfig
from loop.tasks import MQARSpec
from loop.train import TrainConfig, train
from loop.worker import _HeartbeatRelay

GOOD = {"step": 40, "steps": 100, "loss": 2.5, "tok_s": 1200.0, "elapsed_s": 8.0}


def test_a_short_training_run_writes_its_heartbeat(tmp_path: Path) -> None:
    path = tmp_path / HEARTBEAT_FILE
    seen: list[Progress] = []

    def on_step(steps_done: int, loss: float) -> bool:
        now = read_progress(path)
        if now is not None:
            seen.append(now)
        return True

    model = Backbone(CumulativeMean, TINY_MODEL, seed=0)
    config = TrainConfig(steps=6, abort_step=None, log_every=3)
    log = train(model, TINY_SPEC, config, on_step, heartbeat=Heartbeat(path, interval_s=0))
    assert [p.step for p in seen] == [1, 2, 3, 4, 5, 6]  # one beat per step at interval 0
    last = read_progress(path)
    assert last is not None and (last.step, last.steps) == (6, 6)
    assert last.loss is not None and math.isfinite(last.loss) and last.loss > 0
    assert last.tok_s > 0 and 0 < last.elapsed_s <= log.wall_seconds
    assert last.eta_s == 0
    assert not (tmp_path / (HEARTBEAT_FILE + ".tmp")).exists()


def test_beats_come_at_most_every_interval_and_at_the_last_step(tmp_path: Path) -> None:
    path = tmp_path / HEARTBEAT_FILE
    now = [0.0]
    beat = Heartbeat(path, interval_s=2.0, clock=lambda: now[0])
    beat.beat(1, 10, 3.0, 100, 0.5)
    beat.beat(2, 10, 2.9, 200, 1.0)  # too soon: not written
    assert read_progress(path) == Progress(1, 10, 3.0, 200.0, 0.5)
    now[0] = 2.5
    beat.beat(3, 10, math.nan, 300, 1.5)
    written = read_progress(path)
    assert written is not None and written.step == 3 and written.loss is None  # NaN loss
    assert written.eta_s == pytest.approx(1.5 * 7 / 3)
    beat.beat(10, 10, 1.0, 1000, 5.0)  # the last step is always written
    assert read_progress(path) == Progress(10, 10, 1.0, 200.0, 5.0)


def test_a_heartbeat_that_cannot_be_written_does_not_stop_training(tmp_path: Path) -> None:
    beat = Heartbeat(tmp_path / "missing" / HEARTBEAT_FILE, interval_s=0)
    beat.beat(1, 2, 1.0, 10, 1.0)  # no folder: ignored


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "[1, 2]",
        '"a string"',
        "[" * 100_000,
        json.dumps(GOOD | {"step": "40"}),
        json.dumps(GOOD | {"step": 40.5}),
        json.dumps(GOOD | {"step": True}),
        json.dumps(GOOD | {"step": 101}),
        json.dumps(GOOD | {"step": -1}),
        json.dumps(GOOD | {"steps": 0, "step": 0}),
        json.dumps(GOOD | {"steps": 10**12}),
        json.dumps(GOOD | {"loss": "2.5"}),
        json.dumps(GOOD | {"tok_s": -1.0}),
        json.dumps(GOOD | {"elapsed_s": None}),
        json.dumps({k: v for k, v in GOOD.items() if k != "tok_s"}),
        json.dumps(GOOD).replace("2.5", "NaN"),
        json.dumps(GOOD).replace("1200.0", "Infinity"),
        json.dumps(GOOD | {"pad": "x" * MAX_HEARTBEAT_BYTES}),
    ],
)
def test_malformed_heartbeats_are_ignored(tmp_path: Path, text: str) -> None:
    path = tmp_path / HEARTBEAT_FILE
    path.write_text(text)
    assert read_progress(path) is None


def test_only_a_plain_heartbeat_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / HEARTBEAT_FILE
    assert read_progress(path) is None  # none yet
    path.mkdir()
    assert read_progress(path) is None
    path.rmdir()
    target = tmp_path / "elsewhere.json"
    target.write_text(json.dumps(GOOD))
    path.symlink_to(target)
    assert read_progress(path) is None  # a link is never followed
    path.unlink()
    os.mkfifo(path)
    assert read_progress(path) is None  # a FIFO neither (and reading it does not block)
    path.unlink()
    path.write_text(json.dumps(GOOD | {"extra": [1, 2]}))
    assert read_progress(path) == parse_progress(GOOD) == Progress(40, 100, 2.5, 1200.0, 8.0)


def test_watch_reports_each_new_reading_until_the_block_ends(tmp_path: Path) -> None:
    path = tmp_path / HEARTBEAT_FILE
    got: list[Progress] = []
    arrived = threading.Event()

    def on_progress(p: Progress) -> None:
        got.append(p)
        if p.step == 3:
            arrived.set()
        if p.step == 2:
            raise RuntimeError("a display's fault")  # logged; the watch goes on

    with watch(path, on_progress, interval_s=0.01):
        for step in (1, 2, 3):
            path.write_text(json.dumps(GOOD | {"step": step}))
            deadline = time.monotonic() + 5
            while not any(p.step == step for p in got) and time.monotonic() < deadline:
                time.sleep(0.01)
        assert arrived.wait(5)
        path.write_text("garbage")
        time.sleep(0.05)
    assert [p.step for p in got] == [1, 2, 3]  # no repeats, garbage skipped
    with watch(path, None):  # no callback: no thread
        pass


def test_the_jail_init_relays_a_bounded_plain_heartbeat(tmp_path: Path) -> None:
    inside, real = tmp_path / "jail", tmp_path / "real"
    inside.mkdir()
    real.mkdir()
    fd = os.open(real, os.O_RDONLY | os.O_DIRECTORY)
    try:
        relay = _HeartbeatRelay(str(inside), fd)
        relay.interval_s = 0.0
        relay()  # nothing written yet
        assert not (real / HEARTBEAT_FILE).exists()
        (inside / HEARTBEAT_FILE).write_text(json.dumps(GOOD))
        relay()
        assert read_progress(real / HEARTBEAT_FILE) == parse_progress(GOOD)
        (inside / HEARTBEAT_FILE).write_text("x" * (MAX_HEARTBEAT_BYTES + 1))
        relay()  # too large: the last good copy stays
        assert read_progress(real / HEARTBEAT_FILE) == parse_progress(GOOD)
        (inside / HEARTBEAT_FILE).unlink()
        (inside / HEARTBEAT_FILE).symlink_to("/etc/passwd")
        relay()  # a link is not followed
        assert read_progress(real / HEARTBEAT_FILE) == parse_progress(GOOD)
        (inside / HEARTBEAT_FILE).unlink()
        (inside / HEARTBEAT_FILE).write_text(json.dumps(GOOD | {"step": 41}))
        relay()
        relayed = read_progress(real / HEARTBEAT_FILE)
        assert relayed is not None and relayed.step == 41
    finally:
        os.close(fd)


@pytest.mark.slow
def test_the_engineer_reports_progress_while_the_sandbox_trains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from loop.engineer import Engineer, ExperimentJob
    from loop.sandbox import Limits, namespaces_available

    monkeypatch.setattr("loop.heartbeat.POLL_INTERVAL_S", 0.2)
    got: list[Progress] = []
    spec = MQARSpec.quick()
    job = ExperimentJob(
        experiment_id="exp-progress",
        code=GOOD_MIXER,
        task=spec,
        train=TrainConfig(steps=400, abort_step=None, threads=1),
        seed=0,
        heldout_seed=1234,
        backbone=BackboneConfig(vocab_size=spec.vocab_size),
        on_progress=got.append,
    )
    result = Engineer(tmp_path / "workspaces", Limits(wall_s=300)).run(job, threading.Event())
    assert result.failure is None, result.message
    assert got, "no heartbeat seen while training"
    assert all(p.steps == 400 and 0 < p.step <= 400 and p.tok_s > 0 for p in got)
    assert [p.step for p in got] == sorted({p.step for p in got})
    if namespaces_available():  # read through the jail init's relay
        assert "pid_namespace" in result.isolation
