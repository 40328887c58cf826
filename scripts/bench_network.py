"""Benchmark following peers: the first sync of N peers of M log entries each, then an
incremental one after each peer appended a few entries.

Each peer is its own SQLite store and node key, with a signed log of `--entries`
entries: a campaign start, `--importable` real experiments (candidates, code and
finished runs in the peer's store, so `/experiments/{id}` serves code that hashes to the
record's digest) and filler experiment records, all valid under the log's schema. The
filler is mostly records of the shared campaign config that the follower must pass
over: failed runs, baselines and `peer` candidates; one in four is a finished run of a
campaign the follower does not run (another config hash). The follower, with its own
store and a campaign of the shared config, imports exactly the real ones: `--importable`
per peer on the first sync, then the one real experiment among each peer's `--new`
entries. Each peer is synced until the follower holds its whole log with nothing
pending; the rounds that took are printed (a first sync reads the whole log at once,
`max_entries_per_sync` bounds the syncs from a kept state).

The peers are served over HTTP on loopback by a child process (uvicorn, a thread per
peer), so the follower's process, timed and measured here, holds only the follower: its
wall and CPU time, and its peak RSS during the first sync (VmHWM, reset just before).
Built peers are cached in `--db DIR` (copied per run: the incremental phase appends).

    python scripts/bench_network.py [--peers 10] [--entries 10000] [--new 5] [--db DIR]
    python scripts/bench_network.py --quick     # 3 peers of 500 entries: a smoke run
    python scripts/bench_network.py --peers 1 --profile FILE   # cProfile the first sync
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import hashlib
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from copy import deepcopy
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attestation.keys import NodeKey
from attestation.schema import (
    EXPERIMENT_PREDICATE,
    STATEMENT_TYPE,
    CandidateOrigin,
    ExperimentRecord,
    ExperimentRole,
    ExperimentStatus,
    NodeEventKind,
)

if TYPE_CHECKING:
    from node.network.follow import Follower, SyncResult
    from node.store import CampaignRow, Store
    from node.tlog.log import NodeLog

CAMPAIGN, OTHER = "bench-net", "bench-other"  # the shared campaign; one the follower lacks
CHECKPOINT_EVERY = 100  # the node's default: a 10,000-entry log holds 100 checkpoints
MIXER = '''"""Bench candidate {tag}."""
import torch


class Mixer(torch.nn.Module):
    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).cumsum(dim=1) / {scale}
'''


def shared_config(candidates: int = 100) -> dict[str, Any]:
    """The campaign config every peer and the follower run (one config hash); with other
    `candidates`, the config of a campaign the follower does not run."""
    from node.campaign.config import Budget, CampaignConfig

    config = CampaignConfig(
        preset="quick", baselines=("deltanet", "linear"), budget=Budget(max_candidates=candidates)
    )
    return config.model_dump(mode="json")


# -- building a peer -------------------------------------------------------------------


def add_real(store: Store, camp: CampaignRow, tlog: NodeLog, tag: str, seed: int) -> str:
    """A finished experiment in the peer's store, its record signed into its log."""
    from loop.proposal import Proposal
    from node.tlog.records import EXPERIMENT_KIND, experiment_statement

    scale = 1 + int(hashlib.sha256(tag.encode()).hexdigest()[:4], 16)
    proposal = Proposal(
        name=f"bench-{tag}",
        motivation="a cumulative-sum mixer, scaled",
        code=MIXER.format(tag=tag, scale=scale),
    )
    cand = store.add_candidate(camp.id, proposal)
    exp = store.enqueue_experiment(camp.id, cand.id, ExperimentRole.CANDIDATE, seed)
    store.start_experiment(exp.id)
    acc = 0.4 + scale % 100 / 1000
    done = store.finish_experiment(
        exp.id,
        ExperimentStatus.DONE,
        screen={"checks": [{"name": "causality", "passed": True, "detail": "1e-6"}]},
        metrics={"acc_64x8": acc, "mean_acc": acc},
        fitness=acc,
        fitness_version="fitness-v1",
        timings={"total_s": 61.5, "train_s": 58.2},
    )
    stmt = experiment_statement(store, camp, done, tlog.node_id)
    tlog.append(EXPERIMENT_KIND, stmt, subject=exp.id)
    return exp.id


def filler(
    template: dict[str, Any], other: CampaignRow, tag: str, i: int
) -> tuple[str, dict[str, Any]]:
    """The `i`-th record the follower passes over, from a real record's predicate: a
    failed run, a baseline, a `peer` candidate, or a run of another campaign's config."""
    p = deepcopy(template)
    digest = hashlib.sha256(f"{tag}/{i}".encode()).hexdigest()
    exp_id = f"exp-{tag}-{i:08d}"
    p["experiment_id"] = exp_id
    p["seq"] = 1000 + i
    p["code_digest"] = "sha256:" + digest
    p["candidate"] = {"id": f"cand-{tag}-{i:08d}", "name": f"f{i}", "origin": "offline"}
    kind = i % 4
    if kind == 0:
        p.update(status="failed", failure_class="future_leak", fitness=None, metrics=None)
    elif kind == 1:
        p["candidate"]["origin"] = CandidateOrigin.BASELINE.value
    elif kind == 2:
        p["candidate"]["origin"] = CandidateOrigin.PEER.value
    else:
        p.update(campaign_id=other.id, config_hash=other.config_hash)
    stmt = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": f"candidate/f{i}", "digest": {"sha256": digest}}],
        "predicateType": EXPERIMENT_PREDICATE,
        "predicate": p,
    }
    return exp_id, stmt


def append_fillers(
    tlog: NodeLog, template: dict[str, Any], other: CampaignRow, tag: str, start: int, n: int
) -> None:
    from node.tlog.records import EXPERIMENT_KIND

    for i in range(start, start + n):
        exp_id, stmt = filler(template, other, tag, i)
        if i < start + 4:  # each kind once through the schema the auditor applies
            ExperimentRecord.model_validate_json(json.dumps(stmt["predicate"]))
        tlog.append(EXPERIMENT_KIND, stmt, subject=exp_id)


def open_log(store: Store, key: NodeKey) -> NodeLog:
    from node.tlog.log import NodeLog

    return NodeLog(store, key, checkpoint_every=CHECKPOINT_EVERY, checkpoint_interval_s=1e9)


def build_peer(db: Path, key_file: Path, tag: str, entries: int, importable: int) -> None:
    """A peer's store at `db` with an `entries`-entry log; its key at `key_file`."""
    from node.store import Store
    from node.tlog.records import EVENT_KIND, event_statement, predicate_of

    key = NodeKey.generate()
    with Store.open(f"sqlite:///{db}") as store:
        tlog = open_log(store, key)
        camp = store.create_campaign(CAMPAIGN, shared_config())
        other = store.create_campaign(OTHER, shared_config(candidates=50))
        for c in (camp, other):
            start = event_statement(
                tlog.node_id,
                NodeEventKind.CAMPAIGN_START,
                campaign_id=c.id,
                config_hash=c.config_hash,
            )
            tlog.append(EVENT_KIND, start)
        seed = int(camp.config["seed"])
        last = ""
        for j in range(importable):
            last = add_real(store, camp, tlog, f"{tag}-r{j}", seed)
        [template] = tlog.entries(tlog.size - 1, tlog.size)
        predicate = predicate_of(template.envelope)
        assert predicate["experiment_id"] == last
        append_fillers(tlog, predicate, other, tag, 0, entries - tlog.size)
        tlog.checkpoint()
    key.save(key_file)


def grow_peer(db: Path, key_file: Path, tag: str, new: int) -> None:
    """`new` more entries in a built peer's log (one a real experiment), checkpointed."""
    from node.store import Store
    from node.tlog.records import predicate_of

    with Store.open(f"sqlite:///{db}") as store:
        tlog = open_log(store, NodeKey.load(key_file))
        camp, other = store.get_campaign(CAMPAIGN), store.get_campaign(OTHER)
        add_real(store, camp, tlog, f"{tag}-n{tlog.size}", int(camp.config["seed"]))
        [last] = tlog.entries(tlog.size - 1, tlog.size)
        template = predicate_of(last.envelope)
        append_fillers(tlog, template, other, tag, tlog.size, new - 1)
        tlog.checkpoint()


def built_peers(cache: Path, peers: int, entries: int, importable: int) -> list[tuple[Path, Path]]:
    """The (database, key) of each peer under `cache`, built where missing."""
    folder = cache / f"peers-{entries}-{importable}-cp{CHECKPOINT_EVERY}"
    folder.mkdir(parents=True, exist_ok=True)
    out, built, t0 = [], 0, time.perf_counter()
    for i in range(peers):
        db, key = folder / f"peer-{i}.db", folder / f"peer-{i}.key"
        if not (db.exists() and key.exists()):  # the key is saved last: a build finished
            for stale in (*folder.glob(db.name + "*"), key):
                stale.unlink(missing_ok=True)
            build_peer(db, key, f"p{i}", entries, importable)
            built += 1
        out.append((db, key))
    took = time.perf_counter() - t0
    if built:
        print(
            f"build: {built} peer(s) of {entries} entries in {took:.1f} s "
            f"({built * entries / took:,.0f} appends/s, cached in {folder})"
        )
    else:
        print(f"build: {peers} peer(s) of {entries} entries from the cache {folder}")
    return out


# -- serving ---------------------------------------------------------------------------


def serve_child(dbs: Sequence[str]) -> None:
    """Serve each store's API on a loopback port (a thread each); print `URL u` lines;
    stop when stdin closes."""
    import socket

    import uvicorn

    from node.api.app import create_app
    from node.store import Store

    servers, stores = [], []
    for db in dbs:
        store = Store.open(f"sqlite:///{db}")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        config = uvicorn.Config(create_app(store), host="127.0.0.1", port=port, log_level="error")
        servers.append((uvicorn.Server(config), port))
        stores.append(store)
    # Started once every Config is made: each one resets uvicorn's logging on creation.
    for server, _ in servers:
        threading.Thread(target=server.run, daemon=True).start()
    for server, port in servers:
        while not server.started:
            time.sleep(0.02)
        url = f"http://127.0.0.1:{port}"
        # A running node holds its Merkle tree; a fresh server builds it on the first proof.
        urllib.request.urlopen(f"{url}/log/proof/consistency?first=1&second=2", timeout=600)
        print(f"URL {url}", flush=True)
    sys.stdin.read()
    for server, _ in servers:
        server.should_exit = True
    for store in stores:
        store.close()


@contextlib.contextmanager
def served(dbs: Sequence[Path]) -> Iterator[list[str]]:
    """The peers' APIs, served by a child process; their URLs."""
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", *map(str, dbs)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        urls = []
        for line in child.stdout:
            if line.startswith("URL "):
                urls.append(line.split()[1])
            if len(urls) == len(dbs):
                break
        if len(urls) != len(dbs):
            sys.exit(f"the peers' server stopped (exit {child.wait()})")
        yield urls
    finally:
        child.stdin.close()
        try:
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


# -- measuring -------------------------------------------------------------------------


def _status_mib(field: str) -> float | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return None


def rss_mib() -> float:
    return _status_mib("VmRSS") or 0.0


def reset_peak() -> bool:
    """Start this process's peak RSS (VmHWM) afresh from now, where Linux lets us."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_mib() -> float:
    """The peak RSS since `reset_peak` (VmHWM), else getrusage's lifetime peak."""
    hwm = _status_mib("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def catch_up(follower: Follower, url: str, size: int) -> tuple[list[SyncResult], float]:
    """Sync `url` until the follower holds its log to `size` and nothing is pending."""
    from node.network.peers import PeerState

    t0 = time.perf_counter()
    rounds = []
    while True:
        result = follower.sync(url)
        rounds.append(result)
        if result.state is not PeerState.OK:
            sys.exit(f"the sync failed: {result.line()}")
        if result.size >= size and not result.pending:
            return rounds, time.perf_counter() - t0
        if len(rounds) > 100:
            sys.exit(f"no catch-up after 100 syncs: {result.line()}")


def phase(
    name: str, follower: Follower, urls: list[str], size: int
) -> tuple[float, float, int, int, int]:
    """Catch every peer up; print per-peer times. (total s, follower CPU s, entries,
    imported, rounds)"""
    times, entries, imported, rounds = [], 0, 0, 0
    cpu = time.process_time()
    for url in urls:
        results, took = catch_up(follower, url, size)
        times.append(took)
        entries += sum(r.new_entries for r in results)
        imported += sum(r.imported for r in results)
        rounds = max(rounds, len(results))
    cpu = time.process_time() - cpu
    total = sum(times)
    per = ", ".join(f"{t:.2f}" for t in times)
    print(
        f"{name}: {len(urls)} peers, {entries} entries verified in {total:.2f} s "
        f"({entries / total:,.0f} entries/s; the follower's CPU {cpu:.2f} s), {imported} "
        f"imported, at most {rounds} sync round(s) per peer\n  per peer (s): {per}"
    )
    return total, cpu, entries, imported, rounds


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--serve"]:
        serve_child(argv[1:])
        return 0
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--peers", type=int, default=10)
    parser.add_argument("--entries", type=int, default=10_000, help="log entries per peer")
    parser.add_argument("--new", type=int, default=5, help="entries each peer then appends")
    parser.add_argument("--importable", type=int, default=3, help="real experiments per peer")
    parser.add_argument("--db", type=Path, default=None, help="cache of built peers")
    parser.add_argument("--quick", action="store_true", help="3 peers of 500 entries")
    parser.add_argument("--profile", type=Path, default=None, help="cProfile the first sync")
    args = parser.parse_args(argv)
    if args.quick:
        args.peers, args.entries = 3, 500
    if args.new < 1 or args.entries < args.importable + 3:
        parser.error("--new must be at least 1 and --entries above --importable + 2")

    from node.network.follow import Follower
    from node.network.peers import PeerBook
    from node.settings import NetworkSettings
    from node.store import Store

    with contextlib.ExitStack() as stack:
        cache = args.db or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        cached = built_peers(cache, args.peers, args.entries, args.importable)
        work = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        peers = []
        for i, (db, key) in enumerate(cached):
            for f in db.parent.glob(db.name + "*"):
                shutil.copy(f, work / f.name)
            peers.append((work / db.name, key, f"p{i}"))
        urls = stack.enter_context(served([db for db, _, _ in peers]))
        store = stack.enter_context(Store.open(f"sqlite:///{work}/follower.db"))
        store.create_campaign(CAMPAIGN, shared_config())
        follower = Follower(store, PeerBook(work / "book"), NetworkSettings(peers=urls))

        before = rss_mib()
        fresh = reset_peak()
        profiler = cProfile.Profile() if args.profile else None
        if profiler is not None:
            profiler.enable()
        first, first_cpu, _, imported1, _ = phase("first sync", follower, urls, args.entries)
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)
        peak, after = peak_mib(), rss_mib()
        label = "peak RSS" if fresh else "peak RSS (process lifetime, getrusage)"
        print(
            f"  memory: RSS {before:.0f} MiB before, {label} {peak:.0f} MiB during "
            f"(+{peak - before:.0f} MiB), {after:.0f} MiB after (+{after - before:.0f} MiB); "
            f"ru_maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
        )

        t0 = time.perf_counter()
        for db, key, tag in peers:
            grow_peer(db, key, tag, args.new)
        print(f"grow: {args.new} entries appended to each peer in {time.perf_counter() - t0:.1f} s")
        again, again_cpu, _, imported2, _ = phase(
            "incremental sync", follower, urls, args.entries + args.new
        )
        print(f"ratio: the first sync took {first / again:,.0f}x the incremental one")
        print(
            f"RESULT peers={args.peers} entries={args.entries} new={args.new} "
            f"first_s={first:.3f} incremental_s={again:.3f} "
            f"first_cpu_s={first_cpu:.3f} incremental_cpu_s={again_cpu:.3f} "
            f"imported_first={imported1} imported_incremental={imported2} "
            f"peak_rss_mib={peak:.0f} growth_mib={peak - before:.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
