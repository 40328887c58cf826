"""Benchmark the transparency log: appends per second and audit time for an N-entry log.

An append is what the node does per record: canonical JSON, DSSE signature (Ed25519),
one SQLite transaction (WAL) and the Merkle tree update, after which inclusion and
consistency proofs can be served. Records are experiment-sized (about 1 KB). Then the
log is exported as a line-delimited bundle and audited by `asi-node audit FILE --state
DIR` in a child process (streamed: its peak RSS is printed), `--new` more entries are
appended, and `asi-node audit URL --state DIR` checks only those, over HTTP.

The audit's time per entry is printed beside what one signature check costs (every
entry's signature is checked): by OpenSSL, and by the node key's fixed-base tables as the
audit checks them (attestation._ed25519, 256 at a time), timed in the same child process
just after the audit; all are projected to a million entries.

    python scripts/bench_log.py [--entries 100000] [--new 1000] [--db DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import socket
import subprocess
import sys
import tempfile
import time
import timeit
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from attestation.keys import NodeKey, PublicKey, TabledKey
from attestation.schema import (
    EXPERIMENT_PREDICATE,
    RECORD_VERSION,
    STATEMENT_TYPE,
    NodeEventKind,
)
from node.cli.main import build_parser
from node.cli.main import main as cli_main

if TYPE_CHECKING:
    from node.store import Store


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
        "verifies": None,
        "replicates": None,
        "peer_parents": [],
    }
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": f"candidate/c{i}", "digest": {"sha256": digest}}],
        "predicateType": EXPERIMENT_PREDICATE,
        "predicate": predicate,
    }


def audit_child(argv: list[str]) -> None:
    """Run `asi-node audit ARGV...` in this (fresh) process; print its time and peak RSS."""
    build_parser()  # the CLI's imports, before the clock starts: it times the audit alone
    t0 = time.perf_counter()
    code = cli_main(["audit", *argv])
    took = time.perf_counter() - t0
    peak = peak_rss_mib()
    openssl, tables = verify_us()
    print(
        f"BENCH exit={code} seconds={took:.2f} peak_rss_mib={peak:.0f} "
        f"openssl_us={openssl:.1f} tables_us={tables:.1f}",
        flush=True,
    )


def verify_us(number: int = 10_000) -> tuple[float, float]:
    """One Ed25519 check of an entry-sized message, in µs: by OpenSSL (PublicKey.verify),
    and by the key's tables in batches of 256 (the audit's way), the SHA-512 included. The
    best of three rounds, as a shared machine only ever slows them."""
    key = NodeKey.generate()
    public, message = PublicKey(key.public.raw), b"\x00" * 2500
    signature = key.sign(message)
    assert public.verify(signature, message)
    rounds = timeit.repeat(lambda: public.verify(signature, message), number=number, repeat=3)
    openssl = min(rounds) / number * 1e6
    tabled = public.for_many()
    if not isinstance(tabled, TabledKey):
        return openssl, openssl
    batch = [(signature, message)] * 256
    assert all(tabled.accepts_all(batch))
    rounds = timeit.repeat(lambda: tabled.accepts_all(batch), number=number // 256, repeat=3)
    return openssl, min(rounds) / (number // 256 * 256) * 1e6


def peak_rss_mib() -> float:
    """This process's own peak RSS: VmHWM on Linux, which starts afresh at exec, where
    ru_maxrss keeps the peak of the parent it was forked from (the benchmark itself)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def audit(*argv: str) -> tuple[float, float, float, float]:
    """`asi-node audit` in a child process, one core: (seconds, peak RSS in MiB, one
    signature check in µs by OpenSSL and by the tables)."""
    done = subprocess.run(
        [sys.executable, __file__, "--audit-child", *argv], capture_output=True, text=True
    )
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH ")), None)
    if line is None or "exit=0" not in line:
        sys.exit(f"the audit failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    fields = dict(kv.split("=") for kv in line.split()[1:])
    return (
        float(fields["seconds"]),
        float(fields["peak_rss_mib"]),
        float(fields["openssl_us"]),
        float(fields["tables_us"]),
    )


def main() -> None:
    if sys.argv[1:2] == ["--audit-child"]:
        audit_child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--new", type=int, default=1000, help="entries audited incrementally")
    parser.add_argument("--db", type=Path, default=None, help="directory for the SQLite file")
    args = parser.parse_args()
    # Imported here, as the API is in `served`: the audit child, which imports this
    # module, then measures the auditor's own memory (these import torch).
    from node.store import Store
    from node.tlog.log import NodeLog
    from node.tlog.records import event_statement

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
        t0 = time.perf_counter()
        for i in range(args.entries - 1):
            tlog.append("experiment", record(tlog.node_id, i), subject=f"exp-{i:012x}")
        tlog.checkpoint()
        append_s = time.perf_counter() - t0
        print(
            f"appends: {args.entries - 1} in {append_s:.1f} s = "
            f"{(args.entries - 1) / append_s:,.0f}/s (sign + append + proof-ready, SQLite WAL)"
        )
        bundle = Path(tmp) / "bundle.jsonl"
        t0 = time.perf_counter()
        with bundle.open("wb") as f:
            f.writelines(tlog.export_lines())
        export_s = time.perf_counter() - t0
        size_mb = bundle.stat().st_size / 1e6
        print(f"export: {size_mb:.1f} MB line-delimited bundle in {export_s:.1f} s")
        state = Path(tmp) / "state"
        state.mkdir()
        seconds, peak, openssl, tables = audit(
            str(bundle), "--key", key.public.fingerprint, "--state", str(state)
        )
        per_entry = seconds / tlog.size * 1e6
        print(
            f"audit: {tlog.size} entries, streamed from the file, in {seconds:.1f} s, "
            f"peak RSS {peak:.0f} MiB (one core; every signature, root, proof and rule)\n"
            f"  {per_entry:.0f} µs/entry (1,000,000 entries: {per_entry:.0f} s); one signature "
            f"check: {tables:.1f} µs by the key's tables, {openssl:.0f} µs by OpenSSL "
            f"(1,000,000: {tables:.0f} s, {openssl:.0f} s)"
        )
        bundle.unlink()
        for j in range(args.new):
            i = args.entries - 1 + j
            tlog.append("experiment", record(tlog.node_id, i), subject=f"exp-{i:012x}")
        tlog.checkpoint()
        with served(store) as url:
            # A running node holds its tree; a fresh server rebuilds it on the first proof.
            warm = f"{url}/log/proof/consistency?first=1&second={tlog.size}"
            urllib.request.urlopen(warm, timeout=600).read()
            seconds, peak, _, _ = audit(url, "--key", key.public.fingerprint, "--state", str(state))
        print(
            f"incremental audit: {args.new} new entries over the kept checkpoint at size "
            f"{args.entries}, by HTTP, in {seconds:.2f} s (peak RSS {peak:.0f} MiB)"
        )
        store.close()


@contextlib.contextmanager
def served(store: Store) -> Iterator[str]:
    """The node's HTTP API over `store` on a loopback port."""
    from node.api.app import create_app
    from node.cli.daemon import api_running

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    with api_running(create_app(store), "127.0.0.1", port):
        yield f"http://127.0.0.1:{port}"


if __name__ == "__main__":
    main()
