"""Driving the DAO in the governance tests, as its members would from their own wallets.

Token holders get tokens and delegate; a proposer sends `propose` from a wallet; holders
vote directly with `castVote`; blocks are mined to open and close the vote; the timelock's
delay passes on the chain's clock (`evm_increaseTime` on anvil; the embedded EVM is
deployed with no delay, having no clock to move). Queue and execute go through the node's
`ChainGovernor`, the keeper the API uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from governance.chain import Chain, Deployment, address_of, new_private_key
from governance.directives import campaign_key
from governance.proposals import Prepared
from governance.relay import ChainGovernor
from node.store import CampaignRow


@dataclass
class Dao:
    chain: Chain
    deployment: Deployment
    treasury_key: bytes  # holds the undistributed token supply (the deployer)
    anvil: bool

    def contract(self, name: str) -> Any:
        return self.chain.contract(name, self.deployment.addresses[name], check_code=False)

    def mine(self, blocks: int = 1) -> None:
        if self.anvil:
            self.chain.rpc("anvil_mine", [hex(blocks)])
            return
        for _ in range(blocks):
            self.chain.rpc("evm_mine", [])

    def pass_timelock_delay(self) -> int:
        """Move the chain's clock past the timelock's delay (one block mined); the delay."""
        delay = int(self.contract("DaoTimelock").functions.getMinDelay().call())
        if delay:
            assert self.anvil, "the embedded EVM has no clock to move: deploy with no delay"
            self.chain.rpc("evm_increaseTime", [delay + 1])
        self.mine()
        return delay

    def holder(self, tokens: int, *, delegate_to_self: bool = True) -> bytes:
        """A new holder with `tokens` (and ether for gas), self-delegated unless told not."""
        key = new_private_key()
        address = address_of(key)
        self.chain.transfer(self.treasury_key, address, 10**18)
        token = self.contract("GovToken").functions
        self.chain.send(self.treasury_key, token.transfer(address, tokens))
        if delegate_to_self:
            self.chain.send(key, token.delegate(address))
        return key

    def funded(self) -> bytes:
        """A new account with ether and no tokens (a relayer)."""
        key = new_private_key()
        self.chain.transfer(self.treasury_key, address_of(key), 10**18)
        return key

    def propose(self, prepared: Prepared, proposer_key: bytes) -> int:
        """Send the prepared proposal from a wallet and mine until voting is open."""
        gov = self.contract("DaoGovernor").functions
        call = gov.propose(
            list(prepared.targets),
            list(prepared.values),
            list(prepared.calldatas),
            prepared.description,
        )
        self.chain.send(proposer_key, call)
        self.mine(int(gov.votingDelay().call()) + 1)
        return prepared.proposal_id

    def vote(self, voter_key: bytes, proposal_id: int, support: int = 1) -> None:
        self.chain.send(
            voter_key, self.contract("DaoGovernor").functions.castVote(proposal_id, support)
        )

    def close_vote(self, proposal_id: int) -> None:
        deadline = int(self.contract("DaoGovernor").functions.proposalDeadline(proposal_id).call())
        self.mine(max(1, deadline - self.chain.head() + 1))

    def register(
        self, campaigns: list[CampaignRow], voter_key: bytes, keeper: ChainGovernor
    ) -> int:
        """Register campaigns, each with its config hash, through a whole DAO round:
        propose, vote, queue, execute."""
        ctl = self.contract("CampaignController")
        calldatas = tuple(
            bytes.fromhex(
                ctl.encode_abi(
                    "registerCampaign",
                    args=[campaign_key(c.id), bytes.fromhex(c.config_hash[7:]), ""],
                )[2:]
            )
            for c in campaigns
        )
        n = len(campaigns)
        names = ", ".join(c.id for c in campaigns)
        prepared = Prepared((ctl.address,) * n, (0,) * n, calldatas, f"register {names}")
        pid = self.propose(prepared, voter_key)
        self.vote(voter_key, pid)
        self.close_vote(pid)
        keeper.queue(pid)
        self.pass_timelock_delay()
        keeper.execute(pid)
        return pid
