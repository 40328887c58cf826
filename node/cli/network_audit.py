"""`asi-node audit-network URL URL ...`: the network's replicated leaderboard checked from
the nodes' URLs (and the chain) alone, with no node home.

Each node's log is read whole and audited as `asi-node audit URL` does (with `--rpc`,
its checkpoints' anchors too); the replicated leaderboard is then recomputed from the
audited records (`attestation.network`), each campaign's replication rule read from a
node's config and checked against the records' config hash, and every node's served
`/network/leaderboard` compared with it. Passes when every log passes and no record or
served row contradicts another. Runs on the light install (no torch).
"""

from __future__ import annotations

import argparse
import json
import urllib.parse
from typing import TYPE_CHECKING, Any

from node.cli.trust import add_anchor_options
from node.errors import ConfigError

if TYPE_CHECKING:
    from attestation.audit import AuditReport
    from attestation.network import AuditedLog, Discovery, Rule


def cmd_audit_network(args: argparse.Namespace) -> int:
    from attestation.audit import AuditReport, audit
    from attestation.network import AuditedLog, compare_served, lineage, node_ids, recompute
    from node.cli.trust import audit_anchors
    from node.tlog.audit_source import AuditSourceError, fetch_json, is_url, read_source

    urls = [u.rstrip("/") for u in args.urls]
    bad = [u for u in urls if not is_url(u)]
    if bad:
        raise ConfigError(f"{bad[0]} is not a node's API URL: write http(s)://host[:port]")
    if len(set(urls)) != len(urls):
        raise ConfigError("a node's URL is given twice")
    if args.rpc and not args.controller:
        raise ConfigError("--rpc needs the CampaignController's address: give --controller")
    reports: dict[str, AuditReport] = {}
    logs: list[AuditedLog] = []
    lines = [f"audit of the network of {len(urls)} node(s)"]
    for url in urls:
        try:
            data = read_source(url, args.timeout)
        except AuditSourceError as exc:
            lines.append(f"  [FAIL] {url}: {exc}")
            reports[url] = AuditReport(source=url, ok=False)
            continue
        report = audit(data, url, require_attestation=args.require_attestation)
        if args.rpc and report.ok:
            audit_anchors(report, args)
        reports[url] = report
        lines.append(_node_line(url, report))
        if report.ok and report.log is not None:
            logs.append(
                AuditedLog(
                    url,
                    report.log.origin,
                    report.log.key_fingerprint,
                    report.attested,
                    report.log.statements,
                    report.log.leaves,
                )
            )
    rules, problems = _rules(logs, args.timeout)
    findings = recompute(logs, rules, require_attested=args.require_attestation)
    problems += findings.problems
    notes = list(findings.notes)
    audited = node_ids(logs)
    for log in logs:
        try:
            served = fetch_json(log.source, "/network/leaderboard", args.timeout)
        except AuditSourceError as exc:
            notes.append(f"{log.source} serves no leaderboard: {exc}")
            continue
        wrong, more = compare_served(findings, audited, log.source, served)
        problems += wrong
        notes += more
    ok = all(r.ok for r in reports.values()) and not problems
    links = lineage(logs)
    if args.json:
        print(
            json.dumps(
                {
                    "ok": ok,
                    "nodes": [r.as_json() for r in reports.values()],
                    "leaderboard": [d.as_json() for d in findings.ranked()],
                    "discoveries": len(findings.discoveries),
                    "lineage": [
                        {"child": c, "experiment": e, "parent_source": ps, "parent": p}
                        for c, e, ps, p in links
                    ],
                    "problems": problems,
                    "notes": notes,
                },
                indent=2,
            )
        )
        return 0 if ok else 1
    lines.append(_board(findings.ranked(), len(findings.discoveries)))
    for child, exp, parent_source, parent in links:
        lines.append(f"  lineage: {exp} ({child}) has parent {parent} ({parent_source})")
    lines += [f"  [FAIL] {p}" for p in problems]
    lines += [f"  [note] {n}" for n in notes]
    lines.append("result: PASS" if ok else "result: FAIL")
    print("\n".join(lines))
    return 0 if ok else 1


def _node_line(url: str, report: AuditReport) -> str:
    from attestation.audit import ANCHOR_STEP

    log = report.log
    if not report.ok or log is None:
        failed = report.failure
        what = f"step {failed.number} ({failed.name}): {failed.detail}" if failed else "failed"
        return f"  [FAIL] {url}: {what}"
    tee = "attested" if report.attested else "not attested"
    chain = next((s.detail for s in report.steps if s.name == ANCHOR_STEP), None)
    anchors = f"; {chain}" if chain else ""
    return (
        f"  [ok  ] {url}: log of {log.key_fingerprint} verified, {log.size} entries, "
        f"{log.records.experiments} experiment records, {tee}{anchors}"
    )


def _rules(logs: list[AuditedLog], timeout_s: float) -> tuple[dict[str, Rule | None], list[str]]:
    """Each replicated campaign's rule, by config hash: its config read from the node
    whose records name it, and checked against the hash."""
    from attestation.network import Rule
    from attestation.schema import ExperimentStatement
    from node.tlog.audit_source import AuditSourceError, fetch_json

    wanted: dict[str, tuple[str, str]] = {}  # config hash -> (node URL, campaign id)
    for log in logs:
        for _, stmt in log.statements:
            if isinstance(stmt, ExperimentStatement):
                r = stmt.predicate
                wanted.setdefault(r.config_hash, (log.source, r.campaign_id))
    rules: dict[str, Rule | None] = {}
    problems = []
    for config_hash, (url, campaign_id) in wanted.items():
        path = f"/campaigns/{urllib.parse.quote(campaign_id, safe='')}"
        try:
            answer = fetch_json(url, path, timeout_s)
            rules[config_hash] = Rule.of_config(answer["config"], config_hash)
        except AuditSourceError as exc:
            problems.append(f"the config of campaign {campaign_id} cannot be read: {exc}")
        except (KeyError, TypeError, ValueError) as exc:
            problems.append(f"{url}{path}: {exc}")
    return rules, problems


def _board(rows: list[Discovery], total: int) -> str:
    if not rows:
        return f"  no replicated discoveries among {total} discoveries"
    out = [f"  replicated leaderboard ({len(rows)} of {total} discoveries):"]
    for i, d in enumerate(rows, 1):
        by = ", ".join(
            f"{r.node_id} ({r.source}, mean {r.fitness:+.4f})"
            for r in d.replications
            if r.outcome == "replicated" and r.fitness is not None
        )
        out.append(
            f"  {i:>3}. {d.record.candidate.name} {d.record.experiment_id} "
            f"fitness {d.fitness:+.4f} found by {d.source}; replicated by {by}"
        )
        for r in d.replications:
            if r.outcome != "replicated":
                out.append(f"       {r.outcome} by {r.node_id} ({r.source})")
    return "\n".join(out)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "audit-network",
        help="check the network's replicated leaderboard from the nodes' URLs and the chain",
    )
    p.add_argument("urls", nargs="+", metavar="URL", help="the nodes' API base URLs")
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.add_argument(
        "--require-attestation",
        action="store_true",
        help="fail a node without verified TEE evidence; count only attested replications",
    )
    add_anchor_options(
        p,
        rpc="also check every log's anchors on this chain (JSON-RPC URL)",
        controller="CampaignController address (with --rpc; required)",
    )
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    p.set_defaults(func=cmd_audit_network)
