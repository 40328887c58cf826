"""Schemathesis against the app's OpenAPI spec: no input makes the API answer 5xx.

Each operation's strategy is drawn by hypothesis directly (schemathesis' pytest plugin
does not load under this pytest); a handful of examples per operation keeps it short.
The API is driven twice: over a fake Governor, and over the real relay
(`governance.relay.ChainGovernor`) on the embedded EVM with the contracts deployed and
one live proposal, so the relay's own error paths (estimates, reverts) are reached too.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import schemathesis
from dao import Dao
from governor_fake import ControllerFake as FakeGovernor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from governance.ballots import GovernorClient
from governance.chain import Chain, deploy
from governance.deploy_config import DEV_PARAMS
from governance.directives import DirectiveKind
from governance.proposals import DirectiveCall, prepare
from governance.relay import ChainGovernor
from node.api.app import create_app
from node.store import DirectiveLedger, Store

EXAMPLES = 6


def _chain_governor() -> GovernorClient:
    """The real relay on the embedded EVM: contracts deployed, one proposal open."""
    chain = Chain.embedded()
    assert chain.faucet_key is not None
    params = replace(DEV_PARAMS, timelock_delay_s=0, voting_period=10)
    deployment = deploy(chain, chain.faucet_key, params=params)
    dao = Dao(chain, deployment, chain.faucet_key, anvil=False)
    proposer = dao.holder(10**23)
    controller = deployment.addresses["CampaignController"]
    dao.propose(prepare(controller, [DirectiveCall(DirectiveKind.PAUSE, "x")], "pause x"), proposer)
    return ChainGovernor.from_deployment(chain, deployment, dao.funded())


@pytest.mark.parametrize("governor", ["fake", "chain"])
def test_no_input_makes_the_api_fail_with_a_5xx(governor: str) -> None:
    relay = FakeGovernor() if governor == "fake" else _chain_governor()
    with Store.open("sqlite://") as store:
        camp = store.create_campaign("x", {"preset": "quick"})
        DirectiveLedger(store).record(source="evm", campaign_id=camp.id, epoch=1, kind="pause")
        app = create_app(store, governor=relay, operator_token=SecretStr("t"))
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        operations = [result.ok() for result in schema.get_all_operations()]
        assert any(op.path.startswith("/gov/") for op in operations)
        seen: list[tuple[str, str, int]] = []
        for operation in operations:

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(), _=st.just(None))
            def check(case: schemathesis.Case, _: None) -> None:
                response = case.call()
                seen.append((case.method, case.path, response.status_code))
                assert response.status_code < 500, (case.method, case.path, response.text[:300])

            check()
        paths = {p for _, p, _ in seen}
        assert "/gov/ballots" in paths and "/gov/proposals/prepare" in paths
        views = {"/", "/ui/{name}", "/anchors", "/log/audit", "/experiments/{experiment_id}/record"}
        assert views | {"/gov/proposals/{proposal_id}/ballot"} <= paths  # the dashboard reads
        assert any(200 <= status < 300 for *_, status in seen)
