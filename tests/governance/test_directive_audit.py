"""`asi-node audit` over logs a governed node wrote: directives replayed against starts.

The logs come from a GovernedNode run (GatedEngineer training, a scripted source): pause,
resume, then an experiment that truly starts while its campaign is paused, appended with
properly signed entries the way a node that ignored the pause would write them.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from gov_fakes import FakeSource, GatedEngineer

from attestation.audit import audit, verify_bundle
from attestation.dsse import Envelope
from attestation.keys import NodeKey
from governance.directives import DirectiveKind
from governance.watcher import Watcher
from node.campaign.config import Budget, CampaignConfig
from node.campaign.scheduler import CampaignRunner, RunSummary
from node.cli.main import main
from node.governed.obey import GovernedNode
from node.governed.records import paused_starts
from node.store import Store
from node.tlog.log import NodeLog
from node.tlog.records import DIRECTIVE_KIND, EXPERIMENT_KIND, Recorder, predicate_of

P, R = DirectiveKind.PAUSE, DirectiveKind.RESUME


@pytest.fixture
def governed_run() -> Iterator[tuple[Store, NodeLog, Recorder, GovernedNode, FakeSource, str]]:
    """x runs, is paused mid-training (the experiment is requeued), resumes and finishes."""
    with Store.open("sqlite://") as store:
        tlog = NodeLog(store, NodeKey.generate(), checkpoint_every=1000)
        recorder = Recorder(tlog, store)
        cfg = CampaignConfig(
            preset="quick", baselines=("deltanet", "linear"), budget=Budget(max_candidates=2)
        )
        camp = store.create_campaign("x", cfg.model_dump(mode="json"))
        eng, src = GatedEngineer(), FakeSource(head=None)

        def run(cid: str, stop: threading.Event) -> RunSummary:
            c = store.get_campaign(cid)
            recorder.campaign_start(c)
            runner = CampaignRunner(
                store,
                c,
                eng,  # type: ignore[arg-type]
                workers=1,
                threads_per_worker=1,
                node_secret=b"s" * 32,
                stop=stop,
                recorder=recorder,
            )
            summary = runner.run()
            recorder.campaign_stop(c, summary.reason)
            return summary

        node = GovernedNode(store, Watcher([src]), run, ["x"], recorder=recorder)
        try:
            node.step()
            assert eng.started.acquire(timeout=10)
            src.issue(P, camp.id, 1, ref="0xpause")
            node.step()
            node.wait_stopped(camp.id, 10)
            node.step()
            src.issue(R, camp.id, 2, ref="0xresume")
            eng.release.set()
            node.step()
            node.runs[camp.id].thread.join(30)
            node.step()
            assert store.get_campaign(camp.id).status == "done"
            yield store, tlog, recorder, node, src, camp.id
        finally:
            eng.release.set()
            node.shutdown(timeout_s=10)


def _export(tlog: NodeLog) -> bytes:
    tlog.checkpoint()
    return tlog.export().to_bytes()


def _statement(entry: dict[str, Any]) -> dict[str, Any]:
    env = json.loads(base64.b64decode(entry["envelope"]))
    out: dict[str, Any] = json.loads(base64.b64decode(env["payload"]))
    return out


def test_an_obedient_governed_run_passes_the_audit_with_its_directives_checked(
    governed_run: tuple[Store, NodeLog, Recorder, GovernedNode, FakeSource, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store, tlog, _, _, _, cid = governed_run
    data = _export(tlog)
    verified = verify_bundle(data)
    assert verified.records.directives == 2
    records = verified.records.experiments[cid]
    assert records >= 3 and verified.records.starts_checked == records
    kinds = [
        predicate_of(e.envelope)["kind"]
        for e in tlog.entries(0, tlog.size)
        if e.kind == DIRECTIVE_KIND
    ]
    assert kinds == ["pause", "resume"]
    # The run really was interrupted: one experiment was requeued by the pause.
    assert [e.kind for e in store.list_events(cid, kind="experiment_requeued")]
    bundle = tmp_path / "log.json"
    bundle.write_bytes(data)
    assert main(["audit", str(bundle)]) == 0
    out = capsys.readouterr().out
    assert "2 directive(s)" in out and "none while paused" in out


def test_an_experiment_that_started_while_paused_fails_the_audit_naming_it(
    governed_run: tuple[Store, NodeLog, Recorder, GovernedNode, FakeSource, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store, tlog, recorder, node, src, cid = governed_run
    src.issue(P, cid, 3, ref="0xpause2")
    (pause,) = node.step().applied
    # A node that ignores the pause: it starts and records one more experiment.
    cand = store.list_candidates(cid)[0]
    exp = store.enqueue_experiment(cid, cand.id, "candidate", 41)
    started = store.start_experiment(exp.id).started_at
    assert started is not None and started > pause.applied_at
    store.finish_experiment(exp.id, "done", metrics={"mean_acc": 0.4})
    recorder.experiment_final(exp.id)
    data = _export(tlog)

    report = audit(data, "paused start")
    assert report.failure is not None and report.failure.name == "record rules"
    detail = report.failure.detail
    assert exp.id in detail and started.isoformat() in detail
    assert "evm epoch 3 pause (0xpause2)" in detail
    assert f"log entry {pause.detail['log_index']}" in detail
    bundle = tmp_path / "log.json"
    bundle.write_bytes(data)
    assert main(["audit", str(bundle)]) == 1
    assert exp.id in capsys.readouterr().out
    # The store-based `gov audit` finds the same experiment.
    assert [v.experiment_id for v in paused_starts(store, cid)] == [exp.id]

    # Hiding the pause by editing its time, or flipping one bit of it, breaks its signature.
    doc = json.loads(data)
    index = pause.detail["log_index"]
    entry = doc["entries"][index]
    stmt = _statement(entry)
    stmt["predicate"]["applied_at"] = datetime.now().astimezone().isoformat()
    env = json.loads(base64.b64decode(entry["envelope"]))
    env["payload"] = base64.b64encode(json.dumps(stmt).encode()).decode()
    entry["envelope"] = base64.b64encode(json.dumps(env).encode()).decode()
    edited = audit(json.dumps(doc).encode(), "edited pause")
    assert edited.failure is not None and edited.failure.name == "envelope signatures"
    assert f"entry {index}" in edited.failure.detail

    doc = json.loads(data)
    raw = bytearray(base64.b64decode(doc["entries"][index]["envelope"]))
    raw[len(raw) // 2] ^= 0x01
    doc["entries"][index]["envelope"] = base64.b64encode(bytes(raw)).decode()
    flipped = audit(json.dumps(doc).encode(), "flipped pause")
    assert flipped.failure is not None and flipped.failure.number <= 5
    assert f"entry {index}" in flipped.failure.detail


def test_a_bundle_from_before_directives_were_logged_still_verifies(
    governed_run: tuple[Store, NodeLog, Recorder, GovernedNode, FakeSource, str],
) -> None:
    """Version 1 records (no started_at) and no directive entries: nothing to replay."""
    _, tlog, _, _, _, cid = governed_run
    key = tlog.key
    with Store.open("sqlite://") as old_store:
        old = NodeLog(old_store, key, checkpoint_every=1000)
        for entry in tlog.entries(0, tlog.size):
            if entry.kind == DIRECTIVE_KIND:
                continue
            stmt = json.loads(Envelope.from_bytes(entry.envelope).payload)
            if entry.kind == EXPERIMENT_KIND:
                # As a version 1 record was written: none of the later fields.
                stmt["predicate"]["record_version"] = 1
                for later in ("started_at", "verifies", "replicates", "peer_parents"):
                    del stmt["predicate"][later]
            old.append(entry.kind, stmt, subject=entry.subject)
        data = _export(old)
    verified = verify_bundle(data, trusted_fingerprint=key.public.fingerprint)
    assert verified.records.directives == 0 and verified.records.starts_checked == 0
    assert verified.records.experiments[cid] >= 3
    # A version 2 record must carry started_at.
    with Store.open("sqlite://") as bad_store:
        bad = NodeLog(bad_store, key, checkpoint_every=1000)
        for entry in tlog.entries(0, tlog.size):
            stmt = json.loads(Envelope.from_bytes(entry.envelope).payload)
            if entry.kind == EXPERIMENT_KIND:
                del stmt["predicate"]["started_at"]
            bad.append(entry.kind, stmt, subject=entry.subject)
        report = audit(_export(bad), "no start")
    assert report.failure is not None and report.failure.name == "record schema"
    assert "a version 2 record must carry started_at" in report.failure.detail


def test_a_directive_subject_fits_the_log_table_and_stays_unique() -> None:
    from node.tlog.records import directive_subject

    assert directive_subject("evm", "c-1", 4) == "evm:c-1:4"
    long_a = directive_subject("sns", "a-very-long-campaign-name-" * 3, 4)
    long_b = directive_subject("sns", "a-very-long-campaign-name-" * 3, 5)
    assert len(long_a) == 64 and long_a.startswith("sha256:") and long_a != long_b
