"""Fixtures: the embedded EVM with the contract set deployed, and anvil on a free port."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from chains import ANVIL, NPM_MISSING, Anvil, Deployed, free_port

from governance.chain import Chain, new_private_key
from node.anchoring.chain_home import deploy_for_node


@pytest.fixture(scope="module")
def embedded() -> Deployed:
    """One embedded EVM per test module, the set deployed, one funded approved node."""
    chain = Chain.embedded()
    assert chain.faucet_key is not None
    node_key = new_private_key()
    deployment = deploy_for_node(chain, chain.faucet_key, node_key, fund_node_wei=10**19)
    return Deployed(chain, deployment, node_key)


@pytest.fixture
def anvil(tmp_path: Path) -> Iterator[Anvil]:
    if not ANVIL.exists() or shutil.which("node") is None:
        pytest.skip(NPM_MISSING)
    node = Anvil(free_port(), tmp_path / "anvil-state.json")
    node.start()
    try:
        yield node
    finally:
        node.stop()
