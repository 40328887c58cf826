"""Shared campaigns: a node joins another node's campaign (same id and config), checked
against the controller's registration on the embedded EVM, through the CLI."""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import tomli_w
from test_network_peers import served

sys.path.insert(0, str(Path(__file__).parents[1] / "governance"))

from dao import Dao

from governance.anvil import free_port
from governance.chain import Chain, deploy
from governance.deploy_config import DEV_PARAMS
from governance.relay import ChainGovernor
from node.anchoring.chain_home import save_deployment
from node.campaign.config import Budget, CampaignConfig
from node.cli.main import main
from node.runtime import open_node
from node.settings import init_home
from node.store import Store

RPC = "http://chain.test:8545"  # Chain.connect is pointed at the embedded EVM


def _config(candidates: int) -> CampaignConfig:
    return CampaignConfig(preset="quick", budget=Budget(max_candidates=candidates))


def _home(tmp_path: Path, name: str, rpc: str = "") -> Path:
    home = tmp_path / name
    init_home(home, env={})
    if rpc:
        data = tomllib.loads((home / "config.toml").read_text())
        data.setdefault("chain", {})["rpc_url"] = rpc
        (home / "config.toml").write_text(tomli_w.dumps(data))
    return home


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    def run(home: Path, *argv: str) -> tuple[int, str, str]:
        code = main(["--home", str(home), *argv])
        out, err = capsys.readouterr()
        assert "Traceback" not in err
        return code, out, err

    return run


def test_a_node_joins_a_registered_campaign_under_its_id_and_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: Callable[..., tuple[int, str, str]]
) -> None:
    chain = Chain.embedded()
    assert chain.faucet_key is not None
    deployment = deploy(
        chain, chain.faucet_key, params=replace(DEV_PARAMS, timelock_delay_s=0, voting_period=10)
    )
    dao = Dao(chain, deployment, chain.faucet_key, anvil=False)
    voter = dao.holder(10**24 * 6 // 10)
    keeper = ChainGovernor.from_deployment(chain, deployment, dao.funded())
    monkeypatch.setattr(Chain, "connect", classmethod(lambda cls, url, **kw: chain))
    home = _home(tmp_path, "b", RPC)
    save_deployment(home, deployment)
    with Store.open(f"sqlite:///{tmp_path}/a.db") as peer, served(peer, free_port()) as url:
        shared = peer.create_campaign("shared", _config(3).model_dump(mode="json"))
        unregistered = peer.create_campaign("later", _config(4).model_dump(mode="json"))
        dao.register([shared], voter, keeper)

        code, out, _ = cli(home, "campaign", "join", shared.id, "--from", url)
        assert code == 0
        assert out == (
            f"joined campaign {shared.id} (shared), config {shared.config_hash}: registered "
            f"on the controller on chain {chain.chain_id} with this config\n"
        )
        here = open_node(home).store.get_campaign(shared.id)
        assert (here.name, here.config_hash) == ("shared", shared.config_hash)

        code, _, err = cli(home, "campaign", "join", shared.id, "--from", url, "--name", "x")
        assert code == 2 and err == f"asi-node: error: campaign {shared.id} is here already\n"

        code, _, err = cli(home, "campaign", "join", unregistered.id, "--from", url)
        assert code == 2
        assert err.startswith(
            f"asi-node: error: campaign {unregistered.id} is not registered on the controller "
            f"on chain {chain.chain_id}: a DAO proposal must call registerCampaign(0x"
        )
    # A config file that is not the registered one is refused, naming both hashes.
    other = tmp_path / "other.toml"
    other.write_text(tomli_w.dumps(_config(5).model_dump(mode="json", exclude_none=True)))
    code, _, err = cli(home, "campaign", "join", unregistered.id, "--config", str(other))
    assert code == 2 and "is not registered on the controller" in err


def test_without_a_chain_the_join_says_it_is_unchecked_and_bad_input_is_one_line(
    tmp_path: Path, cli: Callable[..., tuple[int, str, str]]
) -> None:
    home = _home(tmp_path, "b")
    with Store.open(f"sqlite:///{tmp_path}/a.db") as peer, served(peer, free_port()) as url:
        camp = peer.create_campaign("shared", _config(3).model_dump(mode="json"))
        code, out, _ = cli(home, "campaign", "join", camp.id, "--from", url, "--name", "mine")
        assert code == 0 and out.endswith(
            "not checked against a controller ([chain] rpc_url is empty)\n"
        )
        assert open_node(home).store.get_campaign("mine").config_hash == camp.config_hash

        code, _, err = cli(home, "campaign", "join", "c-0000000f", "--from", url)
        assert code == 2
        assert err.startswith(f"asi-node: error: cannot read campaign c-0000000f from {url}: ")
    code, _, err = cli(home, "campaign", "join", "shared", "--from", url)
    assert code == 2 and "cannot read campaign shared" in err
    config = tmp_path / "c.toml"
    config.write_text(tomli_w.dumps(_config(3).model_dump(mode="json", exclude_none=True)))
    code, _, err = cli(home, "campaign", "join", "not-an-id", "--config", str(config))
    assert code == 2
    assert err == "asi-node: error: 'not-an-id' is not a campaign id (c- and 8 hex digits)\n"
