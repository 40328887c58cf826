"""Anchoring cost and latency on anvil: gas per anchored experiment, checkpoint -> confirmed.

Starts anvil (from contracts/node_modules) on a loopback port with a fixed block time,
deploys the contract set through `asi-node chain deploy`'s code, and feeds the outbox one
checkpoint per `--batch-size` log entries (default 100, the log's checkpoint_every). Prints
the gas of each anchor (which stores its root and checks the root it extends) divided by
the entries it covers, and the time from handing the checkpoint to the publisher until it
is confirmed `--confirmations` deep.

    .venv/bin/python scripts/bench_anchor.py --checkpoints 5 --block-time 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from governance.anvil import ANVIL_KEY, Anvil  # noqa: E402
from governance.chain import Chain, Controller, new_private_key  # noqa: E402
from node.anchoring.chain_home import deploy_for_node  # noqa: E402
from node.anchoring.evm import AnchorPublisher, Backoff  # noqa: E402
from node.settings import ChainSettings  # noqa: E402
from node.store import Outbox, Store  # noqa: E402


def main() -> int:
    defaults = ChainSettings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=int, default=5)
    # One checkpoint per this many log entries (the transparency log's checkpoint_every).
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--confirmations", type=int, default=defaults.confirmations)
    parser.add_argument("--block-time", type=float, default=1.0, help="anvil block time, s")
    parser.add_argument("--poll", type=float, default=0.1, help="publisher poll interval, s")
    args = parser.parse_args()
    anvil = Anvil(extra=["--block-time", str(args.block_time)])
    try:
        anvil.start()
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        chain = Chain.connect(anvil.url)
        node_key = new_private_key()
        deployment = deploy_for_node(chain, ANVIL_KEY, node_key, fund_node_wei=10**18)
        controller = Controller(chain, deployment.addresses["CampaignController"])
        with tempfile.TemporaryDirectory(prefix="bench-anchor-") as tmp:
            store = Store.open(f"sqlite:///{tmp}/node.db")
            publisher = AnchorPublisher(
                Outbox(store),
                controller,
                node_key,
                confirmations=args.confirmations,
                backoff=Backoff(0.1, 1.0),
            )
            log_id = bytes.fromhex("ab" * 32)
            latencies, gas = [], []
            for i in range(1, args.checkpoints + 1):
                size = i * args.batch_size
                started = time.monotonic()
                publisher.submit(log_id, size, size.to_bytes(32, "big"))
                while publisher.outbox.get(log_id, size).status != "confirmed":
                    publisher.step()
                    time.sleep(args.poll)
                latencies.append(time.monotonic() - started)
                gas.append(publisher.outbox.get(log_id, size).gas_used or 0)
                print(
                    f"checkpoint {i}: size {size}, gas {gas[-1]} "
                    f"({gas[-1] / args.batch_size:.0f} per experiment), "
                    f"confirmed after {latencies[-1]:.2f} s",
                    flush=True,
                )
            store.close()
    finally:
        anvil.stop()
    steady = gas[1:] or gas
    print(
        f"batch size {args.batch_size}: gas per anchored experiment "
        f"{statistics.mean(steady) / args.batch_size:.0f} (steady state, "
        f"{statistics.mean(steady):.0f} gas per anchor; the log's first anchor, which "
        f"creates its head, {gas[0] / args.batch_size:.0f})"
    )
    print(
        f"checkpoint -> confirmed anchor ({args.confirmations} confirmations, "
        f"{args.block_time:g} s blocks): median {statistics.median(latencies):.2f} s, "
        f"max {max(latencies):.2f} s over {len(latencies)} checkpoints"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
