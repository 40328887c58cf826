"""Two daemons share one PostgreSQL campaign while one is killed with SIGKILL: a short run
of scripts/soak.py (the full one kills 50 times). Nothing is lost, nothing is
recorded twice across the two logs, the budget holds and both logs pass `audit`."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from scripts import soak_two_daemons as soak

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_killing_one_of_two_daemons_loses_and_repeats_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    engine = sa.create_engine(soak.SERVER, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except sa.exc.OperationalError as exc:
        pytest.skip(f"no PostgreSQL at {soak.SERVER}: {str(exc.orig).splitlines()[0]}")
    finally:
        engine.dispose()
    # Twelve candidates outlast the three kills (about 12 s of gaps with seed 0, plus three
    # start-ups) with room to spare on a fast machine: with four, CI's campaign finished
    # after two kills.
    code = soak.main(["--kills", "3", "--candidates", "12", "--min-gap", "2", "--max-gap", "5"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0, report
    assert report["kills"] == 3 and report["complete"]
    assert (report["lost"], report["duplicates"], report["over_budget"]) == (0, 0, False)
    assert report["candidates"] == 13  # the budget's twelve and the baseline
    recorded = sum(log["records"] for log in report["logs"].values())
    assert recorded == report["experiments"]
    assert report["audit_exit_codes"] == {"a": 0, "b": 0}
