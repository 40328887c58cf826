"""The network's replicated leaderboard, recomputed from audited logs alone.

Each node's log has passed `asi-node audit` (and, with a chain, its anchors); this module
reads their experiment records and nothing the nodes say about them:

- a *discovery* is a node's own scored candidate: a finished record of a generated
  candidate (not a baseline, not a peer's import) with a fitness, named by its log and
  leaf (origin line, index, RFC 6962 leaf hash);
- a *replication run* is another node's record whose `replicates` names that leaf; it
  must name the discovery's experiment and state the fitness the discovery's record
  states (else the network audit fails: the replicating node misquoted what it re-ran);
- per replicating node, once its runs cover the campaign's replication seeds (the last
  run of each seed), the discovery is *replicated* when every run finished with a
  fitness whose mean is within the campaign's spread of the stated fitness, and a
  *failed replication* otherwise (`judge_runs`, which the node's own judge uses too);
- a replication by a node of the same log key as the discoverer never counts, and where
  the campaign's rule says `attested` (or the auditor asks) neither does one by a node
  whose log carries no verified TEE evidence;
- `peer_parents` links (a child's parent imported from another node's record) are checked
  against the named log when it is among those audited.

The campaign's rule (replication seeds and spread) comes from its config, which the
caller reads from a node and which must hash to the records' config hash.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from attestation.canonical import json_sha256
from attestation.schema import (
    CandidateOrigin,
    ExperimentRecord,
    ExperimentStatement,
    ExperimentStatus,
    Statement,
)


class Outcome(StrEnum):
    REPLICATED = "replicated"
    FAILED = "failed replication"  # outside the spread, or a run failed
    PENDING = "pending"  # runs still to come


def judge_runs(
    runs: Iterable[tuple[ExperimentStatus, float | None]], stated: float | None, spread: float
) -> tuple[Outcome, float | None]:
    """The outcome of finished runs (each a status and a fitness) against a stated
    fitness, and their mean fitness (None if one failed)."""
    pairs = list(runs)
    scored = [f for status, f in pairs if status is ExperimentStatus.DONE and f is not None]
    if len(scored) < len(pairs) or not scored:
        return Outcome.FAILED, None
    mean = sum(scored) / len(scored)
    if stated is None or abs(mean - stated) > spread:
        return Outcome.FAILED, mean
    return Outcome.REPLICATED, mean


@dataclass(frozen=True)
class Rule:
    """A campaign's replication rule, as its hashed config states it."""

    seeds: tuple[int, ...]
    spread: float
    attested: bool = False  # only replications by nodes under a verified TEE count

    @classmethod
    def of_config(cls, config: Mapping[str, Any], config_hash: str) -> Rule | None:
        """The rule of a campaign config that hashes to `config_hash`; None without a
        `replication` section. ValueError if it hashes to something else."""
        got = "sha256:" + json_sha256(dict(config)).hex()
        if got != config_hash:
            raise ValueError(f"the config served hashes to {got}, the records say {config_hash}")
        section = config.get("replication")
        if not isinstance(section, Mapping):
            return None
        seeds = tuple(int(s) for s in section["seeds"])
        return cls(seeds, float(section["spread"]), bool(section.get("attested", False)))


@dataclass(frozen=True)
class AuditedLog:
    """One node's log, audited: where it was read, and its typed entries."""

    source: str
    origin: str
    key_fingerprint: str
    attested: bool
    statements: Sequence[tuple[int, Statement]]
    leaves: Sequence[bytes]


@dataclass(frozen=True)
class Key:
    """An entry of a log: its origin line, index and leaf hash (hex)."""

    origin: str
    index: int
    leaf_hash: str


@dataclass
class Replication:
    node_id: str
    source: str  # where the replicating node's log was read
    attested: bool
    outcome: Outcome
    fitness: float | None
    experiment_ids: list[str]


@dataclass
class Discovery:
    source: str  # where the discoverer's log was read
    key: Key
    record: ExperimentRecord
    replications: list[Replication] = field(default_factory=list)

    @property
    def fitness(self) -> float | None:
        return self.record.fitness.value if self.record.fitness is not None else None

    @property
    def replicated_by(self) -> list[str]:
        return sorted({r.node_id for r in self.replications if r.outcome is Outcome.REPLICATED})

    def as_json(self) -> dict[str, Any]:
        return {
            "discovered_by": self.record.node_id,
            "source": self.source,
            "campaign_id": self.record.campaign_id,
            "experiment_id": self.record.experiment_id,
            "name": self.record.candidate.name,
            "leaf_index": self.key.index,
            "leaf_hash": self.key.leaf_hash,
            "fitness": self.fitness,
            "replicated_by": self.replicated_by,
            "replications": [
                {
                    "node_id": r.node_id,
                    "source": r.source,
                    "attested": r.attested,
                    "outcome": r.outcome,
                    "fitness": r.fitness,
                    "experiment_ids": r.experiment_ids,
                }
                for r in self.replications
            ],
        }


@dataclass
class NetworkFindings:
    """What the records of the audited logs show, and what contradicts them."""

    discoveries: list[Discovery]
    problems: list[str]  # each one fails the network audit
    notes: list[str]  # links to logs not audited here, and the like

    def ranked(self) -> list[Discovery]:
        """The replicated discoveries, best stated fitness first."""
        rows = [d for d in self.discoveries if d.replicated_by]
        return sorted(rows, key=lambda d: d.fitness if d.fitness is not None else float("-inf"),
                      reverse=True)  # fmt: skip


def _records(log: AuditedLog) -> Iterable[tuple[Key, ExperimentRecord]]:
    for (index, stmt), leaf in zip(log.statements, log.leaves, strict=True):
        if isinstance(stmt, ExperimentStatement):
            yield Key(log.origin, index, leaf.hex()), stmt.predicate


def _is_discovery(r: ExperimentRecord) -> bool:
    return (
        r.status is ExperimentStatus.DONE
        and r.fitness is not None
        and r.candidate.origin not in (CandidateOrigin.BASELINE, CandidateOrigin.PEER)
    )


def recompute(
    logs: Sequence[AuditedLog],
    rules: Mapping[str, Rule | None],
    require_attested: bool = False,
) -> NetworkFindings:
    """The discoveries of `logs` with their replications judged by `rules` (by config
    hash; a config missing from `rules` has none)."""
    problems: list[str] = []
    notes: list[str] = []
    entries: dict[Key, tuple[AuditedLog, ExperimentRecord]] = {}
    discoveries: dict[Key, Discovery] = {}
    origins = {log.origin: log for log in logs}
    for log in logs:
        for key, record in _records(log):
            entries[key] = (log, record)
            if _is_discovery(record):
                discoveries[key] = Discovery(log.source, key, record)
    # Replication runs: (discovery, replicating log) -> the last run per seed.
    runs: dict[tuple[Key, str], dict[int, ExperimentRecord]] = {}
    for log in logs:
        for key, record in _records(log):
            _check_parents(record, key, log, entries, origins, problems, notes)
            link = record.replicates
            if link is None:
                continue
            target = Key(link.log_origin, link.leaf_index, link.leaf_hash)
            where = f"{log.source} entry {key.index}"
            if link.log_origin == log.origin:
                problems.append(f"{where} claims to replicate an entry of its own log")
                continue
            if link.log_origin not in origins:
                notes.append(f"{where} replicates a record of a log not audited here")
                continue
            found = discoveries.get(target)
            if found is None:
                named = origins[link.log_origin].source
                problems.append(
                    f"{where} replicates entry {link.leaf_index} of {named}, which is not a "
                    "discovery of that log with that leaf hash"
                )
                continue
            if link.experiment_id != found.record.experiment_id or link.fitness != found.fitness:
                problems.append(
                    f"{where} names experiment {link.experiment_id} stating fitness "
                    f"{link.fitness}; the entry it names is {found.record.experiment_id}, "
                    f"stating {found.fitness}"
                )
                continue
            runs.setdefault((target, log.origin), {})[record.seeds.train] = record
    for (target, origin), by_seed in runs.items():
        found = discoveries[target]
        log = origins[origin]
        rule = rules.get(found.record.config_hash)
        if rule is None:
            notes.append(
                f"{log.source} re-ran {found.record.experiment_id}, whose campaign has no "
                "replication rule: not judged"
            )
            continue
        if (require_attested or rule.attested) and not log.attested:
            notes.append(f"{log.source} is not attested: its replications do not count")
            continue
        mine = [by_seed[s] for s in rule.seeds if s in by_seed]
        outcome, mean = Outcome.PENDING, None
        if len(mine) == len(rule.seeds):
            pairs = [(r.status, r.fitness.value if r.fitness else None) for r in mine]
            outcome, mean = judge_runs(pairs, found.fitness, rule.spread)
        found.replications.append(
            Replication(
                node_id=mine[0].node_id if mine else next(iter(by_seed.values())).node_id,
                source=log.source,
                attested=log.attested,
                outcome=outcome,
                fitness=mean,
                experiment_ids=[r.experiment_id for r in mine],
            )
        )
    return NetworkFindings(list(discoveries.values()), problems, notes)


def _check_parents(
    record: ExperimentRecord,
    key: Key,
    log: AuditedLog,
    entries: Mapping[Key, tuple[AuditedLog, ExperimentRecord]],
    origins: Mapping[str, AuditedLog],
    problems: list[str],
    notes: list[str],
) -> None:
    """A child's parents imported from peers: each names an entry of an audited log that
    holds that experiment."""
    for parent in record.peer_parents or ():
        where = f"{log.source} entry {key.index}"
        if parent.log_origin not in origins:
            notes.append(f"{where} has a parent in a log not audited here")
            continue
        found = entries.get(Key(parent.log_origin, parent.leaf_index, parent.leaf_hash))
        if found is None or found[1].experiment_id != parent.experiment_id:
            problems.append(
                f"{where} names parent {parent.experiment_id} at entry {parent.leaf_index} of "
                f"{origins[parent.log_origin].source}, which does not hold it"
            )


def lineage(logs: Sequence[AuditedLog]) -> list[tuple[str, str, str, str]]:
    """Every cross-log parent link: (child's source, child experiment, parent's source,
    parent experiment)."""
    origins = {log.origin: log for log in logs}
    out = []
    for log in logs:
        for _, record in _records(log):
            for parent in record.peer_parents or ():
                if parent.log_origin in origins:
                    out.append(
                        (
                            log.source,
                            record.experiment_id,
                            origins[parent.log_origin].source,
                            parent.experiment_id,
                        )
                    )
    return out


def node_ids(logs: Sequence[AuditedLog]) -> set[str]:
    """The node ids the audited logs' records are written under."""
    return {record.node_id for log in logs for _, record in _records(log)}


def compare_served(
    findings: NetworkFindings,
    audited: set[str],
    source: str,
    served: Sequence[Mapping[str, Any]],
) -> tuple[list[str], list[str]]:
    """What a node's served leaderboard (`GET /network/leaderboard`) claims beyond what the
    logs show: problems (a row replicated by an audited node whose records do not show
    it) and notes (by a node whose log was not audited here)."""
    by_id: dict[str, Discovery] = {}
    for d in findings.discoveries:
        by_id.setdefault(d.record.experiment_id, d)
    problems, notes = [], []
    for row in served:
        exp_id = str(row.get("experiment_id"))
        claimed = {str(n) for n in row.get("replicated_by") or ()}
        found = by_id.get(exp_id)
        shown = set(found.replicated_by) if found is not None else set()
        for node in sorted(claimed - shown):
            what = f"{source}'s leaderboard ranks {exp_id} replicated by {node}"
            if node in audited:
                problems.append(f"{what}, which its audited log does not show")
            else:
                notes.append(f"{what}, whose log was not audited here")
    return problems, notes
