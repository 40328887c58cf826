"""Ballots and proposal ids against the real OpenZeppelin 5 Governor on py-evm.

Deploys the compiled artifacts (governance/artifacts/*.json) on eth-tester directly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from governance.ballots import GovernorDomain, recover_voter, sign_ballot
from governance.directives import DirectiveKind, campaign_key
from governance.proposals import DirectiveCall, decode_calls, prepare

ARTIFACTS = Path(__file__).resolve().parents[2] / "governance" / "artifacts"
VOTER_KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")


def test_a_signed_ballot_is_counted_by_the_real_governor_and_its_replay_reverts() -> None:
    from eth_account import Account
    from eth_tester.exceptions import TransactionFailed
    from web3 import EthereumTesterProvider, Web3

    w3 = Web3(EthereumTesterProvider())
    deployer, relayer = w3.eth.accounts[0], w3.eth.accounts[1]
    voter = Account.from_key(VOTER_KEY).address

    def deploy(name: str, *args: Any) -> Any:
        art = json.loads((ARTIFACTS / f"{name}.json").read_text())
        factory = w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
        tx = factory.constructor(*args).transact({"from": deployer, "gas": 12_000_000})
        address = w3.eth.get_transaction_receipt(tx)["contractAddress"]
        return w3.eth.contract(address=address, abi=art["abi"])

    token = deploy("GovToken", "g", "G", [deployer], [10**24], False)
    timelock = deploy("DaoTimelock", 1, [], ["0x" + "00" * 20], deployer)
    gov = deploy("DaoGovernor", token.address, timelock.address, 1, 20, 0, 4, 0, deployer)
    ctl = deploy("CampaignController", deployer, deployer)
    token.functions.delegate(voter).transact({"from": deployer})  # the voter holds the votes
    ctl.functions.registerCampaign(campaign_key("c-00000001"), b"\x00" * 32, "").transact(
        {"from": deployer}
    )
    prep = prepare(ctl.address, [DirectiveCall(DirectiveKind.PAUSE, "c-00000001")], "pause")
    args = (list(prep.targets), list(prep.values), list(prep.calldatas))
    gov.functions.propose(*args, prep.description).transact({"from": deployer})
    pid = gov.functions.hashProposal(*args, prep.description_hash).call()
    assert pid == prep.proposal_id
    assert decode_calls(ctl.address, *args)[0].campaign == "c-00000001"
    w3.provider.ethereum_tester.mine_blocks(3)  # type: ignore[attr-defined]
    assert gov.functions.state(pid).call() == 1  # Active

    domain = GovernorDomain(
        gov.functions.name().call(), w3.eth.chain_id, gov.address, gov.functions.version().call()
    )
    ballot = sign_ballot(VOTER_KEY, domain, pid, 1, gov.functions.nonces(voter).call())
    assert recover_voter(ballot, domain) == voter
    gov.functions.castVoteBySig(pid, 1, voter, ballot.signature).transact({"from": relayer})
    assert gov.functions.proposalVotes(pid).call()[1] == 10**24
    assert gov.functions.nonces(voter).call() == ballot.nonce + 1
    with pytest.raises(TransactionFailed):
        gov.functions.castVoteBySig(pid, 1, voter, ballot.signature).transact({"from": relayer})
    wrong = GovernorDomain(domain.name, domain.chain_id + 1, gov.address)
    forged = sign_ballot(VOTER_KEY, wrong, pid, 0, gov.functions.nonces(voter).call())
    with pytest.raises(TransactionFailed):
        gov.functions.castVoteBySig(pid, 0, voter, forged.signature).transact({"from": relayer})
