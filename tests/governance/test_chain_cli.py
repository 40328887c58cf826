"""`asi-node chain`: operator mistakes end in one clear line and exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from chains import free_port

from node.cli.main import main


def test_deploy_to_an_endpoint_that_is_down_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "deployer.key"
    key.write_text("11" * 32)
    url = f"http://127.0.0.1:{free_port()}"
    args = ["--home", str(tmp_path / "home"), "chain", "deploy", "--rpc", url]
    assert main([*args, "--deployer-key-file", str(key)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"asi-node: error: no answer from the RPC endpoint {url}")
    assert "Traceback" not in err


def test_deploy_with_a_malformed_key_file_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "deployer.key"
    key.write_text("not a key")
    args = ["--home", str(tmp_path / "home"), "chain", "deploy", "--rpc", "http://127.0.0.1:1"]
    assert main([*args, "--deployer-key-file", str(key)]) == 2
    assert capsys.readouterr().err == f"asi-node: error: {key}: expected a hex private key\n"


def test_status_before_any_deployment_points_at_chain_deploy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    args = ["--home", str(home), "chain", "status", "--rpc", "http://127.0.0.1:1"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "chain.json does not exist: deploy the contracts with `asi-node chain deploy" in err
