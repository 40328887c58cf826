"""`asi-node gov --rpc URL --governor ADDR ...` run as a voter runs it: a subprocess with
only a key file and an RPC URL, HOME and ASI_NODE_HOME pointing at an empty folder that
must stay empty, against the contracts deployed on anvil."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from chains import ANVIL_KEY, ANVIL_KEY_2, Anvil, free_port
from eth_account import Account
from eth_account.messages import encode_typed_data

from governance.ballots import sign_ballot
from governance.chain import Chain, Deployment, address_of, deploy, new_private_key
from governance.relay import GovernorReader
from node.cli.main import main

pytestmark = pytest.mark.integration

TOKENS = 10**24  # of the deployer's 10**26 (DEV_SUPPLY): far above the 4% quorum


class Voter:
    """The CLI as a voter with no node runs it; `home` is HOME and ASI_NODE_HOME's parent."""

    def __init__(self, tmp_path: Path, anvil: Anvil, deployment: Deployment) -> None:
        self.home = tmp_path / "empty"
        self.home.mkdir()
        self.cwd = tmp_path / "cwd"
        self.cwd.mkdir()
        self.url = anvil.url
        self.governor = deployment.addresses["DaoGovernor"]
        self.controller = deployment.addresses["CampaignController"]

    def run(self, *args: str, rpc: str | None = None, governor: str | None = None) -> Any:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ASI_NODE_")}
        env |= {"HOME": str(self.home), "ASI_NODE_HOME": str(self.home / ".asi-node")}
        command = [sys.executable, "-m", "node.cli.main", "gov"]
        command += ["--rpc", rpc or self.url, "--governor", governor or self.governor, *args]
        return subprocess.run(
            command, cwd=self.cwd, env=env, capture_output=True, text=True, timeout=120
        )

    def ok(self, *args: str) -> str:
        done = self.run(*args)
        assert done.returncode == 0, done.stderr
        return str(done.stdout)

    def fails(self, *args: str, **where: str) -> str:
        """The one error line of a refused command (exit 2, no traceback)."""
        done = self.run(*args, **where)
        assert done.returncode == 2, (done.stdout, done.stderr)
        assert "Traceback" not in done.stderr
        (line,) = done.stderr.strip().splitlines()
        assert line.startswith("asi-node: error: ")
        return str(line)


def key_file(folder: Path, name: str, key: bytes) -> Path:
    path = folder / name
    path.write_text("0x" + key.hex() + "\n")
    return path


@pytest.fixture
def dao(anvil: Anvil) -> tuple[Chain, Deployment]:
    chain = Chain.connect(anvil.url)
    return chain, deploy(chain, ANVIL_KEY)


def holder(chain: Chain, deployment: Deployment) -> bytes:
    """A new account with ether for gas and tokens, not yet delegated (no votes)."""
    key = new_private_key()
    chain.transfer(ANVIL_KEY, address_of(key), 10**18)
    token = chain.contract("GovToken", deployment.addresses["GovToken"]).functions
    chain.send(ANVIL_KEY, token.transfer(address_of(key), TOKENS))
    return key


def test_a_voter_with_a_key_file_and_an_rpc_url_delegates_proposes_and_votes(
    anvil: Anvil, dao: tuple[Chain, Deployment], tmp_path: Path
) -> None:
    chain, deployment = dao
    voter = Voter(tmp_path, anvil, deployment)
    key = holder(chain, deployment)
    me = address_of(key)
    keys = tmp_path / "keys"
    keys.mkdir()
    mine = str(key_file(keys, "voter.key", key))
    reader = GovernorReader(chain, deployment.addresses["DaoGovernor"])

    out = voter.ok("delegate", "--key-file", mine)
    assert f"{me} delegated its votes to {me}" in out
    assert f"voting power of {me} now {TOKENS}" in out
    chain.rpc("anvil_mine", ["0x1"])

    # Without a key, propose prints what to send; with one, it sends it.
    out = voter.ok("--controller", voter.controller, "propose", "pause-all", "--description", "p")
    assert "(prepared; nothing was sent)" in out and "pauseAll()" in out
    assert f"gov --rpc {voter.url} --governor {voter.governor} vote" in out
    assert reader.proposals() == []
    out = voter.ok(
        "--controller", voter.controller, "propose", "pause-all", "--description", "halt all",
        "--key-file", mine,
    )  # fmt: skip
    (proposal,) = reader.proposals()
    pid = proposal.proposal_id
    assert f"proposal {pid} proposed by {me}" in out

    # Listing finds the controller through the proposal's target and decodes its call.
    listed = voter.ok("proposals", "--voter", me)
    assert f"{pid}  pending" in listed and "pauseAll()" in listed and "not voted yet" in listed
    assert "halt all" in voter.ok("show", str(pid))

    chain.rpc("anvil_mine", [hex(2)])  # past the voting delay: the vote is open
    out = voter.ok("vote", str(pid), "for", "--key-file", mine)
    assert f"vote for on {pid} by {me}" in out and f"for {TOKENS} against 0" in out
    against, votes_for, abstain = reader.contract.functions.proposalVotes(pid).call()
    assert (votes_for, against, abstain) == (TOKENS, 0, 0)
    assert reader.has_voted(pid, me)
    assert "voted" in voter.ok("show", str(pid), "--voter", me)
    assert "already voted" in voter.fails("vote", str(pid), "against", "--key-file", mine)

    # No node home anywhere: not under HOME, not at ASI_NODE_HOME, not in the cwd.
    assert list(voter.home.iterdir()) == []
    assert list(voter.cwd.iterdir()) == []


def test_typed_data_is_the_ballot_the_relay_verifies_and_its_signature_is_counted(
    anvil: Anvil, dao: tuple[Chain, Deployment], tmp_path: Path
) -> None:
    chain, deployment = dao
    voter = Voter(tmp_path, anvil, deployment)
    wallet_key = holder(chain, deployment)  # the browser wallet's key: never given to the CLI
    wallet = address_of(wallet_key)
    keys = tmp_path / "keys"
    keys.mkdir()
    voter.ok("delegate", "--key-file", str(key_file(keys, "wallet.key", wallet_key)))
    voter.ok(
        "--controller", voter.controller, "propose", "pause-all", "--description", "typed",
        "--key-file", str(key_file(keys, "proposer.key", wallet_key)),
    )  # fmt: skip
    reader = GovernorReader(chain, deployment.addresses["DaoGovernor"])
    (proposal,) = reader.proposals()
    pid = proposal.proposal_id
    chain.rpc("anvil_mine", [hex(2)])

    typed = json.loads(voter.ok("vote", str(pid), "against", "--typed-data", "--voter", wallet))
    assert typed["message"]["proposalId"] == str(pid)  # exact in a browser's JSON.parse
    signed = Account.sign_message(encode_typed_data(full_message=typed), wallet_key)
    nonce = reader.nonce(wallet)
    expected = sign_ballot(wallet_key, reader.domain(), pid, 0, nonce)
    assert bytes(signed.signature) == expected.signature  # what the relay verifies

    # A wrong signature is refused before anything is sent; the right one is counted,
    # sent by another account that pays the gas.
    payer = str(key_file(keys, "payer.key", ANVIL_KEY_2))
    other = sign_ballot(wallet_key, reader.domain(), pid, 1, nonce).signature
    refused = voter.fails(
        "vote", str(pid), "against", "--signature", "0x" + other.hex(), "--voter", wallet,
        "--key-file", payer,
    )  # fmt: skip
    assert "recovers to" in refused
    out = voter.ok(
        "vote", str(pid), "against", "--signature", "0x" + bytes(signed.signature).hex(),
        "--voter", wallet, "--key-file", payer,
    )  # fmt: skip
    assert f"sent by {address_of(ANVIL_KEY_2)}" in out
    against, votes_for, abstain = reader.contract.functions.proposalVotes(pid).call()
    assert (against, votes_for, abstain) == (TOKENS, 0, 0)
    assert list(voter.home.iterdir()) == []


def test_a_voters_mistakes_are_one_line_errors(
    anvil: Anvil,
    dao: tuple[Chain, Deployment],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, deployment = dao
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("HOME", str(empty))
    monkeypatch.setenv("ASI_NODE_HOME", str(empty / ".asi-node"))
    keys = tmp_path / "keys"
    keys.mkdir()
    bad = keys / "bad.key"
    bad.write_text("not a key\n")
    good = str(key_file(keys, "good.key", new_private_key()))

    def fails(*args: str, rpc: str = anvil.url, governor: str | None = None) -> str:
        """The one error line of a refused command (in process: exit 2, no traceback)."""
        where = ["--rpc", rpc, "--governor", governor or deployment.addresses["DaoGovernor"]]
        assert main(["gov", *where, *args]) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line.startswith("asi-node: error: ")
        return line

    assert "cannot read a hex private key" in fails("delegate", "--key-file", str(bad))
    assert "cannot read a hex private key" in fails("delegate", "--key-file", str(keys / "no"))
    closed = f"http://127.0.0.1:{free_port()}"
    assert "no answer from the RPC endpoint" in fails("proposals", rpc=closed)
    token = deployment.addresses["GovToken"]
    assert "not asi-node's DaoGovernor" in fails("proposals", governor=token)
    assert "holds no contract" in fails("proposals", governor=address_of(ANVIL_KEY))
    assert "is not an EVM address" in fails("proposals", governor="0x1234")
    assert "no proposal 12345" in fails("show", "12345")
    assert "no proposal id" in fails("show", "twelve")
    assert "no proposal 7" in fails("vote", "7", "for", "--key-file", good)
    assert "--controller" in fails("propose", "pause-all", "--description", "d")
    assert "needs --voter" in fails("vote", "7", "for", "--typed-data")
    assert "needs --key-file" in fails("vote", "7", "for")
    # An account with no ether cannot pay for its delegation, and is told so.
    assert "fund it" in fails("delegate", "--key-file", good)
    assert list(empty.iterdir()) == []
