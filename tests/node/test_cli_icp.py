"""`asi-node icp`: the node principal, certificate checks and certified anchors."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "governance"))
sys.path.insert(0, str(Path(__file__).parents[1] / "attestation" / "icp"))

from icp_replica import ROOT_KEY_DER, Replica, Server
from icp_vectors import V4_TIME, VECTORS

from attestation.icp.principal import from_text
from node.cli.main import main

V4 = VECTORS / "v4_mainnet_request_status_ivg37_delegated_2022.cbor"
V1 = VECTORS / "v1_mainnet_read_state_time_ivg37_delegated_2025.cbor"


def test_verify_prints_the_root_hash_of_a_valid_certificate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--home", str(tmp_path), "icp", "verify", str(V4), "--at", str(V4_TIME)]
    assert main([*argv, "--canister", "ivg37-qiaaa-aaaab-aaaga-cai"]) == 0
    assert "b294b418b11ebe5dd7dd1dcb099e4e0372b9a42aef7a7a37fb4f25667d705ea9" in (
        capsys.readouterr().out
    )


def test_verify_names_the_failing_step(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--home", str(tmp_path), "icp", "verify", str(V1)]
    assert main([*argv, "--canister", "ivg37-qiaaa-aaaab-aaaga-cai"]) == 1
    assert "step 5 (freshness)" in capsys.readouterr().err
    assert main([*argv, "--canister", "not-a-principal"]) == 2
    assert "not a principal id" in capsys.readouterr().err


def test_principal_is_created_once_and_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--home", str(tmp_path), "icp", "principal"]) == 0
    first = capsys.readouterr().out.strip()
    assert main(["--home", str(tmp_path), "icp", "principal"]) == 0
    assert capsys.readouterr().out.strip() == first
    assert (tmp_path / "icp_identity.pem").stat().st_mode & 0o777 == 0o600


def test_latest_reads_a_certified_anchor_from_the_configured_canister(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    canister = "uxrrr-q7777-77774-qaaaq-cai"
    replica = Replica(canister_id=from_text(canister), time_ns=0)
    replica.model.logs["log-a"] = [(7, bytes(range(32)))]
    (tmp_path / "replica.der").write_bytes(ROOT_KEY_DER)
    with Server(replica) as server:
        monkeypatch.setenv("ASI_NODE_ICP__URL", server.url)
        monkeypatch.setenv("ASI_NODE_ICP__ANCHOR_CANISTER", canister)
        monkeypatch.setenv("ASI_NODE_ICP__ROOT_KEY_PATH", str(tmp_path / "replica.der"))
        replica.time_ns = time.time_ns()
        assert main(["--home", str(tmp_path), "icp", "latest", "log-a"]) == 0
        assert f"log-a: size 7 root {bytes(range(32)).hex()}" in capsys.readouterr().out
        monkeypatch.delenv("ASI_NODE_ICP__URL")
        key = str(tmp_path / "replica.der")
        argv = ["icp", "latest", "log-b", "--url", server.url, "--canister", canister]
        assert main(["--home", str(tmp_path / "auditor"), *argv, "--root-key", key]) == 0
        assert "log-b: no anchor (certified absent)" in capsys.readouterr().out


def test_latest_without_configuration_says_what_to_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--home", str(tmp_path), "icp", "latest", "log-a"]) == 2
    assert "give --url and --canister" in capsys.readouterr().err
