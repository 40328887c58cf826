"""The Motoko anchor canister compiles to wasm and its logic passes moc's interpreter.

Needs Node.js and the `motoko` npm package (`npm ci` in contracts/icp, done by
scripts/install.sh); without them these tests skip and say so. One node process
compiles and then interprets (moc.js takes seconds to load).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
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


@dataclass(frozen=True)
class MocRun:
    returncode: int
    output: str
    wasm: bytes
    did: str


@pytest.fixture(scope="module")
def moc(tmp_path_factory: pytest.TempPathFactory) -> MocRun:
    out = tmp_path_factory.mktemp("moc")
    wasm, did = out / "anchor.wasm", out / "anchor.did"
    argv = ["node", "moc.js", "both", "src/Anchor.mo", str(wasm), str(did)]
    run = subprocess.run(
        [*argv, "test/AnchorState.test.mo"],
        cwd=CANISTER,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return MocRun(
        run.returncode,
        run.stdout + run.stderr,
        wasm.read_bytes() if wasm.exists() else b"",
        did.read_text() if did.exists() else "",
    )


def test_canister_compiles_to_wasm_with_the_committed_interface(moc: MocRun) -> None:
    assert moc.wasm[:4] == b"\0asm", moc.output
    assert moc.did == (CANISTER / "anchor.did").read_text(), "regenerate anchor.did"


@pytest.mark.parametrize(
    "block", ["authorisation", "ordering", "certified data", "directives", "revocation"]
)
def test_interpreter_block_passes(moc: MocRun, block: str) -> None:
    assert f"PASS {block}\n" in moc.output, moc.output
    assert moc.returncode == 0, moc.output


def test_canister_witnesses_verify_with_the_python_hash_tree(moc: MocRun) -> None:
    lines = moc.output.splitlines()
    certified = bytes.fromhex(next(x for x in lines if x.startswith("CERTIFIED "))[10:])
    witnesses = {
        parts[1]: parse_tree(cbor2.loads(bytes.fromhex(parts[2])))
        for parts in (x.split() for x in lines if x.startswith("WITNESS "))
    }
    assert set(witnesses) == {"log-a", "log-b"}
    for witness in witnesses.values():
        assert reconstruct(witness) == certified
    log_a = witnesses["log-a"]
    assert lookup([b"anchors", b"log-a", b"size"], log_a).value == (9).to_bytes(8, "big")
    assert lookup([b"anchors", b"log-a", b"root"], log_a).value == bytes([3]) * 32
    assert lookup([b"anchors", b"log-0", b"root"], log_a).outcome is Outcome.UNKNOWN
    assert lookup([b"anchors", b"log-b", b"root"], witnesses["log-b"]).outcome is Outcome.ABSENT
