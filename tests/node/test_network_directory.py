"""The node directory on the CampaignController, through the CLI on the embedded EVM:
approved nodes publish their API URL and log id, anyone lists the active ones, a revoked
node drops out, a sync follows the directory's peers, each read only up to a checkpoint
anchored on that chain with the root it holds; refusals are one error line."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomli_w
from pydantic import ValidationError
from test_network_peers import served

from attestation.keys import NodeKey
from attestation.schema import NodeEventKind
from governance.anvil import free_port
from governance.chain import (
    Address,
    Chain,
    Controller,
    Deployment,
    address_of,
    chain_log_id,
)
from node.anchoring.chain_home import deploy_for_node, load_key, save_deployment
from node.cli.main import main
from node.network.directory import MAX_ENDPOINT_BYTES
from node.network.peers import PeerBook, PeerState
from node.runtime import open_node
from node.settings import NetworkSettings, init_home
from node.store import Store
from node.tlog.log import NodeLog, SignedCheckpoint, log_id
from node.tlog.records import EVENT_KIND, event_statement

RPC = "http://chain.test:8545"  # Chain.connect is pointed at the embedded EVM


@dataclass
class World:
    chain: Chain
    deployment: Deployment
    homes: dict[str, Path]  # a, b, c and d approved; stranger not

    @property
    def controller(self) -> Controller:
        return Controller(self.chain, self.deployment.addresses["CampaignController"])

    def address(self, name: str) -> Address:
        return address_of(load_key(self.homes[name], create=False))

    def anchor(self, name: str, origin: str, size: int, root: bytes) -> None:
        """Node `name` anchors `root` as its log `origin`'s checkpoint of `size`."""
        key = load_key(self.homes[name], create=False)
        ctl, log_name = self.controller, log_id(origin)
        prev = ctl.log_head(log_name, address_of(key)).root
        self.chain.send(key, ctl.anchor_call(log_name, size, root, prev))


def _configure(home: Path, **sections: dict[str, object]) -> None:
    path = home / "config.toml"
    data = tomllib.loads(path.read_text())
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    path.write_text(tomli_w.dumps(data))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """Five node homes on one embedded chain: a, b, c and d approved by the deployer (the
    dev profile's governance path), the stranger not."""
    root = tmp_path_factory.mktemp("directory")
    homes = {name: root / name for name in ("a", "b", "c", "d", "stranger")}
    keys = {}
    for name, home in homes.items():
        init_home(home, env={})
        _configure(home, chain={"rpc_url": RPC}, network={"directory": True})
        keys[name] = load_key(home)
    chain = Chain.embedded()
    assert chain.faucet_key is not None
    others = tuple(address_of(keys[n]) for n in ("b", "c", "d"))
    deployment = deploy_for_node(chain, chain.faucet_key, keys["a"], extra_nodes=others)
    for name, home in homes.items():
        chain.transfer(chain.faucet_key, address_of(keys[name]), 10**19)
        save_deployment(home, deployment)
    return World(chain, deployment, homes)


@pytest.fixture
def cli(
    world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str, str]]:
    """`asi-node --home HOME ARGS...` with the chain URL reaching the embedded EVM."""
    monkeypatch.setattr(Chain, "connect", classmethod(lambda cls, url, **kw: world.chain))

    def run(name: str, *argv: str) -> tuple[int, str, str]:
        code = main(["--home", str(world.homes[name]), *argv])
        out, err = capsys.readouterr()
        assert "Traceback" not in err
        return code, out, err

    return run


def _one_error_line(err: str) -> str:
    assert err.startswith("asi-node: error: ") and err.count("\n") == 1, err
    return err.removeprefix("asi-node: error: ").strip()


def _log_name(home: Path) -> bytes:
    return log_id(open_node(home).log().origin)


def test_approved_nodes_publish_and_anyone_lists_the_directory(
    world: World, cli: Callable[..., tuple[int, str, str]]
) -> None:
    code, out, _ = cli("a", "network", "publish", "http://a.example:8000/")
    a = world.address("a")
    assert code == 0 and out.startswith(f"published http://a.example:8000 for node {a}")
    _configure(world.homes["b"], network={"endpoint": "https://b.example"})
    assert cli("b", "network", "publish")[0] == 0
    code, out, _ = cli("a", "network", "publish", "http://a.example:8000")
    assert code == 0 and out == f"already published: http://a.example:8000 for node {a}\n"

    entries = world.controller.directory()
    assert [(e.node, e.endpoint) for e in entries] == [
        (a, "http://a.example:8000"),
        (world.address("b"), "https://b.example"),
    ]
    # The log id is the one the node anchors under: its log name, bound to its address.
    assert entries[0].chain_log_id == chain_log_id(a, _log_name(world.homes["a"]))

    code, out, _ = cli("b", "network", "directory")
    assert code == 0
    header, row_a, row_b = out.splitlines()
    assert header.split() == ["node", "log", "id", "this", "endpoint"]
    assert row_a.split() == [a, "0x" + entries[0].chain_log_id.hex(), "http://a.example:8000"]
    assert row_b.split() == [
        world.address("b"),
        "0x" + entries[1].chain_log_id.hex(),
        "yes",
        "https://b.example",
    ]


def test_a_sync_follows_the_directorys_peers_once_and_never_itself(
    world: World, cli: Callable[..., tuple[int, str, str]], tmp_path: Path
) -> None:
    b = open_node(world.homes["b"])
    key = b.node_key()
    with Store.open(f"sqlite:///{tmp_path}/b-log.db") as store:
        tlog = NodeLog(store, key)
        for _ in range(3):
            tlog.append(EVENT_KIND, event_statement(tlog.node_id, NodeEventKind.NODE_KEY_CREATED))
        cp = tlog.checkpoint()
        world.anchor("b", tlog.origin, cp.tree_size, cp.root_hash)
        with served(store, free_port()) as url:
            assert cli("b", "network", "publish", url)[0] == 0
            # a's own entry (nothing answers there) is not followed; b, listed both in
            # [network] peers and in the directory, is synced once.
            _configure(world.homes["a"], network={"peers": [url + "/"]})
            code, out, err = cli("a", "network", "sync")
    assert code == 0, out + err
    assert out == f"{url}: verified 3 new entries (size 3); imported 0\n"


def test_a_revoked_node_drops_out_of_the_directory(
    world: World, cli: Callable[..., tuple[int, str, str]]
) -> None:
    assert cli("c", "network", "publish", "http://c.example")[0] == 0
    c = world.address("c")
    assert c in cli("a", "network", "directory")[1]
    ctl = world.controller
    assert world.chain.faucet_key is not None  # the dev deployment's guardian
    world.chain.send(world.chain.faucet_key, ctl.contract.functions.revokeNode(c))
    code, out, _ = cli("a", "network", "directory")
    assert code == 0 and c not in out and world.address("a") in out
    assert ctl.node_entry(c) is not None  # kept, but no longer listed
    err = _one_error_line(cli("c", "network", "publish", "http://c2.example")[2])
    assert err.startswith(f"node address {c} is not approved on CampaignController {ctl.address}")


def test_an_unapproved_node_is_told_to_ask_governance(
    world: World, cli: Callable[..., tuple[int, str, str]]
) -> None:
    code, _, err = cli("stranger", "network", "publish", "http://stranger.example")
    assert code == 2
    line = _one_error_line(err)
    stranger = world.address("stranger")
    assert line.startswith(f"node address {stranger} is not approved on CampaignController")
    assert line.endswith("ask governance to approve it, then publish again")
    assert world.controller.node_entry(stranger) is None


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("ftp://a.example", "'ftp://a.example' is not an API URL: write http(s)://host[:port]"),
        ("a.example:8000", "'a.example:8000' is not an API URL: write http(s)://host[:port]"),
        ("http://" + "a" * 250, "the endpoint is 257 bytes; the controller takes at most 256"),
    ],
)
def test_a_bad_url_is_refused_before_the_chain(
    world: World, cli: Callable[..., tuple[int, str, str]], url: str, error: str
) -> None:
    code, _, err = cli("stranger", "network", "publish", url)
    assert code == 2 and _one_error_line(err) == error


def test_the_node_checks_the_controllers_endpoint_bound(world: World) -> None:
    bound = world.controller.contract.functions.MAX_ENDPOINT_BYTES().call()
    assert bound == MAX_ENDPOINT_BYTES


def test_publishing_without_an_endpoint_or_a_chain_says_what_to_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    init_home(home, env={})
    assert main(["--home", str(home), "network", "publish"]) == 2
    assert "no endpoint to publish" in _one_error_line(capsys.readouterr().err)
    for argv in (["publish", "http://x.example"], ["directory"]):
        assert main(["--home", str(home), "network", *argv]) == 2
        assert _one_error_line(capsys.readouterr().err).startswith("no chain configured: ")


def test_the_endpoint_setting_is_an_api_url() -> None:
    assert NetworkSettings(endpoint="https://node.example:8000/").endpoint == (
        "https://node.example:8000"
    )
    assert NetworkSettings().endpoint == "" and not NetworkSettings().directory
    with pytest.raises(ValidationError, match="is not an API URL"):
        NetworkSettings(endpoint="node.example")


def test_a_directory_that_cannot_be_read_still_syncs_the_configured_peers(
    world: World, cli: Callable[..., tuple[int, str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from governance.errors import ChainUnavailableError

    def down(cls: type[Chain], url: str, /, **kw: object) -> Chain:
        raise ChainUnavailableError(f"no answer from the RPC endpoint {url}")

    monkeypatch.setattr(Chain, "connect", classmethod(down))
    home = world.homes["stranger"]
    _configure(home, network={"peers": [f"http://127.0.0.1:{free_port()}"]})
    code, out, err = cli("stranger", "network", "sync")
    assert code == 1 and "unreachable" in out
    assert err.startswith("asi-node: warning: the node directory could not be read (no answer")
    assert err.rstrip().endswith("syncing [network] peers only")


def test_a_listed_url_serving_another_nodes_log_is_quarantined(
    world: World, cli: Callable[..., tuple[int, str, str]], tmp_path: Path
) -> None:
    """The directory pins each URL to the log its node anchors under: b publishing the
    URL of a log signed by another key gets that URL quarantined at a's sync, with
    nothing imported, where a first-use key would have been taken."""
    with Store.open(f"sqlite:///{tmp_path}/other.db") as store:
        tlog = NodeLog(store, NodeKey.generate())
        tlog.append(EVENT_KIND, event_statement(tlog.node_id, NodeEventKind.NODE_KEY_CREATED))
        tlog.checkpoint()
        with served(store, free_port()) as url:
            assert cli("b", "network", "publish", url)[0] == 0
            _configure(world.homes["a"], network={"peers": []})
            code, out, _ = cli("a", "network", "sync")
    assert code == 1
    [line] = [x for x in out.splitlines() if x.startswith(url)]
    assert line == (
        f"{url}: quarantined: it serves the log {tlog.origin!r}, not the log the "
        f"controller's directory lists for node {world.address('b')}"
    )


def _grow(tlog: NodeLog, n: int) -> SignedCheckpoint:
    for _ in range(n):
        tlog.append(EVENT_KIND, event_statement(tlog.node_id, NodeEventKind.NODE_KEY_CREATED))
    return tlog.checkpoint()


def _line(out: str, url: str) -> str:
    [line] = [x for x in out.splitlines() if x.startswith(url)]
    return line


def test_a_peer_is_read_only_up_to_its_anchored_checkpoint(
    world: World, cli: Callable[..., tuple[int, str, str]], tmp_path: Path
) -> None:
    """Nothing is read of a log no active node anchored; then only up to its newest
    anchored checkpoint, though the peer serves a newer one; the rest once anchored."""
    d = open_node(world.homes["d"])
    _configure(world.homes["a"], network={"peers": []})
    with Store.open(f"sqlite:///{tmp_path}/d-log.db") as store:
        tlog = NodeLog(store, d.node_key())
        first = _grow(tlog, 3)
        with served(store, free_port()) as url:
            assert cli("d", "network", "publish", url)[0] == 0
            _, out, _ = cli("a", "network", "sync")
            wait = _line(out, url)
            assert wait.startswith(f"{url}: nothing of its log is anchored on chain ")
            assert PeerBook(world.homes["a"]).status(url).state is PeerState.NEW
            world.anchor("d", tlog.origin, first.tree_size, first.root_hash)
            second = _grow(tlog, 2)
            _, out, _ = cli("a", "network", "sync")
            assert _line(out, url) == f"{url}: verified 3 new entries (size 3); imported 0"
            _, out, _ = cli("a", "network", "sync")
            assert _line(out, url) == f"{url}: verified 0 new entries (size 3); imported 0"
            world.anchor("d", tlog.origin, second.tree_size, second.root_hash)
            _, out, _ = cli("a", "network", "sync")
            assert _line(out, url) == f"{url}: verified 2 new entries (size 5); imported 0"
            _, out, _ = cli("a", "network", "peers")  # followed through the directory
            row = _line(out, url)
            assert row.split()[1:3] == ["ok", "5"] and "not followed" not in row


def test_a_peer_whose_log_differs_from_its_anchor_is_refused(
    world: World, cli: Callable[..., tuple[int, str, str]], tmp_path: Path
) -> None:
    """A configured peer whose checkpoint's root is not the one anchored for it is
    quarantined, nothing kept of its log; the chain's root is named."""
    home = world.homes["stranger"]
    with Store.open(f"sqlite:///{tmp_path}/other.db") as store:
        tlog = NodeLog(store, NodeKey.generate())
        cp = _grow(tlog, 2)
        forged = bytes(31) + b"\x01"
        world.anchor("a", tlog.origin, cp.tree_size, forged)  # any active node may, by name
        with served(store, free_port()) as url:
            _configure(home, network={"peers": [url]})
            code, out, _ = cli("stranger", "network", "sync")
    assert code == 1
    assert _line(out, url) == (
        f"{url}: quarantined: step 12 (chain anchors) failed: its checkpoint of size 2 has "
        f"root 0x{cp.root_hash.hex()}, the chain anchored 0x{forged.hex()}"
    )
    status = PeerBook(home).status(url)
    assert status.state is PeerState.QUARANTINED and status.size == 0
    assert PeerBook(home).states(url).load(tlog.origin) is None


def test_without_a_configured_chain_anchors_are_not_checked_and_the_sync_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    init_home(home, env={})
    with Store.open(f"sqlite:///{tmp_path}/peer.db") as store:
        tlog = NodeLog(store, NodeKey.generate())
        _grow(tlog, 2)
        with served(store, free_port()) as url:
            _configure(home, network={"peers": [url]})
            assert main(["--home", str(home), "network", "sync"]) == 0
    out, err = capsys.readouterr()
    assert out == f"{url}: verified 2 new entries (size 2); imported 0\n"
    assert err == (
        "asi-node: note: peers' chain anchors are not checked: [chain] rpc_url is empty "
        "(the embedded chain is this home's alone)\n"
    )
