"""kill -9 while a process appends: after a restart the log is whole and provably consistent."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from attestation.audit import verify_bundle
from attestation.dsse import Envelope, verify_envelope
from attestation.keys import NodeKey
from attestation.merkle import leaf_hash, verify_consistency
from attestation.schema import NodeEventKind
from node.store import Store
from node.tlog.log import NodeLog
from node.tlog.records import EVENT_KIND, event_statement

ROOT = Path(__file__).resolve().parents[2]

APPENDER = """
import sys
from pathlib import Path
from attestation.dsse import statement
from attestation.keys import NodeKey
from attestation.schema import EVENT_PREDICATE
from node.store import Store
from node.tlog.log import NodeLog

# node.tlog.records would import torch (via the campaign config): build the events here.
def event(node_id, **fields):
    subject = node_id.removeprefix("sha256:")
    predicate = {"node_id": node_id, "at": "2026-12-06T10:00:00+00:00", **fields}
    return statement("node/" + node_id, subject, EVENT_PREDICATE, predicate)

url, key_path = sys.argv[1], Path(sys.argv[2])
store = Store.open(url)
tlog = NodeLog(store, NodeKey.load(key_path), checkpoint_every=7)
tlog.append("event", event(tlog.node_id, event="campaign_start",
            campaign_id="c-00000001", config_hash="sha256:" + "0" * 64))
while True:
    i = tlog.append("event", event(tlog.node_id, event="campaign_stop",
                    campaign_id="c-00000001", reason=f"tick {tlog.size}"))
    print(i, flush=True)
"""


def _kill_while_appending(url: str, key_path: Path, at_least: int) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", APPENDER, url, str(key_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        for line in proc.stdout:
            if int(line) >= at_least or time.monotonic() > deadline:
                break
        proc.send_signal(signal.SIGKILL)  # mid-append: no cleanup, no final checkpoint
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.integration
def test_kill_9_during_appends_leaves_a_consistent_log(tmp_path: Path) -> None:
    key = NodeKey.generate()
    key_path = tmp_path / "node.key"
    key.save(key_path)
    url = f"sqlite:///{tmp_path / 'node.db'}"
    Store.open(url).close()
    published = []
    for round_ in range(2):
        _kill_while_appending(url, key_path, at_least=40 * (round_ + 1))
        with Store.open(url) as store:
            # Opening checks the stored entries against the last signed checkpoint.
            tlog = NodeLog(store, key, checkpoint_every=1000)
            last = tlog.latest_checkpoint()
            assert last is not None and 0 < last.tree_size <= tlog.size
            for entry in tlog.entries(0, tlog.size):
                assert entry.leaf_hash == leaf_hash(entry.envelope)
                verify_envelope(Envelope.from_bytes(entry.envelope), key.public)
            tlog.append(EVENT_KIND, _event(tlog.node_id))
            new = tlog.checkpoint()
            assert new.tree_size > last.tree_size
            proof = tlog.consistency_proof(last.tree_size, new.tree_size)
            verify_consistency(last.tree_size, new.tree_size, last.root_hash, new.root_hash, proof)
            published.append(new)
            verified = verify_bundle(tlog.export().to_bytes(), key.public.fingerprint)
            assert verified.size == new.tree_size
    first, second = published
    with Store.open(url) as store:
        tlog = NodeLog(store, key)
        proof = tlog.consistency_proof(first.tree_size, second.tree_size)
    verify_consistency(first.tree_size, second.tree_size, first.root_hash, second.root_hash, proof)


def test_a_log_edited_behind_the_nodes_back_is_refused_on_open(tmp_path: Path) -> None:
    import sqlalchemy as sa

    from node.errors import CorruptStoreError

    key = NodeKey.generate()
    url = f"sqlite:///{tmp_path / 'node.db'}"
    with Store.open(url) as store:
        tlog = NodeLog(store, key, checkpoint_every=1000)
        for _ in range(5):
            tlog.append(EVENT_KIND, _event(tlog.node_id))
        tlog.checkpoint()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE log_entry SET leaf_hash = ? WHERE idx = 2", (b"\0" * 32,))
    engine.dispose()
    with Store.open(url) as store, pytest.raises(CorruptStoreError, match="checkpoint"):
        NodeLog(store, key)
    with Store.open(url) as store, pytest.raises(CorruptStoreError, match="another node key"):
        NodeLog(store, NodeKey.generate())


def test_a_reader_follows_the_log_as_the_writer_appends(tmp_path: Path) -> None:
    from node.tlog.log import LogView

    key = NodeKey.generate()
    url = f"sqlite:///{tmp_path / 'node.db'}"
    with Store.open(url) as wstore, Store.open(url) as rstore:
        writer = NodeLog(wstore, key, checkpoint_every=1000)
        reader = LogView(rstore)
        for _ in range(3):
            writer.append(EVENT_KIND, _event(writer.node_id))
        assert reader.size == 3 and reader.root(3) == writer.root(3)
        for _ in range(3, 11):
            writer.append(EVENT_KIND, _event(writer.node_id))
        assert reader.size == 11
        assert reader.inclusion_proof(9, 11) == writer.inclusion_proof(9, 11)
        assert reader.consistency_proof(3, 11) == writer.consistency_proof(3, 11)


def _event(node_id: str) -> dict[str, object]:
    return event_statement(node_id, NodeEventKind.NODE_KEY_CREATED)
