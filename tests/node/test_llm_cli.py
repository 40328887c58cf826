"""`asi-node demo --researcher llm` and `asi-node cognition` from the command line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from llm_server import MODELS, Action, ScriptedServer, reply
from test_llm_campaign import ScriptedEngineer, analysis, mixer, proposal

from node.cli.main import main
from node.runtime import Node


def run(home: Path, *argv: str) -> int:
    return main(["--home", str(home), *argv])


def key_file(tmp_path: Path, key: str = "test-key") -> Path:
    path = tmp_path / "key"
    path.write_text(key + "\n")
    return path


@pytest.mark.integration
def test_llm_demo_runs_against_an_endpoint_given_by_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(Node, "engineer", lambda self: ScriptedEngineer(best=0.7))
    monkeypatch.setenv("ASI_NODE_LLM__API_KEY_FILE", str(key_file(tmp_path)))

    def propose(n: int) -> Action:
        return reply(
            proposal(f"design-{n}", f"idea number {n} about topic {n * 7}", mixer(f"t{n}"))
        )

    with ScriptedServer() as server:
        server.defaults["researcher"] = propose
        server.defaults["analyst"] = lambda n: reply(analysis(0.5))
        assert run(tmp_path / "home", "demo", "--researcher", "llm", "--llm-url", server.url) == 0
    out = capsys.readouterr().out
    assert f"using model {MODELS[0]}" in out
    assert f"LLM endpoint ok: {server.url} serves {MODELS[0]}" in out
    assert "campaign" in out and "budget after 10 experiment(s)" in out
    assert "LLM: 16 call(s) (0 failed)" in out  # 8 proposals, 8 analyses
    assert "design-1" in out


@pytest.mark.integration
@pytest.mark.parametrize(
    ("args", "key", "message"),
    [
        (["--model", "nope"], "test-key", "does not serve model 'nope'; it lists: scripted-coder"),
        (["--model", MODELS[0]], "wrong-key", "refused the API key"),
        ([], "wrong-key", "lists no models (or cannot be reached); name one with --model"),
    ],
)
def test_llm_demo_says_what_is_wrong_with_the_endpoint(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    key: str,
    message: str,
) -> None:
    monkeypatch.setenv("ASI_NODE_LLM__API_KEY_FILE", str(key_file(tmp_path, key)))
    with ScriptedServer() as server:
        code = run(tmp_path / "h", "demo", "--researcher", "llm", "--llm-url", server.url, *args)
        assert server.served == {}  # nothing was asked of the model
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_llm_demo_without_a_url_or_reachable_server_fails_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(tmp_path / "a", "demo", "--researcher", "llm") == 2
    assert "--researcher llm needs --llm-url URL" in capsys.readouterr().err
    assert run(tmp_path / "a", "demo", "--llm-url", "http://127.0.0.1:9/v1") == 2
    assert "go with --researcher llm" in capsys.readouterr().err
    dead = "http://127.0.0.1:9/v1"  # discard port: nothing listens
    assert (
        run(tmp_path / "b", "demo", "--researcher", "llm", "--llm-url", dead, "--model", "m") == 2
    )
    assert f"cannot reach {dead}" in capsys.readouterr().err


def test_cognition_list_search_and_add(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    assert run(home, "init") == 0
    assert run(home, "cognition", "list") == 0
    listed = capsys.readouterr().out
    assert "arXiv:2406.06484" in listed and int(listed.split()[-2]) >= 40
    assert run(home, "cognition", "search", "overwrite keys delta rule", "-k", "2") == 0
    assert "delta rule" in capsys.readouterr().out
    fields = {
        "--source": "arXiv:2401.00001",
        "--title": "Striped gates",
        "--topic": "gating",
        "--insight": "alternate zebra gates across heads",
        "--symptoms": "acc_128x32 low",
        "--guidance": "two gate sets",
    }
    assert run(home, "cognition", "add", *[x for kv in fields.items() for x in kv]) == 0
    capsys.readouterr()
    assert run(home, "cognition", "search", "zebra", "-k", "1") == 0
    assert "Striped gates" in capsys.readouterr().out
    fields["--insight"] = "  "
    assert run(home, "cognition", "add", *[x for kv in fields.items() for x in kv]) == 2
    assert "missing or empty field(s) insight" in capsys.readouterr().err


README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_llm_configs_load_as_settings_and_campaigns(tmp_path: Path) -> None:
    import tomllib

    from node.campaign.config import parse_config
    from node.campaign.llm_setup import LLMSetup
    from node.settings import load_settings

    text = README.read_text().split("## LLM agents")[1].split("\n## ")[0]
    blocks = re.findall(r"```toml\n(.*?)```", text, re.S)
    assert len(blocks) == 5
    campaign = tomllib.loads(blocks[0])
    assert parse_config(campaign).budget.max_llm_calls == 200
    for i, block in enumerate(blocks[1:]):
        home = tmp_path / str(i)
        home.mkdir()
        (home / "config.toml").write_text(block)
        setup = LLMSetup.from_settings(load_settings(home, env={}))
        assert all(e.base_url.startswith("http") and e.model for e in setup.endpoints.values())
