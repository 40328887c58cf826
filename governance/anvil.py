"""A local anvil (Foundry's dev chain, from `contracts/node_modules`) for tests and benches.

`Anvil(port).start()` runs it on a loopback port and returns once it listens; `stop`
ends it. With a `state` file, `stop` first saves the chain there (`anvil_dumpState`) and
`start` again resumes it. The keys are anvil's well-known default accounts, funded on
every anvil.
"""

from __future__ import annotations

import gzip
import json
import socket
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

ANVIL_BIN = Path(__file__).resolve().parents[1] / "contracts" / "node_modules" / ".bin" / "anvil"
# anvil's first default account (its well-known test mnemonic), and its second.
ANVIL_KEY = bytes.fromhex("ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80")
ANVIL_KEY_2 = bytes.fromhex("59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d")
MISSING = "anvil is not installed: run `npm ci` in contracts/ (scripts/install.sh does)"


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Anvil:
    """An anvil process on a loopback port; `extra` are more anvil flags."""

    def __init__(
        self,
        port: int | None = None,
        state: Path | None = None,
        chain_id: int = 31337,
        extra: Sequence[str] = (),
    ) -> None:
        self.port = port or free_port()
        self.state = state
        self.chain_id = chain_id
        self.extra = list(extra)
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 20.0) -> None:
        if not ANVIL_BIN.exists():
            raise RuntimeError(MISSING)
        args = [str(ANVIL_BIN), "--host", "127.0.0.1", "--port", str(self.port), "--silent"]
        # The `finalized` tag then trails the head by two blocks (32-slot epochs would hold
        # it 64 blocks back, and a governed node waits for it before a resume applies).
        args += ["--chain-id", str(self.chain_id), "--slots-in-an-epoch", "1", *self.extra]
        if self.state is not None and self.state.exists():
            args += ["--load-state", str(self.state)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"anvil exited with {self.proc.returncode}") from None
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"anvil did not start listening within {timeout_s:g} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            if self.state is not None:
                self._save_state()
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def _save_state(self) -> None:
        """The chain, blocks and receipts included, as `anvil_dumpState` gives it, written
        where `start` loads it. Asked for while anvil serves, the dump is whole; the one
        `--dump-state` writes on the way out after a signal can miss the latest blocks
        (a restarted chain then lacked an anchor mined just before the stop)."""
        assert self.state is not None
        body = {"jsonrpc": "2.0", "id": 1, "method": "anvil_dumpState", "params": []}
        request = urllib.request.Request(
            self.url, json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as answer:
            dump = bytes.fromhex(json.load(answer)["result"].removeprefix("0x"))
        if dump[:2] == b"\x1f\x8b":  # gzip, as anvil compresses it
            dump = gzip.decompress(dump)
        partial = self.state.with_name(self.state.name + ".tmp")
        partial.write_bytes(dump)
        partial.replace(self.state)
