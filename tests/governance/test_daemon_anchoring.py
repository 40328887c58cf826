"""Two campaigns under one daemon share one log: each of its checkpoints goes on-chain
exactly once, in tree-size order, on anvil and on the embedded chain."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import pytest
from chains import ANVIL_KEY, Anvil, free_port
from dao import Dao
from gov_fakes import edit_config, wait_until

sys.path.insert(0, str(Path(__file__).parents[1] / "node"))

from fakes import FakeEngineer

from governance.chain import Chain, Controller, address_of
from governance.relay import ChainGovernor
from node.anchoring.chain_home import load_deployment, load_key, open_audit_chain
from node.campaign.config import Budget, CampaignConfig
from node.cli.main import main
from node.runtime import Node, open_node
from node.store import DirectiveLedger, Outbox
from node.tlog.log import LogView


def _home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    assert main(["--home", str(home), "init"]) == 0
    edit_config(
        home,
        {
            "poll_seconds = 5.0": "poll_seconds = 0.1",
            "checkpoint_every = 100": "checkpoint_every = 2",
            "poll_seconds = 2.0": "poll_seconds = 0.02",
            # anvil mines a block only for a transaction: one confirmation, not two
            "confirmations = 2": "confirmations = 1",
        },
    )
    store = open_node(home).store
    for name in ("a", "b"):
        cfg = CampaignConfig(
            preset="quick", baselines=("deltanet",), budget=Budget(max_candidates=6)
        )
        store.create_campaign(name, cfg.model_dump(mode="json"))
    return home


def _run_daemon_until_done(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engineer = FakeEngineer()
    monkeypatch.setattr(Node, "engineer", lambda self: engineer)
    errors: list[BaseException] = []
    handler = signal.getsignal(signal.SIGTERM)

    def done() -> bool:
        store = open_node(home).store
        return all(store.get_campaign(n).status == "done" for n in ("a", "b"))

    def driver() -> None:
        try:
            wait_until(
                "the daemon to start", lambda: signal.getsignal(signal.SIGTERM) is not handler
            )
            wait_until(
                "both campaigns to finish", done, timeout_s=float(os.environ.get("T", "240"))
            )
        except BaseException as exc:
            errors.append(exc)
        finally:
            if signal.getsignal(signal.SIGTERM) is not handler:
                os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=driver, name="daemon-driver")
    thread.start()
    assert main(["--home", str(home), "daemon", "--port", str(free_port())]) == 0
    thread.join(30)
    if errors:
        raise errors[0]


def _assert_each_checkpoint_anchored_once_in_order(home: Path, rpc: str) -> None:
    node = open_node(home)
    checkpoints = LogView(node.store).checkpoints()
    assert len(checkpoints) >= 10
    log_id = checkpoints[0].log_id
    chain, deployment = open_audit_chain(rpc, home)
    deployment = deployment or load_deployment(home)
    controller = Controller(chain, deployment.addresses["CampaignController"])
    anchored = [(a.tree_size, a.root) for a in controller.anchors(log_id)]
    expected = [(c.tree_size, c.root_hash) for c in checkpoints]
    assert anchored == expected
    # Each sent once: the node account made one transaction per checkpoint (and one per
    # acknowledged directive, under governance), none wasted.
    acks = [r for r in DirectiveLedger(node.store).list_applied() if r.acknowledged_at]
    assert chain.nonce(address_of(load_key(home))) == len(checkpoints) + len(acks)
    rows = Outbox(node.store).rows()
    assert sorted((r.tree_size, r.status) for r in rows) == [
        (c.tree_size, "confirmed") for c in checkpoints
    ]


def test_two_campaigns_under_one_daemon_anchor_each_checkpoint_once_on_the_embedded_chain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = _home(tmp_path)
    _run_daemon_until_done(home, monkeypatch)
    _assert_each_checkpoint_anchored_once_in_order(home, "embedded")


@pytest.mark.integration
def test_two_campaigns_under_one_daemon_anchor_each_checkpoint_once_on_anvil(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, anvil: Anvil
) -> None:
    home = _home(tmp_path)
    key_file = tmp_path / "deployer.key"
    key_file.write_text(ANVIL_KEY.hex())
    deploy = ["--home", str(home), "chain", "deploy", "--rpc", anvil.url, "--profile", "dev"]
    assert main([*deploy, "--deployer-key-file", str(key_file), "--fund-node-eth", "1"]) == 0
    edit_config(home, {'rpc_url = ""': f'rpc_url = "{anvil.url}"'})
    # A governed node runs only what the DAO registered, with the config it registered.
    dao = Dao(Chain.connect(anvil.url), load_deployment(home), ANVIL_KEY, anvil=True)
    voter = dao.holder(300_000 * 10**18)  # 30 % of the supply: past the quorum
    keeper = ChainGovernor.from_deployment(dao.chain, dao.deployment, ANVIL_KEY)
    dao.register(open_node(home).store.list_campaigns(), voter, keeper)
    _run_daemon_until_done(home, monkeypatch)
    _assert_each_checkpoint_anchored_once_in_order(home, anvil.url)
