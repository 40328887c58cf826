"""`asi-node daemon`: the HTTP API and the campaign runs in one process, stopped by SIGTERM.

Training is the gated fake engineer (it runs until released and stops when cancelled),
so the test can stop the daemon in the middle of an experiment, as `docker stop` would,
and then start it again to finish the campaign.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sys
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "governance"))

from gov_fakes import GatedEngineer, edit_config, wait_until

from governance.anvil import free_port
from node.campaign.config import Budget, CampaignConfig
from node.cli.main import main
from node.runtime import Node, open_node
from node.store import DirectiveLedger


def _get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
        return json.loads(reply.read())


def _answers(port: int) -> bool:
    try:
        return bool(_get(port, "/health"))
    except OSError:
        return False


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    assert main(["--home", str(home), "init"]) == 0
    edit_config(
        home,
        {
            "poll_seconds = 5.0": "poll_seconds = 0.1",
            "stop_deadline_seconds = 30.0": "stop_deadline_seconds = 5.0",
        },
    )
    cfg = CampaignConfig(
        preset="quick", baselines=("deltanet", "linear"), budget=Budget(max_candidates=1)
    )
    open_node(home).store.create_campaign("x", cfg.model_dump(mode="json"))
    return home


def _daemon(home: Path, port: int, drive: Callable[[], None]) -> int:
    """Run `asi-node daemon` here while `drive` runs beside it and ends it with SIGTERM."""
    errors: list[BaseException] = []
    handler = signal.getsignal(signal.SIGTERM)

    def daemon_listens() -> bool:  # its SIGTERM handler in place, its API answering
        return signal.getsignal(signal.SIGTERM) is not handler and _answers(port)

    def driver() -> None:
        try:
            wait_until("the daemon's API", daemon_listens)
            drive()
        except BaseException as exc:  # reported after the daemon returns
            errors.append(exc)
        finally:
            if signal.getsignal(signal.SIGTERM) is not handler:
                os.kill(os.getpid(), signal.SIGTERM)  # what Ctrl-C or `docker stop` does

    thread = threading.Thread(target=driver, name="daemon-driver")
    thread.start()
    code = main(["--home", str(home), "daemon", "--port", str(port)])
    thread.join(30)
    if errors:
        raise errors[0]
    assert signal.getsignal(signal.SIGTERM) is handler  # the daemon gave it back
    return code


def test_the_daemon_serves_the_api_while_it_trains_and_a_sigterm_loses_nothing(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    engineer = GatedEngineer()
    monkeypatch.setattr(Node, "engineer", lambda self: engineer)
    camp = open_node(home).store.get_campaign("x")
    port = free_port()
    running: list[str] = []

    def mid_training() -> None:
        assert engineer.started.acquire(timeout=30), "training never started"
        assert [c["name"] for c in _get(port, "/campaigns")] == ["x"]
        assert _get(port, f"/campaigns/{camp.id}")["status"] == "running"
        health = _get(port, "/health")
        assert health["status"] == "ok" and health["node"]["stale"] is False
        assert health["node"]["sources"] == {}  # ungoverned
        assert health["node"]["campaigns"][camp.id] == {"state": "running", "running": True}
        listed = _get(port, f"/campaigns/{camp.id}/experiments")
        running.extend(e["id"] for e in listed if e["status"] == "running")
        assert running

    assert _daemon(home, port, mid_training) == 0
    captured = capsys.readouterr()
    assert f"serving the HTTP API on http://127.0.0.1:{port}" in captured.out
    assert f"obeying no governance source for {camp.id}" in captured.out
    assert "stopped; run again to resume" in captured.out
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"  # progress lines lead with the time
    started = rf"^{stamp} x: \[\s*1\] start  deltanet \(baseline, seed 0\)$"
    assert re.search(started, captured.out, re.M)
    assert re.search(rf"^{stamp} x: \[\s*\d\] interrupted .*: queued again$", captured.out, re.M)
    assert "the campaigns run ungoverned" in captured.err
    stopped = engineer.interrupted
    assert set(running) <= set(stopped)
    store = open_node(home).store
    assert {store.get_experiment(e).status for e in stopped} == {"queued"}  # none lost
    assert store.list_experiments(camp.id, status="running") == []

    # Started again, the daemon resumes the campaign and finishes it, and runs a campaign
    # created while it runs.
    engineer.release.set()

    def status(campaign_id: str) -> str:
        return str(_get(port, f"/campaigns/{campaign_id}")["status"])

    def until_done() -> None:
        wait_until("the campaign to finish", lambda: status(camp.id) == "done")
        cfg = CampaignConfig(preset="quick", baselines=("deltanet",), budget=Budget())
        later = open_node(home).store.create_campaign("y", cfg.model_dump(mode="json"))
        wait_until("the new campaign to finish", lambda: status(later.id) == "done")

    assert _daemon(home, port, until_done) == 0
    out = capsys.readouterr().out
    assert re.search(r"^y: new campaign c-[0-9a-f]+, run from now on$", out, re.M)
    store = open_node(home).store
    assert {store.get_experiment(e).status for e in stopped} == {"done"}  # they ran again
    assert {e.status for e in store.list_experiments(camp.id)} <= {"done", "failed"}
    later = store.list_experiments(store.get_campaign("y").id)
    assert later and {e.status for e in later} <= {"done", "failed"}


def test_a_port_in_use_stops_the_daemon_before_anything_runs(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    engineer = GatedEngineer()
    monkeypatch.setattr(Node, "engineer", lambda self: engineer)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["--home", str(home), "daemon", "x", "--port", str(port)])
    assert code == 2
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in capsys.readouterr().err
    assert engineer.jobs == []
    assert open_node(home).store.get_campaign("x").status == "created"


def test_a_node_that_obeyed_governance_refuses_to_run_ungoverned(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    engineer = GatedEngineer()
    monkeypatch.setattr(Node, "engineer", lambda self: engineer)
    store = open_node(home).store
    camp = store.get_campaign("x")
    DirectiveLedger(store).record(
        source="evm", campaign_id=camp.id, epoch=1, kind="pause", ref="0xabc"
    )
    code = main(["--home", str(home), "daemon", "--port", str(free_port())])
    assert code == 2
    err = capsys.readouterr().err
    assert "this node has obeyed governance (evm) but no governance source is configured" in err
    assert engineer.jobs == []


def test_an_unknown_campaign_stops_the_daemon_before_the_api_starts(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--home", str(home), "daemon", "x", "nope", "--port", str(free_port())]) == 2
    captured = capsys.readouterr()
    assert "no campaign with id or name 'nope'" in captured.err
    assert "serving" not in captured.out


def test_health_says_degraded_when_governance_is_stale_or_the_node_revoked() -> None:
    from fastapi.testclient import TestClient

    from node.api.app import create_app
    from node.store import Store

    state: dict[str, Any] = {}
    client = TestClient(create_app(Store.open("sqlite://"), node_status=lambda: state))
    assert client.get("/health").json() == {"status": "ok", "campaigns": 0}  # not polled yet
    state |= {"campaigns": {}, "sources": {"evm": {"age_s": 75.0}}, "stale": True}
    health = client.get("/health").json()
    assert health["status"] == "degraded" and health["node"] == state
    assert health["problems"] == [
        "no fresh reading from a governance source: every campaign is paused"
    ]
    state |= {"stale": False, "revoked": True}
    assert client.get("/health").json()["problems"] == [
        "this node may not act on the controller (revoked, or its TEE measurement removed): "
        "every campaign is paused until it is approved again"
    ]


def test_a_first_start_on_an_empty_volume_creates_the_home(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fresh = tmp_path / "volume" / "home"
    port = free_port()
    assert _daemon(fresh, port, lambda: None) == 0
    out = capsys.readouterr().out
    assert f"node home created: {fresh}" in out
    assert "training on the CPU" in out
    assert (fresh / "config.toml").is_file()
    tlog = open_node(fresh).log()
    assert tlog.size >= 1  # its key's creation is the log's first entry, as after `init`
    # Reading commands do not make a home where there is none.
    assert main(["--home", str(tmp_path / "typo"), "campaign", "list"]) == 2
    assert not (tmp_path / "typo").exists()
    assert main(["--home", str(tmp_path / "new"), "campaign", "create", "c"]) == 0
    assert "node home created" in capsys.readouterr().out
