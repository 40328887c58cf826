"""`asi-node attest collect` and `asi-node attest verify` with a step-by-step report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tee_vectors import VECTORS as VECTOR_DIR

from node.cli.main import main

KEYS = [
    "--evm-address",
    "0x" + "12" * 20,
    "--icp-principal",
    "2vxsx-fae",
]


def init(tmp_path: Path, config: str = "") -> str:
    home = tmp_path / "home"
    assert main(["--home", str(home), "init"]) == 0
    if config:
        with (home / "config.toml").open("a") as fh:
            fh.write(config)
    return str(home)


def node_key_hex(home: str) -> str:
    from node.runtime import open_node

    return open_node(Path(home)).node_key().public.raw.hex()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def vec(rel: str) -> str:
    return str(VECTOR_DIR / rel)


def test_verify_reports_every_step_and_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = str(tmp_path / "home")
    code, out, _ = run(
        capsys, "--home", home, "attest", "verify", vec("tdx/trustee/tdx_quote_5.dat")
    )
    assert code == 0
    assert [line.split()[1] for line in out.splitlines() if line.startswith("  ok")] == [
        f"tdx.{i}" for i in range(1, 11)
    ]
    assert out.strip().endswith("result: VERIFIED tdx")


def test_expired_vlek_fails_today_and_passes_at_a_chosen_date(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "--home",
        str(tmp_path / "home"),
        "attest",
        "verify",
        vec("snp/trustee_milan_vlek/test-vlek-report.bin"),
        "--certs",
        vec("snp/trustee_milan_vlek/test-vlek.der"),
        vec("snp/trustee_milan_vlek/milan_ask_ark_asvk.pem"),
    ]
    code, out, _ = run(capsys, *argv)
    assert code == 1
    assert "  FAIL  snp.4 validity dates: 'SEV-VLEK' expired on 2025-12-10" in out
    assert "result: REJECTED at step snp.4 validity dates" in out
    code, out, _ = run(capsys, *argv, "--at", "2025-06-01")
    assert code == 0, out
    assert "result: VERIFIED sev-snp (Milan, VLEK)" in out


def test_policy_file_is_applied_and_an_empty_one_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = str(tmp_path / "home")
    policy = tmp_path / "policy.toml"
    policy.write_text("allow_debug = true\nany_measurement = true\n")
    debug_quote = vec("tdx/trustee/tdx_quote_4.dat")
    code, out, _ = run(capsys, "--home", home, "attest", "verify", debug_quote)
    assert code == 1 and "FAIL  tdx.10 policy: TD attributes allow debugging" in out
    code, out, _ = run(
        capsys, "--home", home, "attest", "verify", debug_quote, "--policy", str(policy)
    )
    assert code == 0
    policy.write_text("")
    code, _, err = run(
        capsys, "--home", home, "attest", "verify", debug_quote, "--policy", str(policy)
    )
    assert code == 2 and "empty policy" in err


def test_settings_allow_list_is_the_default_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text('[attestation]\nmeasurements = ["' + "00" * 48 + '"]\n')
    code, out, _ = run(
        capsys, "--home", str(home), "attest", "verify", vec("tdx/trustee/tdx_quote_5.dat")
    )
    assert code == 1
    assert "not in the allow-list (1 entries)" in out


def test_collect_none_writes_an_unattested_bundle_that_verify_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = init(tmp_path)
    out_file = tmp_path / "evidence.json"
    code, out, _ = run(capsys, "--home", home, "attest", "collect", *KEYS, "--out", str(out_file))
    assert code == 0 and "UNATTESTED" in out and "logged as entry" in out
    bundle = json.loads(out_file.read_text())
    assert bundle["binding"]["log_public_key"] == node_key_hex(home)
    code, out, _ = run(capsys, "--home", home, "attest", "verify", str(out_file))
    assert code == 3
    assert "result: UNATTESTED" in out


def test_audit_flags_a_node_whose_log_says_it_has_no_tee(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = init(tmp_path)
    exported = tmp_path / "log.json"
    assert run(capsys, "--home", home, "log", "export", str(exported))[0] == 0
    code, out, _ = run(capsys, "--home", home, "audit", str(exported))
    assert code == 0 and "FLAGGED missing: the node published no attestation evidence" in out
    assert run(capsys, "--home", home, "attest", "collect", *KEYS)[0] == 0
    assert run(capsys, "--home", home, "log", "export", str(exported))[0] == 0
    code, out, _ = run(capsys, "--home", home, "audit", str(exported))
    assert code == 0 and "[WARN] attestation: FLAGGED unattested" in out
    assert "[ok  ] attestation" not in out
    # An auditor who needs a TEE says so: the same log then fails.
    code, out, _ = run(capsys, "--home", home, "audit", str(exported), "--require-attestation")
    assert code == 1 and "[FAIL] attestation: required but unattested" in out
    assert "result: FAIL at step 11" in out


def test_collect_errors_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--home", str(tmp_path / "new"), "attest", "collect", *KEYS)
    assert code == 2 and "asi-node init" in err
    home = init(tmp_path)
    absent = tmp_path / "absent"
    env_home = Path(home)
    text = (env_home / "config.toml").read_text()
    (env_home / "config.toml").write_text(
        text.replace('tsm_path = "/sys/kernel/config/tsm/report"', f'tsm_path = "{absent}"')
    )
    code, _, err = run(capsys, "--home", home, "attest", "collect", "--provider", "tdx", *KEYS)
    assert code == 2 and "configfs-tsm" in err and "does not exist" in err
    bad = [*KEYS[:3], "not-a-principal"]
    code, _, err = run(capsys, "--home", home, "attest", "collect", *bad)
    assert code == 2 and "icp_principal" in err


def test_bad_input_files_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = str(tmp_path / "home")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not evidence at all")
    code, out, _ = run(capsys, "--home", home, "attest", "verify", str(junk))
    assert code == 1 and "FAIL  input detect format: not a known evidence format" in out
    code, _, err = run(capsys, "--home", home, "attest", "verify", str(tmp_path / "absent"))
    assert code == 2 and "cannot read" in err
    code, _, err = run(
        capsys, "--home", home, "attest", "verify", str(junk), "--at", "last tuesday"
    )
    assert code == 2 and "--at 'last tuesday'" in err


@pytest.mark.parametrize("argv", [["attest"], ["attest", "collect"], ["attest", "verify"]])
def test_help_describes_the_attest_commands(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("usage: asi-node attest")


def test_verify_checks_the_named_node_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = init(tmp_path)
    out_file = tmp_path / "evidence.json"
    assert run(capsys, "--home", home, "attest", "collect", *KEYS, "--out", str(out_file))[0] == 0
    code, out, _ = run(
        capsys, "--home", home, "attest", "verify", str(out_file), "--log-key", "cd" * 32
    )
    key = node_key_hex(home)
    assert code == 1 and f"FAIL  bundle.1 binding document: names log key {key[:16]}" in out
    code, out, _ = run(capsys, "--home", home, "attest", "verify", str(out_file), "--log-key", key)
    assert code == 3


def test_api_publishes_the_collected_bundle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fastapi.testclient import TestClient

    from node.api.app import create_app
    from node.api.attestation import evidence_path
    from node.runtime import open_node

    home = tmp_path / "home"
    assert main(["--home", str(home), "init"]) == 0
    node = open_node(home)
    client = TestClient(create_app(node.store, attestation_evidence=evidence_path(node.settings)))
    assert client.get("/attestation/evidence").status_code == 404
    assert run(capsys, "--home", str(home), "attest", "collect", *KEYS)[0] == 0
    body = client.get("/attestation/evidence").json()
    assert body["provider"] == "none"
    assert body["binding"]["log_public_key"] == node.node_key().public.raw.hex()
    evidence_path(node.settings).write_text("[1]")
    assert client.get("/attestation/evidence").status_code == 500


def test_audit_fails_when_logged_evidence_binds_another_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from attestation.schema import NodeEventKind
    from attestation.tee.binding import BindingDocument
    from attestation.tee.evidence import EvidenceBundle
    from node.runtime import open_node
    from node.tlog.records import EVENT_KIND, event_statement

    home = init(tmp_path)
    node = open_node(Path(home))
    other = BindingDocument.fresh(
        log_public_key="ef" * 32,
        evm_address="0x" + "12" * 20,
        icp_principal="2vxsx-fae",
        config_hash="cd" * 32,
    )
    tlog = node.log()
    bundle = EvidenceBundle("none", other, "now").to_json()
    tlog.append(
        EVENT_KIND, event_statement(tlog.node_id, NodeEventKind.ATTESTATION, evidence=bundle)
    )
    exported = tmp_path / "log.json"
    assert run(capsys, "--home", home, "log", "export", str(exported))[0] == 0
    code, out, _ = run(capsys, "--home", home, "audit", str(exported))
    assert code == 1
    assert "[FAIL] attestation: step bundle.1 binding document: names log key efef" in out
    assert "result: FAIL at step 11" in out


def test_collect_defaults_the_icp_principal_to_the_node_identity(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = init(tmp_path)
    out_file = tmp_path / "evidence.json"
    argv = ["--home", home, "attest", "collect", "--evm-address", "0x" + "12" * 20]
    assert run(capsys, *argv, "--out", str(out_file))[0] == 0
    code, principal, _ = run(capsys, "--home", home, "icp", "principal")
    assert code == 0
    assert json.loads(out_file.read_text())["binding"]["icp_principal"] == principal.strip()
