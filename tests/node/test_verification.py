"""Verification stages: the top k by lower bound re-trained on every seed beside
parameter-matched baselines, records linked to the records they verify, checked by audit."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from fakes import SETS, FakeEngineer

from attestation.audit import audit
from attestation.dsse import Envelope
from attestation.errors import VerificationError
from attestation.keys import NodeKey
from attestation.merkle import leaf_hash
from attestation.records import check_records
from attestation.schema import ExperimentRole, ExperimentStatus, parse_statement
from loop.engineer import EvalResult, ExperimentJob
from node.campaign.config import Budget, CampaignConfig, Verify
from node.campaign.leaderboard import Standing, for_campaign
from node.campaign.scheduler import CampaignRunner
from node.campaign.tasks import build_backbone
from node.campaign.verification import (
    WIDTH_OPTION,
    at_width,
    baseline_params,
    lower_bound,
    matched_width,
    pooled_spread,
    stage_config,
)
from node.errors import ConfigError
from node.store import CampaignRow, Store
from node.tlog.log import NodeLog
from node.tlog.records import EXPERIMENT_KIND, Recorder

BASELINES = ("deltanet", "linear")
BIG = "# a candidate with more weights\n"  # the sized fake reads this marker


class SizedEngineer(FakeEngineer):
    """FakeEngineer that reports non-embedding parameters: the baselines' real counts at
    the job's width, 60,000 for code marked BIG (far from DeltaNet's 35,456), else
    DeltaNet's own count."""

    def run(self, job: ExperimentJob, cancel: threading.Event | None = None) -> EvalResult:
        result = super().run(job, cancel)
        name = "deltanet" if "DeltaNet as Mixer" in job.code else "linear"
        if "kernels.baselines" in job.code:
            params = baseline_params(name, job.backbone)
        else:
            params = 60_000 if BIG in job.code else baseline_params("deltanet", job.backbone)
        metrics = result.metrics | {"params_non_embedding": float(params)}
        return EvalResult(None, "", metrics=metrics, timings=result.timings)


@pytest.fixture
def world() -> Iterator[tuple[Store, NodeLog, Recorder]]:
    with Store.open("sqlite://") as store:
        tlog = NodeLog(store, NodeKey.generate(), checkpoint_every=1000)
        yield store, tlog, Recorder(tlog, store)


def _run(store: Store, recorder: Recorder, camp: CampaignRow, engineer: FakeEngineer) -> None:
    recorder.campaign_start(camp)
    summary = CampaignRunner(
        store,
        camp,
        engineer,  # type: ignore[arg-type]
        workers=2,
        threads_per_worker=1,
        node_secret=b"s" * 32,
        recorder=recorder,
    ).run()
    recorder.campaign_stop(camp, summary.reason)


def _explore(store: Store, recorder: Recorder, engineer: FakeEngineer) -> CampaignRow:
    config = CampaignConfig(
        preset="quick", baselines=BASELINES, budget=Budget(max_candidates=6), promote_margin=0.05
    )
    camp = store.create_campaign("explore", config.model_dump(mode="json"))
    _run(store, recorder, camp, engineer)
    return camp


def _stage(store: Store, tlog: NodeLog, source: str, **verify: Any) -> CampaignRow:
    config = CampaignConfig(
        preset="full", baselines=BASELINES, verify=Verify(source=source, **verify)
    )
    staged = stage_config(store, tlog, config)
    return store.create_campaign("verify", staged.model_dump(mode="json"))


def test_the_lower_bound_floors_the_spread_at_the_seed_noise() -> None:
    assert lower_bound([0.1], z=2.0, seed_noise=0.01) == pytest.approx(0.08)
    assert lower_bound([0.1, 0.1, 0.1], z=2.0, seed_noise=0.01) == pytest.approx(
        0.1 - 2 * 0.01 / 3**0.5
    )
    # A wide spread over seeds costs more than the floor.
    assert lower_bound([0.0, 0.2], z=1.0, seed_noise=0.01) == pytest.approx(0.0, abs=1e-12)


def test_the_noise_of_a_single_seed_is_pooled_from_the_campaigns_reruns() -> None:
    assert pooled_spread([[0.1], [0.2]]) == 0.0  # nothing re-run: nothing measured
    runs = [[0.0, 0.2], [0.1, 0.1, 0.4], [0.3]]
    dof = 1 + 2
    expected = ((0.02 * 1 + 0.03 * 2) / dof) ** 0.5
    assert pooled_spread(runs) == pytest.approx(expected)


def test_matched_widths_come_within_the_tolerance() -> None:
    backbone = build_backbone(CampaignConfig(preset="quick"))
    plain = baseline_params("deltanet", backbone)
    assert matched_width("deltanet", plain, backbone, 0.05) is None
    for target in (20_000, 60_000):
        width = matched_width("deltanet", target, backbone, 0.05)
        assert width is not None and width % backbone.n_heads == 0
        count = baseline_params("deltanet", at_width(backbone, width))
        assert abs(count - target) <= 0.05 * target
    with pytest.raises(ValueError, match="no width of deltanet"):
        matched_width("deltanet", 10, backbone, 0.05)


def test_a_stage_retrains_the_top_k_on_every_seed_beside_matched_baselines(
    world: tuple[Store, NodeLog, Recorder],
) -> None:
    store, tlog, recorder = world
    explore = _explore(store, recorder, FakeEngineer(best=0.9))
    stage = _stage(store, tlog, explore.id, top_k=2, z=1.0)
    config = CampaignConfig.model_validate(stage.config)
    assert config.verify is not None and len(config.verify.selected) == 2
    chosen = config.verify.selected
    # Ranked by the lower bound over every seed the exploration scored.
    assert chosen[0].lower_bound >= chosen[1].lower_bound
    engineer = SizedEngineer(best=0.9)  # every candidate at DeltaNet's size: no matching
    _run(store, recorder, stage, engineer)

    exps = store.list_experiments(stage.id)
    cands = {c.id: c for c in store.list_candidates(stage.id)}
    by_name: dict[str, set[int]] = {}
    for e in exps:
        assert e.status is ExperimentStatus.DONE
        by_name.setdefault(cands[e.candidate_id].name, set()).add(e.seed)
    for chosen_one in chosen:
        assert by_name[chosen_one.name] == {0, 1, 2}
    assert by_name["deltanet"] == by_name["linear"] == {0, 1, 2}
    # Nothing proposed: the stage trains only what was chosen and the baselines.
    generated = [c for c in cands.values() if c.origin != "baseline"]
    assert sorted(c.name for c in generated) == sorted(c.name for c in chosen)
    roles = {(cands[e.candidate_id].name, e.seed): e.role for e in exps}
    assert roles[(chosen[0].name, 0)] is ExperimentRole.CANDIDATE
    assert roles[(chosen[0].name, 1)] is ExperimentRole.RERUN
    # Every record of the stage's candidates names the exploration record it verifies.
    records = [
        json.loads(Envelope.from_bytes(e.envelope).payload)["predicate"]
        for e in tlog.db.entries(0, tlog.db.size())
        if e.kind == EXPERIMENT_KIND
    ]
    linked = [r for r in records if r["campaign_id"] == stage.id and r["verifies"]]
    assert len(linked) == 2 * 3
    for r in linked:
        pick = next(c for c in chosen if c.code_digest == r["code_digest"])
        assert r["verifies"] == {
            "campaign_id": explore.id,
            "experiment_id": pick.experiment_id,
            "leaf_hash": pick.leaf_hash,
        }
    report = audit(tlog.export().to_bytes(), "staged")
    assert report.ok, report.render()
    assert "6 verification record(s) linked" in report.render()


def test_a_bigger_candidate_is_scored_against_a_reference_of_its_size(
    world: tuple[Store, NodeLog, Recorder],
) -> None:
    store, tlog, recorder = world

    class BigCandidates(SizedEngineer):
        def run(self, job: ExperimentJob, cancel: threading.Event | None = None) -> EvalResult:
            if "kernels.baselines" not in job.code:
                job = ExperimentJob(**{**job.__dict__, "code": BIG + job.code})
            return super().run(job, cancel)

    explore = _explore(store, recorder, FakeEngineer(best=0.9))
    stage = _stage(store, tlog, explore.id, top_k=1)
    _run(store, recorder, stage, BigCandidates(best=0.9))
    backbone = build_backbone(CampaignConfig.model_validate(stage.config))
    cands = {c.id: c for c in store.list_candidates(stage.id)}
    width = matched_width("deltanet", 60_000, backbone, 0.05)
    assert width is not None
    matched = [c for c in cands.values() if c.options.get(WIDTH_OPTION)]
    linear = matched_width("linear", 60_000, backbone, 0.05)
    assert {c.name for c in matched} == {f"deltanet@d{width}", f"linear@d{linear}"}
    assert all(c.origin == "baseline" for c in matched)
    exps = store.list_experiments(stage.id)
    ref = next(c for c in matched if c.name.startswith("deltanet@"))
    assert {e.seed for e in exps if e.candidate_id == ref.id} == {0, 1, 2}
    # The candidate's fitness is against the matched reference on the same seed.
    verified = next(c for c in cands.values() if c.origin != "baseline")
    for e in exps:
        if e.candidate_id != verified.id:
            continue
        ref_exp = next(r for r in exps if r.candidate_id == ref.id and r.seed == e.seed)
        assert e.fitness is not None and ref_exp.metrics is not None and e.metrics is not None
        assert e.fitness == pytest.approx(e.metrics["mean_acc"] - ref_exp.metrics["mean_acc"])
        assert f"vs deltanet@d{width}" in (e.analysis or "")


def test_a_lucky_exploration_winner_is_not_promoted_when_its_seeds_lose(
    world: tuple[Store, NodeLog, Recorder],
) -> None:
    store, tlog, recorder = world

    class LuckyOnce(FakeEngineer):
        """Exploration scores as FakeEngineer; the stage's runs of generated code lose."""

        def run(self, job: ExperimentJob, cancel: threading.Event | None = None) -> EvalResult:
            result = super().run(job, cancel)
            if "kernels.baselines" in job.code:
                return result
            metrics = {f"acc_{s}": 0.5 for s in SETS} | {
                "mean_acc": 0.5,
                "state_size": 4096.0,
                "params": 20000.0,
            }
            return EvalResult(None, "", metrics=metrics, timings=result.timings)

    explore = _explore(store, recorder, FakeEngineer(best=0.9))
    stage = _stage(store, tlog, explore.id, top_k=2)
    _run(store, recorder, stage, LuckyOnce(best=0.9))
    rows = for_campaign(store, store.get_campaign(stage.id))
    generated = [r for r in rows if r.origin != "baseline"]
    assert len(generated) == 2 and all(r.seeds == 3 for r in generated)
    assert all(r.status is Standing.SCORED for r in generated)
    assert all(r.fitness is not None and r.fitness < 0 for r in generated)


def test_bad_stage_configs_are_named(world: tuple[Store, NodeLog, Recorder]) -> None:
    store, tlog, recorder = world
    with pytest.raises(ConfigError, match="no such campaign"):
        _stage(store, tlog, "camp-nope")
    explore = _explore(store, recorder, FakeEngineer(best=0.9))
    with pytest.raises(ConfigError, match="no scored candidate with a lower bound above"):
        _stage(store, tlog, explore.id, min_lower_bound=5.0)
    chosen = stage_config(
        store, tlog, CampaignConfig(baselines=BASELINES, verify=Verify(source=explore.id))
    )
    assert chosen.verify is not None
    with pytest.raises(ConfigError, match="filled in by the node"):
        stage_config(store, tlog, chosen)
    with pytest.raises(ValueError, match="at least 3 seeds"):
        CampaignConfig(rerun_seeds=(1,), verify=Verify(source=explore.id))


def test_the_audit_rule_fails_a_link_to_a_record_it_does_not_verify(
    world: tuple[Store, NodeLog, Recorder],
) -> None:
    store, tlog, recorder = world
    explore = _explore(store, recorder, FakeEngineer(best=0.9))
    stage = _stage(store, tlog, explore.id, top_k=1)
    _run(store, recorder, stage, FakeEngineer(best=0.9))
    entries = tlog.db.entries(0, tlog.db.size())
    leaves = [leaf_hash(e.envelope) for e in entries]
    statements = [(e.index, json.loads(Envelope.from_bytes(e.envelope).payload)) for e in entries]
    at = next(i for i, s in statements if s["predicate"].get("verifies"))
    honest = [(i, parse_statement(json.dumps(s).encode())) for i, s in statements]
    node = tlog.node_id
    assert check_records(honest, node, leaves).verifications == 3

    def forged(**change: str) -> list[tuple[int, Any]]:
        out = []
        for i, s in statements:
            if i == at:
                s = json.loads(json.dumps(s))
                s["predicate"]["verifies"] |= change
            out.append((i, parse_statement(json.dumps(s).encode())))
        return out

    with pytest.raises(VerificationError, match="names experiment exp-other"):
        check_records(forged(experiment_id="exp-other"), node, leaves)
    with pytest.raises(VerificationError, match="no earlier experiment record"):
        check_records(forged(leaf_hash="00" * 32), node, leaves)
    with pytest.raises(VerificationError, match="no earlier experiment record"):
        check_records(honest, node)  # without the leaves, a link cannot be checked: fails
