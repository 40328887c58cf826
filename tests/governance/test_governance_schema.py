"""Schemathesis against the app's OpenAPI spec: no input makes the API answer 5xx.

Each operation's strategy is drawn by hypothesis directly (schemathesis' pytest plugin
does not load under this pytest); a handful of examples per operation keeps it short.
"""

from __future__ import annotations

import schemathesis
from gov_fakes import FakeGovernor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from node.api import create_app
from node.store import DirectiveLedger, Store

EXAMPLES = 6


def test_no_input_makes_the_api_fail_with_a_5xx() -> None:
    with Store.open("sqlite://") as store:
        camp = store.create_campaign("x", {"preset": "quick"})
        DirectiveLedger(store).record(source="evm", campaign_id=camp.id, epoch=1, kind="pause")
        app = create_app(store, governor=FakeGovernor(), operator_token=SecretStr("t"))
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
        assert any(200 <= status < 300 for *_, status in seen)
