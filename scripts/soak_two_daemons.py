"""Two daemons on one PostgreSQL campaign, one of them killed with SIGKILL again and again.

Each daemon has its own home, key and log (`log_database_url`: a SQLite file in its
home); both share the campaign's tables in a fresh PostgreSQL schema made for the run
and dropped after it. Daemon B is killed at a random moment and started again, `--kills`
times: one kill in five lands in its start-up, the others up to `--max-gap` seconds after
it began running the campaign (mid-proposal, mid-training, mid-record); then both
finish the campaign and stop with SIGTERM.
The script checks that no experiment was lost (every one finished, every finished one
in a log) or recorded twice (across both logs), exports both logs and runs `asi-node
audit` on each, and prints the figures as one JSON object. Exit 0 when all hold.

    .venv/bin/python scripts/soak_two_daemons.py --kills 50
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa

from governance.anvil import free_port
from node.campaign.config import Budget, CampaignConfig
from node.store import Store
from node.tlog.log import LogView
from node.tlog.records import logged_experiments

SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
ASI_NODE = Path(sys.executable).with_name("asi-node")


def node_env(home: Path, url: str, port: int, lease_s: float) -> dict[str, str]:
    # The daemons are configured as an operator would: through their environment.
    return {
        **os.environ,  # noqa: TID251
        "ASI_NODE_HOME": str(home),
        "ASI_NODE_DATABASE_URL": url,
        "ASI_NODE_LOG_DATABASE_URL": f"sqlite:///{home / 'log.db'}",
        "ASI_NODE_API__PORT": str(port),
        "ASI_NODE_LOOP__WORKERS": "1",
        "ASI_NODE_LOOP__THREADS_PER_WORKER": "1",
        "ASI_NODE_LOOP__LEASE_SECONDS": str(lease_s),
        "ASI_NODE_LOOP__LEASE_RENEW_SECONDS": str(lease_s / 5),
        "ASI_NODE_GOVERNANCE__POLL_SECONDS": "0.2",
    }


class Daemon:
    """One `asi-node daemon` process of a home, its output appended to a file."""

    def __init__(self, name: str, env: dict[str, str], out: Path) -> None:
        self.name, self.env, self.out = name, env, out
        self.proc: subprocess.Popen[bytes] | None = None
        self._mark = 0

    def start(self) -> None:
        self._mark = self.out.stat().st_size if self.out.exists() else 0
        with self.out.open("ab") as fh:
            self.proc = subprocess.Popen(
                [str(ASI_NODE), "daemon"], env=self.env, stdout=fh, stderr=subprocess.STDOUT
            )

    def wait_running(self, timeout_s: float = 120.0) -> None:
        """Until this start's output says it runs the campaign (or it died, or timed out)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.proc.poll() is None:
            with self.out.open("rb") as fh:
                fh.seek(self._mark)
                if b"obeying" in fh.read():
                    return
            time.sleep(0.2)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout_s: float = 120.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout_s)


def cli(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ASI_NODE), *argv], env=env, capture_output=True, text=True)


def soak(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    schema = "asi_soak_" + secrets.token_hex(4)
    url = f"{args.server}?options={quote(f'-csearch_path={schema}')}"
    admin = sa.create_engine(args.server)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    work = Path(tempfile.mkdtemp(prefix="asi-soak-"))
    try:
        envs = {}
        for name in ("a", "b"):
            env = node_env(work / name, url, free_port(), args.lease_seconds)
            done = cli(env, "init")
            if done.returncode != 0:
                raise SystemExit(f"init of node {name} failed: {done.stderr}")
            envs[name] = env
        config = CampaignConfig(
            preset="quick",
            train_steps=args.train_steps,
            baselines=("deltanet",),
            rerun_seeds=(),
            budget=Budget(max_candidates=args.candidates, max_rerun_candidates=0),
        )
        with Store.open(url) as store:
            campaign = store.create_campaign("soak", config.model_dump(mode="json")).id
        a = Daemon("a", envs["a"], work / "a.out")
        b = Daemon("b", envs["b"], work / "b.out")
        started = time.monotonic()
        a.start()
        b.start()
        kills = 0
        with Store.open(url) as store:

            def finished() -> bool:
                return store.get_campaign(campaign).status == "done"

            while kills < args.kills and not finished():
                if rng.random() < 0.2:
                    time.sleep(rng.uniform(0.0, 3.0))  # in its start-up
                else:
                    b.wait_running()
                    time.sleep(rng.uniform(args.min_gap, args.max_gap))
                b.kill()
                kills += 1
                b.start()
            deadline = time.monotonic() + args.finish_timeout
            while not finished() and time.monotonic() < deadline:
                time.sleep(1.0)
            complete = finished()
            codes = {"a": a.stop(), "b": b.stop()}
            wall_s = time.monotonic() - started
            exps = store.list_experiments(campaign)
            cands = store.list_candidates(campaign)
            recoveries = store.list_events(campaign, kind="crash_recovery")
        logs: dict[str, dict[str, Any]] = {}
        seen: Counter[str] = Counter()
        audits = {}
        for name, env in envs.items():
            with Store.open(env["ASI_NODE_LOG_DATABASE_URL"]) as log_store:
                view = LogView(log_store)
                recorded = logged_experiments(view, view.size)
                entries = [
                    e.subject
                    for e in view.entries(0, view.size)
                    if e.kind == "experiment" and e.subject is not None
                ]
            seen.update(entries)
            logs[name] = {"entries": len(entries), "records": len(recorded)}
            bundle = work / f"{name}.bundle.json"
            exported = cli(env, "log", "export", str(bundle))
            audited = cli(env, "audit", str(bundle)) if exported.returncode == 0 else exported
            audits[name] = audited.returncode
            if audited.returncode != 0:
                print(audited.stdout + audited.stderr, file=sys.stderr)
        statuses = Counter(str(e.status) for e in exps)
        unfinished = [e.id for e in exps if e.status not in ("done", "failed")]
        unrecorded = [e.id for e in exps if e.status in ("done", "failed") and not seen[e.id]]
        orphans = [c.id for c in cands if not any(e.candidate_id == c.id for e in exps)]
        duplicates = sorted(i for i, n in seen.items() if n > 1)
        strangers = sorted(set(seen) - {e.id for e in exps})
        report = {
            "kills": kills,
            "complete": complete,
            "wall_s": round(wall_s, 1),
            "candidates": len(cands),
            "experiments": len(exps),
            "statuses": dict(statuses),
            "failure_classes": dict(Counter(e.failure_class for e in exps if e.failure_class)),
            "interrupted_failures": sum(1 for e in exps if e.failure_class == "interrupted"),
            "recoveries": len(recoveries),
            "requeued_by_recovery": sum(len(r.payload["requeued"]) for r in recoveries),
            "lost": len(unfinished) + len(unrecorded) + len(orphans),
            "duplicates": len(duplicates) + len(strangers),
            "logs": logs,
            "audit_exit_codes": audits,
            "daemon_exit_codes": codes,
            "over_budget": sum(1 for c in cands if c.origin != "baseline") > args.candidates,
        }
        report["ok"] = (
            complete
            and kills == args.kills
            and report["lost"] == 0
            and report["duplicates"] == 0
            and not report["over_budget"]
            and all(code == 0 for code in audits.values())
        )
        if not report["ok"]:
            report["work_dir"] = str(work)  # kept for a look at the daemons' output
        if complete and kills < args.kills:
            report["note"] = "the campaign finished before every kill: raise --candidates"
        return report
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=50)
    p.add_argument("--candidates", type=int, default=60, help="the campaign's budget")
    p.add_argument("--train-steps", type=int, default=20)
    p.add_argument("--lease-seconds", type=float, default=5.0)
    p.add_argument("--min-gap", type=float, default=0.0, help="seconds running before a kill")
    p.add_argument("--max-gap", type=float, default=15.0, help="... at most")
    p.add_argument("--finish-timeout", type=float, default=900.0)
    p.add_argument("--server", default=SERVER, help="PostgreSQL URL (a schema is made in it)")
    p.add_argument("--seed", type=int, default=0)
    report = soak(p.parse_args(argv))
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
