"""Real test data: transparency-dev Merkle probes, signed notes, DSSE, a Sigstore bundle."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

from attestation.dsse import Envelope, pae, parse_statement
from attestation.errors import VerificationError
from attestation.keys import NodeKey, PublicKey
from attestation.merkle import (
    leaf_hash,
    verify_consistency,
    verify_inclusion,
    verify_subtree_consistency,
    verify_subtree_inclusion,
)
from attestation.note import (
    Checkpoint,
    EcdsaNoteVerifier,
    Ed25519NoteVerifier,
    open_checkpoint,
    open_note,
    sign_note,
    split_note,
)

VECTORS = Path(__file__).parent / "vectors"
MERKLE = VECTORS / "tlog" / "transparency-dev-merkle" / "testdata"


def _b(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def _cases(kind: str) -> list[Path]:
    return sorted((MERKLE / kind).rglob("*.json"))


def _id(path: Path) -> str:
    return str(path.relative_to(MERKLE))


def test_the_vector_folders_hold_every_probe() -> None:
    assert len(sorted(MERKLE.rglob("*.json"))) == 518  # as vectors/README.md lists
    assert (VECTORS / "tlog" / "LICENSE.transparency-dev-merkle.txt").exists()


@pytest.mark.parametrize("path", _cases("inclusion"), ids=_id)
def test_inclusion_probe_is_accepted_or_rejected_as_the_file_says(path: Path) -> None:
    v = json.loads(path.read_text())
    proof = [_b(p) for p in v["proof"] or []]

    def check() -> None:
        verify_inclusion(v["leafIdx"], v["treeSize"], _b(v["leafHash"]), proof, _b(v["root"]))

    if v["wantErr"]:
        with pytest.raises(VerificationError):
            check()
    else:
        check()


@pytest.mark.parametrize("path", _cases("consistency"), ids=_id)
def test_consistency_probe_is_accepted_or_rejected_as_the_file_says(path: Path) -> None:
    v = json.loads(path.read_text())
    proof = [_b(p) for p in v["proof"] or []]

    def check() -> None:
        verify_consistency(v["size1"], v["size2"], _b(v["root1"]), _b(v["root2"]), proof)

    if v["wantErr"]:
        with pytest.raises(VerificationError):
            check()
    else:
        check()


@pytest.mark.parametrize("path", _cases("subtreeinclusion"), ids=_id)
def test_subtree_inclusion_probe_is_accepted_or_rejected_as_the_file_says(path: Path) -> None:
    v = json.loads(path.read_text())
    proof = [_b(p) for p in v["proof"] or []]

    def check() -> None:
        verify_subtree_inclusion(
            v["leafIdx"], v["start"], v["end"], _b(v["leafHash"]), proof, _b(v["root"])
        )

    if v["wantErr"]:
        with pytest.raises(VerificationError):
            check()
    else:
        check()


@pytest.mark.parametrize("path", _cases("subtreeconsistency"), ids=_id)
def test_subtree_consistency_probe_is_accepted_or_rejected_as_the_file_says(path: Path) -> None:
    v = json.loads(path.read_text())
    proof = [_b(p) for p in v["proof"] or []]

    def check() -> None:
        verify_subtree_consistency(
            v["start"], v["end"], v["size"], proof, _b(v["root1"]), _b(v["root2"])
        )

    if v["wantErr"]:
        with pytest.raises(VerificationError):
            check()
    else:
        check()


def _note_vectors() -> list[dict[str, Any]]:
    data = json.loads((VECTORS / "tlog" / "signed-note" / "signed_note_vectors.json").read_text())
    return [v for v in data["vectors"] if "vkey" in v]


@pytest.mark.parametrize("vector", _note_vectors(), ids=lambda v: v["name"][:40])
def test_signed_note_vector_opens_or_fails_as_expected(vector: dict[str, Any]) -> None:
    verifier = Ed25519NoteVerifier.from_vkey(vector["vkey"])
    if vector["expect"] == "valid":
        text = open_note(vector["note"], [verifier])
        assert vector["note"].startswith(text)
    else:
        with pytest.raises(VerificationError, match="does not verify"):
            open_note(vector["note"], [verifier])


def test_signing_with_the_vector_private_key_reproduces_the_golden_note() -> None:
    vector = next(v for v in _note_vectors() if "skey" in v)
    _, _, name, _, blob = vector["skey"].split("+", 4)
    key = NodeKey.from_seed(base64.b64decode(blob)[1:])
    assert key.public.vkey(name) == vector["vkey"]
    text, _ = split_note(vector["note"])
    assert sign_note(text, name, key) == vector["note"]


def test_tree_note_root_line_is_the_leaf_hash_of_the_record() -> None:
    data = json.loads((VECTORS / "tlog" / "signed-note" / "signed_note_vectors.json").read_text())
    golden = next(v for v in data["vectors"] if "text" in v)
    cp = Checkpoint.parse(golden["text"])
    assert cp.size == golden["tree_size"]
    assert cp.root_hash == leaf_hash(golden["record"].encode())
    assert cp.text() == golden["text"]


def test_a_note_signed_by_an_unknown_key_only_is_refused() -> None:
    vectors = _note_vectors()
    other = Ed25519NoteVerifier.from_vkey(vectors[1]["vkey"])
    with pytest.raises(VerificationError, match="no signature by a trusted key"):
        open_note(vectors[0]["note"], [other])


def _dsse() -> dict[str, Any]:
    return json.loads((VECTORS / "dsse" / "dsse_protocol_test_vector.json").read_text())


def test_dsse_pae_matches_the_spec_vector() -> None:
    v = _dsse()
    assert pae(v["payloadType"], v["payload_utf8"].encode()) == v["pae"].encode()


def test_dsse_vector_signature_verifies_over_pae_and_fails_when_flipped() -> None:
    v = _dsse()
    env = Envelope.from_json(v["envelope"])
    assert env.payload == v["payload_utf8"].encode()
    numbers = ec.EllipticCurvePublicNumbers(int(v["key"]["x"]), int(v["key"]["y"]), ec.SECP256R1())
    key = numbers.public_key()
    raw = env.signatures[0].sig
    der = utils.encode_dss_signature(int.from_bytes(raw[:32]), int.from_bytes(raw[32:]))
    key.verify(der, pae(env.payload_type, env.payload), ec.ECDSA(hashes.SHA256()))
    bad = pae(env.payload_type, env.payload + b"!")
    with pytest.raises(InvalidSignature):
        key.verify(der, bad, ec.ECDSA(hashes.SHA256()))


SIGSTORE = VECTORS / "tlog" / "sigstore-go"


def _sigstore() -> tuple[dict[str, Any], dict[str, Any]]:
    bundle = json.loads((SIGSTORE / "sigstore.js@2.0.0-provenance.sigstore.json").read_text())
    root = json.loads((SIGSTORE / "trusted-root-public-good.json").read_text())
    return bundle, root


def _rekor_verifier(root: dict[str, Any], origin: str) -> EcdsaNoteVerifier:
    tlog = root["tlogs"][0]
    der = base64.b64decode(tlog["publicKey"]["rawBytes"])
    assert serialization.load_der_public_key(der)  # a real key
    return EcdsaNoteVerifier(origin.split(" - ")[0], der)


def test_sigstore_checkpoint_signature_and_inclusion_proof_verify() -> None:
    bundle, root = _sigstore()
    entry = bundle["verificationMaterial"]["tlogEntries"][0]
    proof = entry["inclusionProof"]
    note = proof["checkpoint"]["envelope"]
    origin = note.split("\n", 1)[0]
    cp = open_checkpoint(note, [_rekor_verifier(root, origin)], origin)
    assert cp.size == int(proof["treeSize"])
    assert cp.root_hash == base64.b64decode(proof["rootHash"])
    assert cp.extensions and cp.extensions[0].startswith("Timestamp: ")
    leaf = leaf_hash(base64.b64decode(entry["canonicalizedBody"]))
    verify_inclusion(
        int(proof["logIndex"]),
        cp.size,
        leaf,
        [base64.b64decode(h) for h in proof["hashes"]],
        cp.root_hash,
    )


def test_sigstore_proof_with_a_flipped_hash_or_body_is_rejected() -> None:
    bundle, _ = _sigstore()
    entry = bundle["verificationMaterial"]["tlogEntries"][0]
    proof = entry["inclusionProof"]
    hashes_ = [base64.b64decode(h) for h in proof["hashes"]]
    root = base64.b64decode(proof["rootHash"])
    body = base64.b64decode(entry["canonicalizedBody"])
    flipped = [bytes([hashes_[3][0] ^ 1]) + hashes_[3][1:]]
    with pytest.raises(VerificationError):
        verify_inclusion(
            int(proof["logIndex"]),
            int(proof["treeSize"]),
            leaf_hash(body),
            hashes_[:3] + flipped + hashes_[4:],
            root,
        )
    with pytest.raises(VerificationError):
        verify_inclusion(
            int(proof["logIndex"]), int(proof["treeSize"]), leaf_hash(body + b" "), hashes_, root
        )


def test_sigstore_checkpoint_with_a_changed_root_fails_its_signature() -> None:
    bundle, root = _sigstore()
    note = bundle["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]["checkpoint"][
        "envelope"
    ]
    origin = note.split("\n", 1)[0]
    lines = note.split("\n")
    lines[2] = base64.b64encode(bytes(32)).decode()
    with pytest.raises(VerificationError, match="does not verify"):
        open_checkpoint("\n".join(lines), [_rekor_verifier(root, origin)], origin)


def test_sigstore_dsse_envelope_carries_an_in_toto_statement_v1() -> None:
    bundle, _ = _sigstore()
    env = Envelope.from_json(bundle["dsseEnvelope"])
    stmt = parse_statement(env.payload)
    assert stmt["predicateType"].startswith("https://slsa.dev/provenance/")
    assert stmt["subject"][0]["digest"]["sha512"]
    assert isinstance(PublicKey, type)
