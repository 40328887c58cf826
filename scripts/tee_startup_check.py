"""The daemon's TEE start-up on a fake configfs-tsm: evidence collected before it serves,
bound to the node's key in its exported log; with the provider set and no TEE, a refusal.

The fake is the tests' kernel-like configfs-tsm tree and synthetic AMD chip
(tests/attestation/tee/fake_tee.py; `--fake-tee DIR` names the folder holding it, as the
image check copies it in). Prints one line per finding and exits 0 when all hold:

    .venv/bin/python scripts/tee_startup_check.py
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import signal
import socket
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_daemon_until_it_answers(home: Path, port: int) -> int:
    """`asi-node daemon` in this process; a thread sends SIGTERM once its API answers (or
    after 60 s, so a daemon that never listens cannot hang the caller)."""
    from node.cli.main import main

    handler = signal.getsignal(signal.SIGTERM)

    def stopper() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if signal.getsignal(signal.SIGTERM) is not handler and answers(port):
                break
            time.sleep(0.2)
        if signal.getsignal(signal.SIGTERM) is not handler:
            os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=stopper, name="daemon-stopper")
    thread.start()
    code = main(["--home", str(home), "daemon", "--port", str(port)])
    thread.join(30)
    return code


def set_tee(home: Path, tsm: Path) -> None:
    """The home's `[attestation]` set for SEV-SNP through the configfs-tsm at `tsm` (and
    no sev-guest device), as an operator edits config.toml."""
    values = {
        "provider": '"sev-snp"',
        "tsm_path": json.dumps(str(tsm)),
        "sev_guest_device": json.dumps(str(tsm.parent / "no-sev-guest")),
    }
    path = home / "config.toml"
    head, header, rest = path.read_text().partition("[attestation]\n")
    section, nxt, tail = rest.partition("\n[")
    lines = [
        f"{key} = {values[key]}" if (key := line.split(" = ")[0]) in values else line
        for line in section.splitlines()
    ]
    path.write_text(head + header + "\n".join(lines) + nxt + tail)


def check(work: Path, fake_tee_dir: Path) -> list[str]:
    """The failures (empty: every finding held), each finding printed as it is made."""
    sys.path.insert(0, str(fake_tee_dir))
    from fake_tee import FakeAmd, FakeTsmKernel

    from attestation.audit import ATTESTATION_STEP, audit
    from attestation.tee import collect
    from attestation.tee.audit import assess
    from attestation.tee.policy import Policy
    from node.cli.main import main
    from node.runtime import open_node

    failures: list[str] = []

    def finding(ok: bool, text: str) -> None:
        print(f"[{'ok' if ok else 'FAIL'}] {text}", flush=True)
        if not ok:
            failures.append(text)

    home = work / "home"
    if main(["--home", str(home), "init"]) != 0:
        return ["init failed"]
    amd = FakeAmd()
    kernel = FakeTsmKernel(work / "tsm" / "report", amd)
    real_fs = collect.OsReportFs
    set_tee(home, kernel.root)
    collect.OsReportFs = lambda: kernel  # type: ignore[assignment,misc]
    try:
        code = run_daemon_until_it_answers(home, free_port())
    finally:
        collect.OsReportFs = real_fs  # type: ignore[misc]
    finding(code == 0 and kernel.report_reads == 1, f"daemon collected evidence (exit {code})")

    bundle = work / "log.bundle"
    main(["--home", str(home), "log", "export", str(bundle)])
    report = audit(bundle.read_bytes(), str(bundle))
    log = report.log
    checks = [step for step in report.steps if step.name != ATTESTATION_STEP]
    finding(
        log is not None and all(s.ok for s in checks), "the exported log passes audit's log checks"
    )
    # With AMD's roots pinned, audit refuses the synthetic chip there, and only there.
    step = next((s for s in report.steps if s.name == ATTESTATION_STEP), None)
    refused_root = step is not None and not step.ok and "pinned AMD root" in step.detail
    finding(refused_root, f"audit's attestation step: {step.detail if step else 'absent'}")
    if log is None or log.attestation_evidence is None:
        return [*failures, "no evidence in the log"]
    key = open_node(home).node_key().public.raw.hex()
    binding = json.loads(log.attestation_evidence)["binding"]
    finding(binding["log_public_key"] == key == log.public_key_hex, "evidence binds the log key")
    verdict = assess(
        log.attestation_evidence,
        log_public_key=key,
        policy=Policy.default(),
        at=datetime.now(UTC),
        pinned_arks=amd.pins,  # the synthetic chip's root, pinned as AMD's are
    )
    finding(verdict.status == "verified", f"evidence {verdict.status}: {verdict.detail}")

    refused = work / "refused"
    main(["--home", str(refused), "init"])
    set_tee(refused, work / "absent" / "report")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["--home", str(refused), "daemon", "--port", str(free_port())])
    reason = err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else ""
    finding(code == 2 and "gave no evidence" in reason, f"without a TEE: {reason}")
    return failures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--fake-tee",
        type=Path,
        default=ROOT / "tests" / "attestation" / "tee",
        help="the folder holding fake_tee.py",
    )
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="asi-tee-") as work:
        failures = check(Path(work), args.fake_tee)
    print("tee start-up: " + ("PASS" if not failures else f"FAIL ({len(failures)})"))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
