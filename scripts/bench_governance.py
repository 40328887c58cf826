"""Benchmark: latency from a pause directive observed to the campaign's training stopped.

A throw-away node home, one quick-preset campaign, the real Engineer (sandboxed training
on the CPU) and the real scheduler under `node.governed.GovernedNode`, with directives
from an in-process `QueueSource` instead of a chain. Each round: resume (or start), wait
until an experiment's training sandbox is running plus `--settle` seconds, issue a pause,
step the watcher once, and time until the run has ended (sandbox killed, experiment back
in the queue). Prints one line per round and the median. Asserts nothing.

With `--poll S` the node instead serves in the background, polling every S seconds (as
`gov run` does), and each round is timed from the directive's issue (for an instantly
mined chain: its block) to the experiment back in the queue; that adds up to one poll
interval.

The on-chain figure (directive's block to training stopped) adds the poll interval and
the RPC read to this; it needs the EVM directive source (issue 5's chain client).

Run: .venv/bin/python scripts/bench_governance.py [--rounds N] [--settle S] [--home DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from governance.directives import DirectiveKind, QueueSource
from governance.watcher import Watcher
from node.campaign import Budget, CampaignConfig
from node.governed import GovernedNode
from node.runtime import open_node
from node.scheduler import RunSummary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--settle", type=float, default=3.0, help="seconds of training first")
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument("--poll", type=float, default=None, help="serve, polling every S s")
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="asi-bench-gov-"))
    node = open_node(home, create=True)
    cfg = CampaignConfig(preset="quick", baselines=("deltanet",), budget=Budget(max_candidates=1))
    camp = node.store.create_campaign(f"bench-{int(time.time())}", cfg.model_dump(mode="json"))
    source = QueueSource("bench")

    def run(cid: str, stop: threading.Event) -> RunSummary:
        return node.run_campaign(cid, stop=stop)

    governed = GovernedNode(node.store, Watcher([source]), run, [camp.id], stop_deadline_s=30)
    latencies = []
    workspaces = Path(node.settings.home) / "workspaces"
    print(f"node home {home}, campaign {camp.id}, quick preset, CPU sandbox")
    stop_serving = threading.Event()
    if args.poll is not None:
        server = threading.Thread(target=governed.serve, args=(stop_serving, args.poll))
        server.start()
    for round_ in range(args.rounds):
        if round_:
            source.issue(DirectiveKind.RESUME, camp.id)
        if args.poll is None:
            governed.step()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            running = node.store.list_experiments(camp.id, status="running")
            if running and (workspaces / running[0].id / "train").exists():
                break
            time.sleep(0.05)
        else:
            print("no training sandbox started within 120 s")
            return 1
        time.sleep(args.settle)
        if args.poll is not None:
            issued = time.monotonic()
            source.issue(DirectiveKind.PAUSE, camp.id)
            while node.store.get_experiment(running[0].id).status == "running":
                time.sleep(0.005)
            latency = time.monotonic() - issued
            latencies.append(latency)
            print(
                f"round {round_ + 1}: pause issued -> training stopped and requeued "
                f"{latency:.3f} s (poll {args.poll} s)"
            )
            while camp.id in governed.runs:
                time.sleep(0.01)
            continue
        source.issue(DirectiveKind.PAUSE, camp.id)
        report = governed.step()
        report = governed.wait_stopped(camp.id, timeout_s=60)
        (stopped,) = report.stopped
        exp = node.store.get_experiment(running[0].id)
        latencies.append(stopped.latency_s)
        print(
            f"round {round_ + 1}: pause observed -> training stopped {stopped.latency_s:.3f} s; "
            f"experiment {exp.id} is {exp.status} (attempts {exp.attempts})"
        )
    print(f"median {statistics.median(latencies):.3f} s over {len(latencies)} rounds")
    stop_serving.set()
    if args.poll is not None:
        server.join()
    governed.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
