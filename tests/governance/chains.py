"""Chains for the governance tests: the embedded EVM (fast) and anvil from npm (integration)."""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from governance.chain import Chain, Deployment, address_of

REPO = Path(__file__).resolve().parents[2]
CONTRACTS = REPO / "contracts"
ANVIL = CONTRACTS / "node_modules" / ".bin" / "anvil"
FORGE = CONTRACTS / "node_modules" / ".bin" / "forge"
NPM_MISSING = (
    "the npm toolchain is not installed: run `npm ci` in contracts/ (scripts/install.sh does)"
)
# anvil's first default account (its well-known test mnemonic): funded on every anvil.
ANVIL_KEY = bytes.fromhex("ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80")
# Its second account: "another sender" in the tests.
ANVIL_KEY_2 = bytes.fromhex("59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d")


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Anvil:
    """An anvil process on a loopback port; `stop` and `start` again keep its state file."""

    def __init__(self, port: int, state: Path, chain_id: int = 31337) -> None:
        self.port = port
        self.state = state
        self.chain_id = chain_id
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [str(ANVIL), "--host", "127.0.0.1", "--port", str(self.port)]
        args += ["--chain-id", str(self.chain_id), "--state", str(self.state), "--silent"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"anvil exited with {self.proc.returncode}") from None
                time.sleep(0.05)
        raise RuntimeError("anvil did not start listening within 20 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: anvil writes its state file on the way out
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
