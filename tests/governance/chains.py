"""Chains for the governance tests: the embedded EVM (fast) and anvil from npm (integration)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from governance.anvil import ANVIL_BIN as ANVIL
from governance.anvil import ANVIL_KEY, ANVIL_KEY_2, Anvil, free_port
from governance.chain import Chain, Deployment, address_of

# Re-exported for the tests: anvil itself lives in governance.anvil (benches use it too).
__all__ = ["ANVIL", "ANVIL_KEY", "ANVIL_KEY_2", "CONTRACTS", "FORGE", "NPM_MISSING", "Anvil"]
__all__ += ["Deployed", "free_port"]

REPO = Path(__file__).resolve().parents[2]
CONTRACTS = REPO / "contracts"
FORGE = CONTRACTS / "node_modules" / ".bin" / "forge"
NPM_MISSING = (
    "the npm toolchain is not installed: run `npm ci` in contracts/ (scripts/install.sh does)"
)


@dataclass
class Deployed:
    chain: Chain
    deployment: Deployment
    node_key: bytes

    @property
    def controller_address(self) -> str:
        return self.deployment.addresses["CampaignController"]

    @property
    def node(self) -> str:
        return address_of(self.node_key)
