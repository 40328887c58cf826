"""Benchmark the transparency log: appends per second and audit time for an N-entry log.

An append is what the node does per record: canonical JSON, DSSE signature (Ed25519),
one SQLite transaction (WAL) and the Merkle tree update, after which inclusion and
consistency proofs can be served. Records are experiment-sized (about 1 KB). Then the
log is exported and the bundle audited (every signature, root, proof and record rule).

    python scripts/bench_log.py [--entries 100000] [--db DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from attestation.audit import verify_bundle
from attestation.keys import NodeKey
from attestation.schema import (
    EXPERIMENT_PREDICATE,
    RECORD_VERSION,
    STATEMENT_TYPE,
    NodeEventKind,
)
from node.store import Store
from node.tlog.log import NodeLog
from node.tlog.records import event_statement


def record(node_id: str, i: int) -> dict[str, object]:
    """An experiment-sized record that fits the log's schema (the audit validates it)."""
    digest = f"{i:064x}"
    predicate = {
        "record_version": RECORD_VERSION,
        "node_id": node_id,
        "campaign_id": "c-bench001",
        "config_hash": "sha256:" + "ab" * 32,
        "experiment_id": f"exp-{i:012x}",
        "seq": i + 1,
        "role": "candidate",
        "candidate": {"id": f"cand-{i:012x}", "name": f"c{i}", "origin": "offline"},
        "parent_ids": [],
        "code_digest": "sha256:" + digest,
        "motivation": "swap the feature map for elu+1 and add a short convolution " * 2,
        "screening": {"checks": [{"name": "causality", "passed": True, "detail": "1e-6"}]},
        "training": None,
        "train_config_digest": "sha256:" + "cd" * 32,
        "seeds": {"train": 0, "heldout": "secret"},
        "task_spec_digest": "sha256:" + "ef" * 32,
        "metrics": {f"acc_{s}": 0.5 + i % 7 / 100 for s in ("64x8", "128x16", "128x32", "256x64")},
        "fitness": {"version": "fitness-v1", "value": 0.01 * (i % 13)},
        "timings": {"total_s": 61.5, "train_s": 58.2},
        "environment": {
            "python": "3.11.7",
            "implementation": "cpython",
            "packages": {"torch": "2.13.0"},
            "device": {},
        },
        "researcher": {"mode": "offline", "models": [], "llm": None},
        "status": "done",
        "failure_class": None,
        "attempts": 1,
        "started_at": "2026-12-06T10:00:00+00:00",
        "finished_at": "2026-12-06T10:01:00+00:00",
    }
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": f"candidate/c{i}", "digest": {"sha256": digest}}],
        "predicateType": EXPERIMENT_PREDICATE,
        "predicate": predicate,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--db", type=Path, default=None, help="directory for the SQLite file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.db) as tmp:
        store = Store.open(f"sqlite:///{tmp}/bench.db")
        key = NodeKey.generate()
        tlog = NodeLog(store, key, checkpoint_every=1000, checkpoint_interval_s=1e9)
        start = event_statement(
            tlog.node_id,
            NodeEventKind.CAMPAIGN_START,
            campaign_id="c-bench001",
            config_hash="sha256:" + "ab" * 32,
        )
        tlog.append("event", start)
        records = [record(tlog.node_id, i) for i in range(args.entries - 1)]
        t0 = time.perf_counter()
        for i, stmt in enumerate(records):
            tlog.append("experiment", stmt, subject=f"exp-{i:012x}")
        tlog.checkpoint()
        append_s = time.perf_counter() - t0
        print(
            f"appends: {args.entries - 1} in {append_s:.1f} s = "
            f"{(args.entries - 1) / append_s:,.0f}/s (sign + append + proof-ready, SQLite WAL)"
        )
        t0 = time.perf_counter()
        data = tlog.export().to_bytes()
        export_s = time.perf_counter() - t0
        print(f"export: {len(data) / 1e6:.1f} MB bundle in {export_s:.1f} s")
        t0 = time.perf_counter()
        verified = verify_bundle(data, key.public.fingerprint)
        audit_s = time.perf_counter() - t0
        print(
            f"audit: {verified.size} entries, {len(verified.checkpoints)} checkpoints "
            f"verified in {audit_s:.1f} s (one core)"
        )
        store.close()


if __name__ == "__main__":
    main()
