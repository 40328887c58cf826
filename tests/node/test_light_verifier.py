"""`pip install asi-node` without extras is an auditor's install: the train extra (torch,
numpy, openai) is not needed to audit a log or print the schema."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from logfix import run_logged_campaign

from attestation.keys import NodeKey
from governance.anvil import free_port
from node.cli.main import TRAIN_EXTRA
from node.store import Store

ROOT = Path(__file__).resolve().parents[2]
# Run with every module of the train extra made unimportable, as on a light install.
BLOCKED = """
import importlib.abc, sys
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, Absent())
from node.cli.main import main
code = main(sys.argv[1:])
print("modules of the train extra loaded:", sorted(m for m in {blocked!r} if m in sys.modules))
sys.exit(code)
"""


def _train_extra() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extra = {req.split("==")[0].split(">=")[0] for req in project["optional-dependencies"]["train"]}
    base = {req.split("==")[0].split(">=")[0].split("[")[0] for req in project["dependencies"]}
    assert not extra & base
    return extra


def _light(*argv: str) -> subprocess.CompletedProcess[str]:
    script = BLOCKED.format(blocked=sorted(_train_extra()))
    return subprocess.run(
        [sys.executable, "-c", script, *argv], capture_output=True, text=True, timeout=120
    )


def test_the_train_extra_holds_the_research_stack() -> None:
    assert _train_extra() == set(TRAIN_EXTRA)


def test_an_audit_needs_nothing_of_the_train_extra(tmp_path: Path) -> None:
    with Store.open("sqlite://") as store:
        tlog, _ = run_logged_campaign(store, NodeKey.generate(), candidates=1)
        bundle = tmp_path / "log.json"
        bundle.write_bytes(tlog.export().to_bytes())
    done = _light("audit", str(bundle))
    assert done.returncode == 0, done.stderr
    assert "result: PASS" in done.stdout
    assert "modules of the train extra loaded: []" in done.stdout
    schema = _light("schema")
    assert schema.returncode == 0 and '"$id"' in schema.stdout
    # A command of the node says what is missing and how to get it, in one line.
    node = _light("--home", str(tmp_path / "home"), "demo")
    assert node.returncode == 2
    assert "pip install 'asi-node[train]'" in node.stderr
    assert "Traceback" not in node.stderr


def test_a_network_audit_needs_nothing_of_the_train_extra(tmp_path: Path) -> None:
    from test_network_peers import served

    with (
        Store.open(f"sqlite:///{tmp_path}/peer.db") as store,
        served(store, free_port()) as url,
    ):
        tlog, _ = run_logged_campaign(store, NodeKey.generate(), candidates=2)
        tlog.checkpoint()
        done = _light("audit-network", url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"[ok  ] {url}: log of " in done.stdout
    assert "no replicated discoveries among 2 discoveries" in done.stdout
    assert "modules of the train extra loaded: []" in done.stdout
    wrong = _light("audit-network", "node-a:8000")
    assert wrong.returncode == 2 and "not a node's API URL" in wrong.stderr
