"""`ControllerFake`: the in-memory Governor of gov_fakes, with what the /gov routes ask
of a Governor besides: a CampaignController's state to run prepared calls on as the
timelock would (the same reverts, by name), and smart-contract voters whose ERC-1271
check accepts their owner's signature of the ballot's digest."""

from __future__ import annotations

from eth_account import Account
from gov_fakes import FakeGovernor

from governance.directives import campaign_key
from governance.errors import TransactionRevertedError
from governance.proposals import decode_controller_calls


class ControllerFake(FakeGovernor):
    """Campaign statuses ("active", "paused", "stopped") by id, the global pause,
    approved nodes, and contract voters (address -> owner)."""

    def __init__(self, chain_id: int = 31337) -> None:
        super().__init__(chain_id)
        self.campaigns: dict[str, str] = {}
        self.global_paused = False
        self.nodes: set[str] = set()
        self.wallets: dict[str, str] = {}
        self.simulated: list[str] = []  # the functions run, in order

    def is_contract(self, address: str) -> bool:
        return address.lower() in self.wallets

    def erc1271_valid(self, account: str, digest: bytes, signature: bytes) -> bool:
        owner = self.wallets.get(account.lower())
        if owner is None or len(signature) != 65:
            return False
        try:
            signer = Account._recover_hash(digest, signature=signature)
        except Exception:
            return False
        return bool(signer.lower() == owner.lower())

    def simulate(self, target: str, data: bytes) -> None:
        (call,) = decode_controller_calls(self.controller_address, [target], [0], [data])
        self.simulated.append(call.function)
        name, args = call.function, call.args

        def revert(reason: str) -> TransactionRevertedError:
            return TransactionRevertedError(f"the contract reverted with {reason}", reason)

        def status(campaign: str) -> str:
            if campaign not in self.campaigns:
                raise revert(f"UnknownCampaign(0x{campaign_key(campaign).hex()})")
            return self.campaigns[campaign]

        want = {"pauseCampaign": "active", "resumeCampaign": "paused"}
        if name == "registerCampaign" and args[0] in self.campaigns:
            raise revert(f"CampaignExists(0x{campaign_key(args[0]).hex()})")
        if name in want and status(args[0]) != want[name]:
            raise revert(f"InvalidTransition(0x{campaign_key(args[0]).hex()}, ...)")
        if name == "stopCampaign" and status(args[0]) == "stopped":
            raise revert(f"InvalidTransition(0x{campaign_key(args[0]).hex()}, 3, 3)")
        if name == "forkCampaign":
            if status(args[0]) == "stopped":
                raise revert(f"InvalidTransition(0x{campaign_key(args[0]).hex()}, 3, 4)")
            if args[1] in self.campaigns:
                raise revert(f"CampaignExists(0x{campaign_key(args[1]).hex()})")
        if name == "pauseAll" and self.global_paused:
            raise revert("InvalidArgument(already paused globally)")
        if name == "unpauseAll" and not self.global_paused:
            raise revert("InvalidArgument(not paused globally)")
        if name == "setMeasurement" and args[0] == bytes(32):
            raise revert("InvalidArgument(measurement is zero)")
        if name == "revokeNode" and str(args[0]).lower() not in self.nodes:
            raise revert(f"NodeNotApproved({args[0]})")
