"""Benchmark: latency from a pause directive to the campaign's training stopped.

A throw-away node home, one quick-preset campaign, the real Engineer (sandboxed training
on the CPU) and the real scheduler under `node.governed.obey.GovernedNode`, with directives
from an in-process `QueueSource` instead of a chain. Each round: resume (or start), wait
until an experiment's training sandbox is running plus `--settle` seconds, issue a pause,
step the watcher once, and time until the run has ended (sandbox killed, experiment back
in the queue). Prints one line per round and the median. Asserts nothing.

With `--poll S` the node instead serves in the background, polling every S seconds (as
`gov run` does), and each round is timed from the directive's issue (for an instantly
mined chain: its block) to the experiment back in the queue; that adds up to one poll
interval.

With `--chain` the directives come from the contracts on anvil (from contracts/node_modules,
mining a block per transaction), read by the node exactly as `asi-node gov run` wires it
(the EVM source, `governed_node` with anchoring, on-chain acknowledgements), serving every
`--poll` seconds (default 1). Each of `--trials` rounds pauses the training campaign twice:
once by the guardian's `pauseCampaign` and once by a DAO proposal's `execute` (proposed,
voted, queued and its 60 s timelock delay passed on the chain's clock beforehand), each
timed from the signed transaction handed to anvil, which mines it at once into the block
that carries the directive (sent at a random point of the poll cycle), to the running
experiment back in the queue; a DAO resume (after its confirmations) starts the next
round. Prints each figure, then per kind the median and p95 beside the poll interval.

Run: .venv/bin/python scripts/bench_governance.py [--rounds N] [--settle S] [--home DIR]
     .venv/bin/python scripts/bench_governance.py --chain [--trials N] [--poll S]
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from eth_utils.crypto import keccak  # noqa: E402

from governance.anvil import ANVIL_KEY, Anvil  # noqa: E402
from governance.chain import Chain, Deployment, address_of  # noqa: E402
from governance.directives import DirectiveKind, QueueSource, campaign_key  # noqa: E402
from governance.watcher import Watcher  # noqa: E402
from node.anchoring.chain_home import deploy_for_node, load_key, save_deployment  # noqa: E402
from node.campaign.config import Budget, CampaignConfig  # noqa: E402
from node.campaign.scheduler import RunSummary  # noqa: E402
from node.cli.daemon import chain_acks  # noqa: E402
from node.governed.obey import GovernedNode, governed_node, sources_from_settings  # noqa: E402
from node.runtime import Node, open_node  # noqa: E402
from node.settings import load_settings  # noqa: E402
from node.store import CampaignRow, Store  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--settle", type=float, default=3.0, help="seconds of training first")
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument("--poll", type=float, default=None, help="serve, polling every S s")
    parser.add_argument("--chain", action="store_true", help="directives from anvil")
    parser.add_argument("--trials", type=int, default=5, help="--chain: rounds of both kinds")
    args = parser.parse_args()
    if args.chain:
        return on_chain(args)
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


class Dao:
    """The deployer as the only token holder (self-delegated), proposing and voting from
    its wallet; a keeper queues and executes; blocks and time move with anvil's methods."""

    def __init__(self, chain: Chain, deployment: Deployment, key: bytes) -> None:
        self.chain, self.key = chain, key
        self.gov = chain.contract("DaoGovernor", deployment.addresses["DaoGovernor"])
        self.ctl = chain.contract("CampaignController", deployment.addresses["CampaignController"])
        self.delay = int(
            chain.contract("DaoTimelock", deployment.addresses["DaoTimelock"])
            .functions.getMinDelay()
            .call()
        )
        token = chain.contract("GovToken", deployment.addresses["GovToken"])
        chain.send(key, token.functions.delegate(address_of(key)))

    def mine(self, blocks: int) -> None:
        self.chain.rpc("anvil_mine", [hex(blocks)])

    def ready(self, calldata: bytes, description: str) -> int:
        """Propose one controller call, vote it through, queue it and let the timelock's
        delay pass; the proposal id, ready to execute."""
        f = self.gov.functions
        args = ([self.ctl.address], [0], [calldata])
        self.chain.send(self.key, f.propose(*args, description))
        pid = int(f.hashProposal(*args, keccak(text=description)).call())
        self.mine(int(f.votingDelay().call()) + 1)
        self.chain.send(self.key, f.castVote(pid, 1))
        self.mine(int(f.proposalDeadline(pid).call()) - self.chain.head() + 1)
        self.chain.send(self.key, self.gov.get_function_by_signature("queue(uint256)")(pid))
        self.chain.rpc("evm_increaseTime", [self.delay + 1])
        self.mine(1)
        return pid

    def execute_call(self, pid: int) -> Any:
        return self.gov.get_function_by_signature("execute(uint256)")(pid)

    def call(self, function: str, campaign: str) -> bytes:
        data = self.ctl.encode_abi(function, args=[campaign_key(campaign)])
        return bytes.fromhex(data[2:])

    def register(self, campaign: CampaignRow) -> None:
        """Register the campaign with its config hash (a governed node runs only that)."""
        config_hash = bytes.fromhex(campaign.config_hash.removeprefix("sha256:"))
        args = [campaign_key(campaign.id), config_hash, ""]
        data = self.ctl.encode_abi("registerCampaign", args=args)
        pid = self.ready(bytes.fromhex(data[2:]), f"register {campaign.id}")
        self.chain.send(self.key, self.execute_call(pid))


def p95(values: list[float]) -> float:
    """The nearest-rank 95th percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def on_chain(args: argparse.Namespace) -> int:
    poll = args.poll if args.poll is not None else 1.0
    anvil = Anvil()  # ANVIL_KEY: deployer, holder and guardian
    try:
        anvil.start()
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 2
    stop_serving = threading.Event()
    server: threading.Thread | None = None
    try:
        url = anvil.url
        chain = Chain.connect(url)
        home = args.home or Path(tempfile.mkdtemp(prefix="asi-bench-gov-chain-"))
        open_node(home, create=True).store.close()
        deployment = deploy_for_node(chain, ANVIL_KEY, load_key(home), fund_node_wei=10**19)
        save_deployment(home, deployment)
        env = {"ASI_NODE_CHAIN__RPC_URL": url, "ASI_NODE_GOVERNANCE__POLL_SECONDS": str(poll)}
        settings = load_settings(home, env=env)
        node = Node(settings, Store.open(settings.database_url))
        # Enough candidates that the campaign never finishes between pauses.
        cfg = CampaignConfig(
            preset="quick", baselines=("deltanet",), budget=Budget(max_candidates=100)
        )
        camp = node.store.create_campaign(f"bench-{int(time.time())}", cfg.model_dump(mode="json"))
        dao = Dao(chain, deployment, ANVIL_KEY)
        dao.register(camp)
        sources = sources_from_settings(settings, node.store)
        governed = governed_node(node, [camp.id], sources)
        acks = chain_acks(node, sources)
        server = threading.Thread(target=governed.serve, args=(stop_serving, poll, acks))
        server.start()
        print(
            f"anvil {url} (a block per transaction), node home {home}, campaign {camp.id}, "
            f"quick preset, CPU sandbox, polling every {poll:g} s",
            flush=True,
        )
        latencies: dict[str, list[float]] = {"guardian pause": [], "DAO execute": []}
        workspaces = Path(settings.home) / "workspaces"
        for trial in range(args.trials):
            for kind in latencies:
                running = _training(node, camp.id, workspaces)
                if running is None:
                    print("no training sandbox started within 120 s", file=sys.stderr)
                    return 1
                if kind == "DAO execute":
                    pid = dao.ready(dao.call("pauseCampaign", camp.id), f"pause {trial}")
                    call = dao.execute_call(pid)
                else:
                    call = dao.ctl.functions.pauseCampaign(campaign_key(camp.id))
                # A random phase against the node's polls, or every trial would land at
                # the same point of the poll cycle.
                time.sleep(args.settle + random.uniform(0, poll))
                signed = chain.sign(ANVIL_KEY, call)
                sent = time.monotonic()
                chain.broadcast(signed.raw)  # anvil mines it into a block at once
                while node.store.get_experiment(running).status == "running":
                    time.sleep(0.005)
                latency = time.monotonic() - sent
                latencies[kind].append(latency)
                block = chain.wait(signed.tx_hash).block_number
                print(
                    f"trial {trial + 1}: {kind} in block {block} -> training stopped and "
                    f"requeued {latency:.3f} s",
                    flush=True,
                )
                resume = dao.ready(dao.call("resumeCampaign", camp.id), f"resume {trial} {kind}")
                chain.send(ANVIL_KEY, dao.execute_call(resume))
                dao.mine(settings.governance.confirmations)
        for kind, values in latencies.items():
            print(
                f"{kind} block -> training stopped: median {statistics.median(values):.3f} s, "
                f"p95 {p95(values):.3f} s over {len(values)} trials (poll interval {poll:g} s)"
            )
        return 0
    finally:
        stop_serving.set()
        if server is not None:
            server.join()
        anvil.stop()


def _training(node: Node, campaign: str, workspaces: Path) -> str | None:
    """The experiment whose training sandbox is running (waiting up to 120 s for one)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        running = node.store.list_experiments(campaign, status="running")
        if running and (workspaces / running[0].id / "train").exists():
            return running[0].id
        time.sleep(0.05)
    return None


if __name__ == "__main__":
    raise SystemExit(main())
