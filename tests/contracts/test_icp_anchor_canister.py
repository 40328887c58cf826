"""The Motoko anchor canister compiles to wasm and its logic passes moc's interpreter.

Needs Node.js and the `motoko` npm package (`npm ci` in contracts/icp, done by
scripts/install.sh); without them these tests skip and say so.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import cbor2
import pytest

from attestation.icp.hashtree import Outcome, lookup, parse_tree, reconstruct

CANISTER = Path(__file__).resolve().parents[2] / "contracts" / "icp"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("node") is None or not (CANISTER / "node_modules" / "motoko").is_dir(),
        reason="Node.js or contracts/icp/node_modules/motoko missing: run scripts/install.sh",
    ),
]


def _moc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["node", str(CANISTER / "moc.js"), *args],
        cwd=CANISTER,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_canister_compiles_to_wasm_with_the_committed_interface(tmp_path: Path) -> None:
    wasm, did = tmp_path / "anchor.wasm", tmp_path / "anchor.did"
    run = _moc("wasm", "src/Anchor.mo", str(wasm), str(did))
    assert run.returncode == 0, run.stderr
    assert wasm.read_bytes()[:4] == b"\0asm"
    assert did.read_text() == (CANISTER / "anchor.did").read_text(), "regenerate anchor.did"


@pytest.fixture(scope="module")
def interpreter_output() -> str:
    run = _moc("run", "test/AnchorState.test.mo")
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


@pytest.mark.parametrize(
    "block", ["authorisation", "ordering", "certified data", "directives", "revocation"]
)
def test_interpreter_block_passes(interpreter_output: str, block: str) -> None:
    assert f"PASS {block}\n" in interpreter_output


def test_canister_witnesses_verify_with_the_python_hash_tree(interpreter_output: str) -> None:
    lines = interpreter_output.splitlines()
    certified = bytes.fromhex(next(x for x in lines if x.startswith("CERTIFIED "))[10:])
    witnesses = {
        parts[1]: parse_tree(cbor2.loads(bytes.fromhex(parts[2])))
        for parts in (x.split() for x in lines if x.startswith("WITNESS "))
    }
    assert set(witnesses) == {"log-0", "log-a", "log-z", "log-b"}
    for witness in witnesses.values():
        assert reconstruct(witness) == certified
    log_a = witnesses["log-a"]
    assert lookup([b"anchors", b"log-a", b"size"], log_a).value == (9).to_bytes(8, "big")
    assert lookup([b"anchors", b"log-a", b"root"], log_a).value == bytes([3]) * 32
    assert lookup([b"anchors", b"log-0", b"root"], log_a).outcome is Outcome.UNKNOWN
    assert lookup([b"anchors", b"log-b", b"root"], witnesses["log-b"]).outcome is Outcome.ABSENT
