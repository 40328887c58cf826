"""`asi-node gov run` and `asi-node daemon` obeying an SNS, end to end through the CLI.

The node's settings name the loopback replica as [icp] url, the SNS governance canister
and its generic-function ids; the replica answers `list_proposals` / `get_proposal` in
the real Candid and CBOR formats, with certificates under its own root key. Training is
the gated fake engineer (it runs until released, and stops when cancelled). An executed
pause proposal stops the running campaign; a resume proposal is obeyed only after the
node has read it again through a certified update call, so while update calls fail the
campaign stays paused; `gov directives` then shows both directives.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from gov_fakes import GatedEngineer, edit_config, wait_until
from icp_replica import ROOT_KEY_DER, Replica, Server, SnsModel

from attestation.icp.principal import from_text
from governance.anvil import free_port
from governance.icp import (
    HttpTransport,
    IcpClient,
    IcpNetworkError,
    NodeIdentity,
    SnsGovernance,
    encode_directive_payload,
)
from governance.sns import DirectiveKind, SnsDirectiveSource
from node.campaign.config import Budget, CampaignConfig
from node.cli.main import main
from node.runtime import Node, open_node
from node.store import DirectiveLedger

SNS = "ryjl3-tyaaa-aaaaa-aaaba-cai"
PAUSE_FN, RESUME_FN = 1001, 1002


def _configure(home: Path, url: str, key: Path) -> None:
    edit_config(
        home,
        {
            '# url = "..."': f'url = "{url}"',
            '# root_key_path = "..."': f'root_key_path = "{key}"',
            '# sns_governance_canister = "..."': f'sns_governance_canister = "{SNS}"',
            '# sns_pause_function = "..."': f"sns_pause_function = {PAUSE_FN}",
            '# sns_resume_function = "..."': f"sns_resume_function = {RESUME_FN}",
            "poll_seconds = 5.0": "poll_seconds = 0.1",
            "stop_deadline_seconds = 30.0": "stop_deadline_seconds = 5.0",
        },
    )


@pytest.mark.parametrize("command", ["gov run", "daemon"])
def test_the_node_obeys_an_sns_pause_and_resumes_only_on_a_certified_answer(
    command: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    home, key = tmp_path / "home", tmp_path / "replica.der"
    key.write_bytes(ROOT_KEY_DER)
    sns = SnsModel()
    replica = Replica(canister_id=from_text(SNS), time_ns=time.time_ns(), polls_before_final=0)
    replica.methods = sns.methods()
    engineer = GatedEngineer()
    monkeypatch.setattr(Node, "engineer", lambda self: engineer)
    errors: list[BaseException] = []

    with Server(replica) as server:
        assert main(["--home", str(home), "init"]) == 0
        _configure(home, server.url, key)
        config = CampaignConfig(
            preset="quick", baselines=("deltanet", "linear"), budget=Budget(max_candidates=1)
        )
        camp = open_node(home).store.create_campaign("x", config.model_dump(mode="json"))

        def status() -> str:
            return open_node(home).store.get_campaign(camp.id).status

        def kinds() -> list[str]:
            return [d.kind for d in DirectiveLedger(open_node(home).store).list_applied(camp.id)]

        def calls() -> int:
            return sum(p.endswith("/call") for p in replica.seen_paths)

        def drive() -> None:
            try:
                replica.time_ns = time.time_ns()
                assert engineer.started.acquire(timeout=30), "training never started"
                sns.add_generic(1, PAUSE_FN, encode_directive_payload(camp.id, "pause", None), 100)
                wait_until("the pause", lambda: status() == "paused" and kinds() == ["pause"])
                wait_until("training to stop", lambda: bool(engineer.interrupted))
                assert calls() == 0  # a pause needs no certified read: the query is enough

                replica.down_for = {"call"}  # update calls fail; queries still answer
                replica.time_ns = time.time_ns()
                sns.add_generic(
                    2, RESUME_FN, encode_directive_payload(camp.id, "resume", None), 110
                )
                wait_until("two failed certified reads", lambda: calls() >= 2)
                assert status() == "paused" and kinds() == ["pause"]  # not on a query alone
                started = len(engineer.jobs)
                replica.down_for = set()
                wait_until("the resume", lambda: kinds() == ["pause", "resume"])
                wait_until("training to restart", lambda: len(engineer.jobs) > started)
                engineer.release.set()
                wait_until("the campaign to finish", lambda: status() == "done")
            except BaseException as exc:  # reported after gov run returns
                errors.append(exc)
            finally:
                engineer.release.set()
                os.kill(os.getpid(), signal.SIGTERM)  # what Ctrl-C or `docker stop` does

        driver = threading.Thread(target=drive, name="sns-driver")
        driver.start()
        handler = signal.getsignal(signal.SIGTERM)
        extra = ["--port", str(free_port())] if command == "daemon" else []
        code = main(["--home", str(home), *command.split(), "x", *extra])
        driver.join(30)
    if errors:
        raise errors[0]
    assert code == 0
    assert signal.getsignal(signal.SIGTERM) is handler  # the command gave it back
    out = capsys.readouterr().out
    assert f"obeying sns for {camp.id}" in out
    certified = [p for p in replica.seen_paths if p.endswith(("/call", "/read_state"))]
    assert certified and all(f"/canister/{SNS}/" in p for p in certified)

    assert main(["--home", str(home), "gov", "directives", "x"]) == 0
    out = capsys.readouterr().out
    assert f"campaign {camp.id} (x): done" in out
    assert "directive pause epoch 1 from sns (this campaign)" in out
    assert "directive resume epoch 2 from sns (this campaign)" in out


def test_a_failed_certified_read_leaves_the_whole_poll_for_the_next_one() -> None:
    sns = SnsModel()
    now = time.time_ns()
    replica = Replica(canister_id=from_text(SNS), time_ns=now, polls_before_final=0)
    replica.methods = sns.methods()
    sns.add_generic(1, PAUSE_FN, encode_directive_payload("c", "pause", None), 100)
    sns.add_generic(2, RESUME_FN, encode_directive_payload("c", "resume", None), 110)
    replica.down_for = {"call"}
    with Server(replica) as server:
        client = IcpClient(
            HttpTransport(server.url), NodeIdentity.generate(), root_key_der=ROOT_KEY_DER
        )
        functions = {PAUSE_FN: DirectiveKind.PAUSE, RESUME_FN: DirectiveKind.RESUME}
        source = SnsDirectiveSource(SnsGovernance(client, from_text(SNS)), functions)
        with pytest.raises(IcpNetworkError, match="HTTP 503"):
            source.poll()
        assert source.floor == 0 and not source.handled
        replica.down_for = set()
        found = source.poll()
    assert [(d.proposal_id, d.kind, d.certified) for d in found] == [
        (1, DirectiveKind.PAUSE, False),
        (2, DirectiveKind.RESUME, True),
    ]
    assert source.floor == 2
