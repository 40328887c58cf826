"""Helpers for log tests: a node log over a store, filled by a real (fake-engineer) campaign."""

from __future__ import annotations

from fakes import FakeEngineer

from attestation.keys import NodeKey
from node.campaign.config import Budget, CampaignConfig
from node.campaign.scheduler import CampaignRunner
from node.store import Store
from node.tlog.log import NodeLog
from node.tlog.records import Recorder


def small_config(candidates: int = 3) -> CampaignConfig:
    return CampaignConfig(
        preset="quick", baselines=("deltanet", "linear"), budget=Budget(max_candidates=candidates)
    )


def run_logged_campaign(
    store: Store, key: NodeKey, name: str = "t", candidates: int = 3, fail_every: int = 0
) -> tuple[NodeLog, str]:
    """Run a campaign with the FakeEngineer, recording into the node log as the node does."""
    tlog = NodeLog(store, key, checkpoint_every=4)
    camp = store.create_campaign(name, small_config(candidates).model_dump(mode="json"))
    recorder = Recorder(tlog, store)
    recorder.campaign_start(camp)
    runner = CampaignRunner(
        store,
        camp,
        FakeEngineer(fail_every=fail_every, best=0.5),  # type: ignore[arg-type]
        workers=1,
        threads_per_worker=1,
        node_secret=b"s" * 32,
        recorder=recorder,
    )
    summary = runner.run()
    recorder.campaign_stop(camp, summary.reason)
    return tlog, camp.id
