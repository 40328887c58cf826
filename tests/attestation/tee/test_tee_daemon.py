"""`asi-node daemon` with a TEE provider set: evidence collected at start-up, before
anything runs, logged and bound to the node key; a machine without the TEE refuses to
start, naming what is missing. The TEE is the kernel-like fake configfs-tsm tree
(fake_tee.py), driven by scripts/check.py, which the image check also runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.cli.main import main
from node.runtime import open_node
from scripts import tee_startup_check as check


def test_the_daemon_logs_evidence_bound_to_its_key_and_refuses_without_a_tee(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert check.main([]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("[")]
    assert lines[0] == "[ok] daemon collected evidence (exit 0)"
    assert "[ok] evidence binds the log key" in lines
    assert "[ok] evidence verified: " in out
    assert lines[-1].startswith("[ok] without a TEE: ")
    assert "attestation: collected sev-snp evidence (0 GPU report(s)), logged as entry" in out
    # Evidence first: collected before the API serves anything.
    assert out.index("attestation: collected") < out.index("serving the HTTP API")
    assert out.rstrip().endswith("tee start-up: PASS")


def test_a_node_set_for_a_tee_that_gives_no_evidence_does_not_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    assert main(["--home", str(home), "init"]) == 0
    before = open_node(home).log().size
    port = check.free_port()
    check.set_tee(home, tmp_path / "absent" / "report")
    code = main(["--home", str(home), "daemon", "--port", str(port)])
    captured = capsys.readouterr()
    assert code == 2
    assert '[attestation] provider is "sev-snp", but this machine gave no evidence' in captured.err
    assert "configfs-tsm" in captured.err and "does not exist" in captured.err
    assert "Traceback" not in captured.err
    assert "serving the HTTP API" not in captured.out and not check.answers(port)
    assert open_node(home).log().size == before  # nothing logged
    assert not (home / "attestation" / "evidence.json").exists()
