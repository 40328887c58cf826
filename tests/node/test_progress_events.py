"""Training heartbeats reach the campaign's event sink as "progress" events, which the
terminal shows as one line per experiment (throttled), or one status line on a TTY."""

from __future__ import annotations

import io
import threading
from typing import Any

from fakes import FakeEngineer
from logfix import small_config

from loop.engineer import EvalResult, ExperimentJob
from loop.heartbeat import Progress
from node.campaign.scheduler import CampaignRunner
from node.cli.progress import EventPrinter, event_line
from node.store import Store

PROGRESS = {
    "experiment": "e1",
    "seq": 12,
    "candidate": "c",
    "role": "candidate",
    "seed": 0,
    "step": 400,
    "steps": 2000,
    "loss": 2.3124,
    "tok_s": 1234.0,
    "eta_s": 190.2,
}


class BeatingEngineer(FakeEngineer):
    """Reports two heartbeats per experiment before its fake result."""

    def run(self, job: ExperimentJob, cancel: threading.Event | None = None) -> EvalResult:
        assert job.on_progress is not None
        job.on_progress(Progress(step=5, steps=10, loss=2.0, tok_s=100.0, elapsed_s=1.0))
        job.on_progress(Progress(step=10, steps=10, loss=1.5, tok_s=120.0, elapsed_s=2.0))
        return super().run(job, cancel)


def test_heartbeats_become_progress_events_that_are_not_stored() -> None:
    store = Store.open("sqlite://")
    camp = store.create_campaign("p", small_config(1).model_dump(mode="json"))
    events: list[tuple[str, dict[str, Any]]] = []
    runner = CampaignRunner(
        store,
        camp,
        BeatingEngineer(),
        workers=1,
        threads_per_worker=1,
        node_secret=b"s" * 32,
        on_event=lambda kind, data: events.append((kind, data)),
    )
    runner.run()
    progress = [data for kind, data in events if kind == "progress"]
    experiments = store.list_experiments(camp.id)
    assert len(progress) == 2 * len(experiments) > 0
    first = progress[0]
    assert first["experiment"] == experiments[0].id and first["seq"] == experiments[0].seq
    assert (first["step"], first["steps"], first["loss"], first["tok_s"]) == (5, 10, 2.0, 100.0)
    assert first["eta_s"] == 1.0 and progress[1]["eta_s"] == 0
    assert all(event_line("progress", data) for data in progress)
    assert not store.list_events(camp.id, kind="progress")
    store.close()


def test_event_line_renders_progress() -> None:
    assert (
        event_line("progress", PROGRESS) == "  [ 12] step 400/2000 loss 2.31 1.2k tok/s eta 3m10s"
    )
    early = PROGRESS | {"step": 0, "loss": None, "tok_s": 12.0, "eta_s": None}
    assert event_line("progress", early) == "  [ 12] step 0/2000 loss - 12 tok/s eta -"
    late = PROGRESS | {"tok_s": 3.4e6, "eta_s": 7260.0}
    assert event_line("progress", late) == "  [ 12] step 400/2000 loss 2.31 3.4M tok/s eta 2h01m"
    assert str(event_line("progress", PROGRESS | {"eta_s": 42.4})).endswith("eta 42s")


class Pipe(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_progress_lines_are_throttled_per_experiment() -> None:
    out, now = Pipe(tty=False), [0.0]
    printer = EventPrinter(out, every_s=30.0, clock=lambda: now[0])
    printer.event("progress", PROGRESS)
    now[0] = 10.0
    printer.event("progress", PROGRESS | {"step": 500})  # too soon for e1
    printer.event("progress", PROGRESS | {"experiment": "e2", "seq": 13})
    now[0] = 31.0
    printer.event("progress", PROGRESS | {"step": 600})
    printer.event("finished", PROGRESS | {"status": "failed", "message": "boom"})
    printer.event("progress", PROGRESS | {"step": 700})  # a new run of e1 prints at once
    printer.event("no such kind", {})
    lines = out.getvalue().splitlines()
    steps = [line.split(" step ")[1].split()[0] for line in lines if " step " in line]
    assert steps == ["400/2000", "400/2000", "600/2000", "700/2000"]
    assert "[ 13]" in lines[1] and "failed c: boom" in lines[3]


def test_on_a_terminal_progress_is_one_status_line() -> None:
    out = Pipe(tty=True)
    printer = EventPrinter(out)
    printer.event("progress", PROGRESS)
    printer.event("progress", PROGRESS | {"step": 500})
    printer.event("finished", PROGRESS | {"status": "failed", "message": "boom"})
    text = out.getvalue()
    status = "\r\x1b[K  [ 12] step 400/2000"
    assert text.startswith(status)
    assert text.count("\r\x1b[K") == 3 and text.count("\n") == 1  # cleared before the line
    assert text.endswith("\r\x1b[K  [ 12] failed c: boom\n")
