"""Benchmark how long workers wait for the LLM in a campaign with researcher = "llm".

A scripted OpenAI-compatible server on 127.0.0.1 (real HTTP, the real client) answers
every chat completion after --llm-seconds: the Researcher with a new valid proposal each
time, the Analyst with an analysis. Experiments are a stand-in Engineer that sleeps
--experiment-seconds and returns plausible MQAR metrics (no training). A real
CampaignRunner runs the campaign (two baselines, then --candidates proposals, no re-runs)
on a SQLite file store with --workers workers.

It prints the workers' idle fraction of the campaign's wall time, and of the steady part
(from the first candidate's start to the last one's end: without the wait for the first
proposals after the baselines and for the last analyses). The same runs with proposals
asked for one at a time when a worker is idle (--old-candidates of them) as the baseline:
the old path made each call on the scheduler's thread, analyses too, so it idled more.

    python scripts/bench_proposals.py [--llm-seconds 20] [--experiment-seconds 10]
        [--workers 2] [--candidates 80] [--old-candidates 6]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a file from a checkout that is not pip-installed
    sys.path.insert(0, str(ROOT))

from loop.engineer import EvalResult, ExperimentJob  # noqa: E402
from loop.llm import ROLES, Endpoint  # noqa: E402
from loop.outcome import FailureClass  # noqa: E402
from node.campaign.config import Budget, CampaignConfig  # noqa: E402
from node.campaign.llm_setup import LLMSetup  # noqa: E402
from node.campaign.scheduler import CampaignRunner  # noqa: E402
from node.store import Store  # noqa: E402

MODEL = "scripted"
SETS = ("64x8", "128x16", "128x32", "256x64")


def mixer(n: int) -> str:
    """A valid mixer module (a scaled running sum), different code for every n."""
    return (
        f'"""Design {n}: a scaled running sum."""\nimport torch\nfrom torch import nn\n\n\n'
        "class Mixer(nn.Module):\n"
        "    def __init__(self, d_model, n_heads, **options):\n"
        "        super().__init__()\n"
        "        self.d = d_model\n"
        f"        self.scale = {1 + n / 1000}\n"
        "        self.proj = nn.Linear(d_model, d_model)\n\n"
        "    def forward(self, x):\n"
        "        return self.proj(torch.cumsum(x, dim=1) * self.scale)\n\n"
        "    def init_state(self, batch):\n"
        "        return (torch.zeros(batch, self.d),)\n\n"
        "    def step(self, x_t, state):\n"
        "        total = state[0] + x_t\n"
        "        return self.proj(total * self.scale), (total,)\n"
    )


def answer(role: str, n: int) -> dict[str, Any]:
    if role == "researcher":
        return {
            "name": f"design-{n}",
            "motivation": f"idea number {n} about topic {n * 7} for acc_128x32",
            "code": mixer(n),
            "diff": "",
        }
    return {
        "results": "acc_256x64 moves with the scale at equal state_size.",
        "comparison": "Close to its parent on acc_128x32.",
        "hypothesis": "The scale sets how fast old pairs fade.",
        "next_step": "Try a learned scale.",
        "insights": ["A larger scale lifts acc_64x8 at equal state_size."],
        "judge": 0.5,
    }


class LLMServer:
    """OpenAI-compatible chat completions on 127.0.0.1, each answered after `seconds`."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.lock = threading.Lock()
        self.served = 0
        self.in_flight = 0
        self.most = 0  # Researcher requests in flight at once
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, obj: dict[str, Any]) -> None:
                data = json.dumps(obj).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._send({"object": "list", "data": [{"id": MODEL, "object": "model"}]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                system = body["messages"][0]["content"]
                role = "researcher" if system.startswith("You are the Researcher") else "analyst"
                with server.lock:
                    server.served += 1
                    n = server.served
                    if role == "researcher":
                        server.in_flight += 1
                        server.most = max(server.most, server.in_flight)
                time.sleep(server.seconds)
                if role == "researcher":
                    with server.lock:
                        server.in_flight -= 1
                content = json.dumps(answer(role, n))
                self._send(
                    {
                        "id": f"chatcmpl-{n}",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": MODEL,
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": content},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 2000, "completion_tokens": 400},
                    }
                )

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    @contextmanager
    def running(self) -> Iterator[LLMServer]:
        thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.httpd.shutdown()
            self.httpd.server_close()


class StandInEngineer:
    """Sleeps for an experiment's length and returns plausible MQAR metrics from the code
    (DeltaNet 0.6, the others 0.3 to 0.8); keeps each experiment's span."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.spans: list[tuple[bool, float, float]] = []  # (candidate, start, end)
        self.lock = threading.Lock()

    def run(self, job: ExperimentJob, cancel: threading.Event | None = None) -> EvalResult:
        start = time.monotonic()
        if (cancel or threading.Event()).wait(self.seconds):
            return EvalResult(FailureClass.INTERRUPTED, "stopped")
        baseline = "kernels.baselines" in job.code
        if "DeltaNet as Mixer" in job.code:
            score = 0.6
        else:
            h = int(hashlib.sha256(job.code.encode()).hexdigest()[:8], 16)
            score = 0.3 + 0.5 * (h % 1000) / 999
        metrics = {f"acc_{s}": score for s in SETS}
        metrics |= {"mean_acc": score, "state_size": 4096.0, "params": 20000.0}
        end = time.monotonic()
        with self.lock:
            self.spans.append((not baseline, start, end))
        timings = {"total_s": end - start, "train_s": end - start}
        return EvalResult(None, "", metrics=metrics, timings=timings)


@dataclass(frozen=True)
class Figures:
    candidates: int
    wall_s: float
    idle: float  # of the workers' time over the campaign's wall time
    steady_idle: float  # from the first candidate's start to the last one's end
    most_calls: int


def run_campaign(
    url: str,
    server: LLMServer,
    store: Store,
    args: argparse.Namespace,
    candidates: int,
    one_at_a_time: bool,
) -> Figures:
    config = CampaignConfig(
        preset="quick",
        baselines=("deltanet", "linear"),
        researcher="llm",
        budget=Budget(max_candidates=candidates, max_rerun_candidates=0),
    )
    camp = store.create_campaign(f"bench-{one_at_a_time}", config.model_dump(mode="json"))
    endpoint = Endpoint(url, MODEL, "unused", timeout_s=args.llm_seconds * 4 + 30, max_retries=0)
    setup = LLMSetup(
        dict.fromkeys(ROLES, endpoint),
        max_parallel_calls=1 if one_at_a_time else args.parallel,
        proposals_ahead=0 if one_at_a_time else None,
    )
    engineer = StandInEngineer(args.experiment_seconds)
    server.most = 0
    runner = CampaignRunner(
        store,
        camp,
        engineer,  # type: ignore[arg-type]
        args.workers,
        1,
        b"s" * 32,
        llm=setup,
    )
    started = time.monotonic()
    summary = runner.run()
    wall = time.monotonic() - started
    if summary.reason != "budget":
        raise SystemExit(f"the campaign ended early: {summary.reason} {summary.detail}")
    busy = sum(end - start for _, start, end in engineer.spans)
    spans = [(start, end) for cand, start, end in engineer.spans if cand]
    first, last = min(s for s, _ in spans), max(e for _, e in spans)
    steady = sum(e - s for s, e in spans) / (args.workers * (last - first))
    return Figures(
        candidates=len(spans),
        wall_s=wall,
        idle=1 - busy / (args.workers * wall),
        steady_idle=1 - steady,
        most_calls=server.most,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--llm-seconds", type=float, default=20.0, help="each LLM answer")
    parser.add_argument("--experiment-seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--candidates", type=int, default=80)
    parser.add_argument(
        "--old-candidates", type=int, default=6, help="for the baseline run; 0 skips it"
    )
    parser.add_argument("--parallel", type=int, default=8, help="max_parallel_calls")
    args = parser.parse_args()
    print(
        f"proposals ahead of need: LLM answers after {args.llm_seconds:g} s (scripted "
        f"OpenAI-compatible server on 127.0.0.1, the real client), experiments of "
        f"{args.experiment_seconds:g} s (a stand-in Engineer that sleeps and returns plausible "
        f"MQAR metrics: no training), {args.workers} workers, 2 baselines, SQLite file store"
    )
    print(
        f"{'proposals':<34} {'candidates':>10} {'wall':>9} {'idle, campaign':>15}"
        f" {'idle, steady':>13} {'researcher calls at once':>25}"
    )
    runs = [(f"ahead (at most {args.parallel} calls at once)", args.candidates, False)]
    if args.old_candidates:
        runs.append(("one call at a time, when idle", args.old_candidates, True))
    with (
        tempfile.TemporaryDirectory(prefix="bench_proposals_") as tmp,
        LLMServer(args.llm_seconds).running() as server,
        Store.open(f"sqlite:///{Path(tmp) / 'bench.db'}") as store,
    ):
        for label, candidates, one_at_a_time in runs:
            f = run_campaign(server.url, server, store, args, candidates, one_at_a_time)
            print(
                f"{label:<34} {f.candidates:>10} {f.wall_s:>8.1f}s {f.idle:>14.1%}"
                f" {f.steady_idle:>13.1%} {f.most_calls:>25}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
