"""The command line and the HTTP API over a node home filled by a fake Engineer."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fakes import FakeEngineer
from fastapi.testclient import TestClient

from node.api.app import create_app
from node.campaign.config import Budget, CampaignConfig
from node.campaign.scheduler import CampaignRunner
from node.cli.main import build_parser, main
from node.runtime import open_node

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    assert main(["--home", str(home), "init"]) == 0
    return home


@pytest.fixture
def filled(home: Path) -> tuple[Path, str]:
    """A home with one finished campaign, scored by the fake Engineer."""
    node = open_node(home)
    config = CampaignConfig(
        preset="quick", baselines=("deltanet", "linear"), budget=Budget(max_candidates=3)
    )
    camp = node.store.create_campaign("fake", config.model_dump(mode="json"))
    CampaignRunner(node.store, camp, FakeEngineer(best=0.5), 2, 1, b"k" * 32).run()  # type: ignore[arg-type]
    return home, camp.id


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_every_command_in_the_readme_parses() -> None:
    text = README.read_text()
    usage = re.search(r"## Using it\n\n```text\n(.*?)```", text, re.S)
    assert usage is not None
    parser = build_parser()
    lines = [ln.split("  ")[0] for ln in usage.group(1).splitlines() if ln.startswith("asi-node")]
    assert len(lines) >= 6
    names = {"NAME": "n", "ID": "c-1", "CAMPAIGN": "c-1"}
    for line in lines:
        alternatives = re.sub(r"\[[^\]]*\]", "", line.removeprefix("asi-node")).split(" | ")
        group = alternatives[0].split()[0]
        for i, alternative in enumerate(alternatives):
            argv = [names.get(w, w) for w in alternative.split()]
            parser.parse_args(argv if i == 0 else [group, *argv])


@pytest.mark.parametrize(
    "argv", [[], ["campaign"], ["experiments"], ["init"], ["demo"], ["serve"], ["cognition"]]
)
def test_help_describes_each_command(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: asi-node")


def test_serve_names_a_port_it_cannot_listen_on_before_starting(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = run(capsys, "--home", str(home), "serve", "--port", str(port))
    assert code == 2 and f"cannot listen on 127.0.0.1:{port}: Address already in use" in err
    code, _, err = run(capsys, "--home", str(home), "serve", "--host", "no-such-host.invalid")
    assert code == 2 and "no-such-host.invalid:8787: the host does not resolve" in err
    for bad, why in (("70000", "port 70000 is outside 1-65535"), ("http", "'http' is not a port")):
        with pytest.raises(SystemExit) as exc:
            main(["--home", str(home), "serve", "--port", bad])
        assert exc.value.code == 2 and why in capsys.readouterr().err


def test_bad_flags_and_unwritable_outputs_are_named_without_a_traceback(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "--home", str(home), "campaign", "create", "x", "--candidates", "-3")
    assert code == 2 and "budget.max_candidates: Input should be greater than or equal to 0" in err
    assert open_node(home).store.list_campaigns() == []
    missing = tmp_path / "no-such-dir" / "bundle.json"
    code, _, err = run(capsys, "--home", str(home), "log", "export", str(missing))
    assert code == 2 and f"cannot write {missing}: No such file or directory" in err
    assert "Traceback" not in err and not missing.parent.exists()


def test_init_twice_refuses_to_overwrite(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--home", str(home), "init")
    assert code == 2 and "force" in err and "Traceback" not in err


def test_a_malformed_campaign_config_names_the_bad_key(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('preset = "quick"\n[budget]\nmax_candidatez = 3\n')
    code, _, err = run(capsys, "--home", str(home), "campaign", "create", "x", "--config", str(bad))
    assert code == 2 and "budget.max_candidatez" in err and "Traceback" not in err
    bad.write_text('baselines = ["deltanet", "transformerz"]\n')
    code, _, err = run(capsys, "--home", str(home), "campaign", "create", "x", "--config", str(bad))
    assert code == 2 and "transformerz" in err
    bad.write_text("preset = [\n")
    code, _, err = run(capsys, "--home", str(home), "campaign", "create", "x", "--config", str(bad))
    assert code == 2 and "not valid TOML" in err


def test_a_malformed_node_config_names_the_bad_key(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (home / "config.toml").write_text("[loop]\nworkers = 'many'\n")
    code, _, err = run(capsys, "--home", str(home), "campaign", "list")
    assert code == 2 and "loop.workers" in err and "Traceback" not in err


def test_unknown_ids_give_a_clear_error(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["campaign", "show", "c-00000000"],
        ["campaign", "run", "nope"],
        ["experiments", "show", "exp-1"],
    ):
        code, _, err = run(capsys, "--home", str(home), *argv)
        assert code == 2 and err.startswith("asi-node: error:") and "Traceback" not in err


def test_a_corrupted_database_gives_a_clear_error(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (home / "node.db").write_bytes(b"this is not a database" * 100)
    code, _, err = run(capsys, "--home", str(home), "campaign", "list")
    assert code == 2 and "node.db" in err and "Traceback" not in err


def test_commands_without_a_home_say_to_run_init(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "--home", str(tmp_path / "none"), "campaign", "list")
    assert code == 2 and "asi-node init" in err


def test_campaign_and_experiment_views(
    filled: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    home, cid = filled
    code, out, _ = run(capsys, "--home", str(home), "campaign", "list")
    assert code == 0 and cid in out and "fake" in out
    code, out, _ = run(capsys, "--home", str(home), "campaign", "show", "fake")
    assert code == 0 and "leaderboard" in out and "deltanet" in out and "fitness" in out
    code, out, _ = run(capsys, "--home", str(home), "experiments", "list", cid)
    exp_id = out.split()[0]
    assert code == 0 and exp_id.startswith("exp-")
    code, out, _ = run(capsys, "--home", str(home), "experiments", "show", exp_id)
    assert (code == 0 and "code:" in out and "class" in out) or "import" in out
    assert "metrics:" in out and "mean_acc" in out


def test_http_api_serves_campaigns_leaderboard_and_experiments(filled: tuple[Path, str]) -> None:
    home, cid = filled
    node = open_node(home)
    client = TestClient(create_app(node.store))
    assert client.get("/health").json()["status"] == "ok"
    assert [c["id"] for c in client.get("/campaigns").json()] == [cid]
    detail = client.get(f"/campaigns/{cid}").json()
    assert detail["config"]["preset"] == "quick" and detail["experiments"]["done"] >= 5
    board = client.get(f"/campaigns/{cid}/leaderboard").json()
    assert board[0]["fitness"] >= board[-1]["fitness"]
    exp = client.get(f"/experiments/{board[0]['experiment_id']}").json()
    assert exp["metrics"]["mean_acc"] > 0 and "Mixer" in exp["code"]
    missing = client.get("/campaigns/c-deadbeef")
    assert missing.status_code == 404 and "c-deadbeef" in missing.json()["detail"]
    assert client.get("/openapi.json").status_code == 200
