"""The DAO's deployment parameters: production defaults, durations, the distribution file,
the production refusals, and a production set deployed on the embedded EVM; the fork
calldata that names the log its checkpoint is anchored in."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from eth_utils.address import to_checksum_address

from governance.chain import Chain, address_of, chain_log_id, deploy, new_private_key
from governance.deploy_config import (
    DEV_PARAMS,
    TOKEN,
    Allocation,
    Clock,
    check_production,
    parse_duration,
    parse_threshold,
    production_params,
    read_distribution,
)
from governance.directives import DirectiveKind
from governance.errors import MalformedCallError
from governance.proposals import DirectiveCall, decode_calls, prepare

HOLDER = str(to_checksum_address("0x" + "11" * 20))
GUARDIAN = address_of(new_private_key())


def test_production_defaults_follow_the_readme_on_either_clock() -> None:
    blocks = production_params(supply=1_000_000 * TOKEN)
    assert (blocks.voting_delay, blocks.voting_period, blocks.late_quorum_extension) == (
        7_200,
        50_400,
        7_200,
    )
    assert blocks.timelock_delay_s == 172_800 and blocks.quorum_percent == 4
    assert blocks.proposal_threshold == 2_500 * TOKEN
    seconds = production_params(clock=Clock.TIMESTAMP, supply=1_000_000 * TOKEN)
    assert (seconds.voting_delay, seconds.voting_period) == (86_400, 604_800)
    assert seconds.timelock_delay_s == 172_800


def test_durations_and_thresholds_parse_in_the_clocks_units() -> None:
    assert parse_duration("1d", Clock.BLOCKNUMBER) == 7_200
    assert parse_duration("1d", Clock.BLOCKNUMBER, 2.0) == 43_200  # an L2's 2 s blocks
    assert parse_duration("90s", Clock.BLOCKNUMBER) == 8  # rounded up to whole blocks
    assert parse_duration("1w", Clock.TIMESTAMP) == 604_800
    assert parse_duration("50", Clock.BLOCKNUMBER) == 50  # bare: clock units already
    assert parse_duration("2d", None) == 172_800  # the timelock counts seconds
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("-1d", Clock.BLOCKNUMBER)
    assert parse_threshold("1%", 1_000 * TOKEN) == 10 * TOKEN
    assert parse_threshold("2.5", 0) == 5 * TOKEN // 2


def test_distribution_files_in_each_format(tmp_path: Path) -> None:
    other = address_of(new_private_key())
    csv = tmp_path / "h.csv"
    csv.write_text(f"address,amount\n# the team\n{HOLDER}, 1000\n{other.lower()},0.5\n")
    mapping = tmp_path / "h.json"
    mapping.write_text(f'{{"{HOLDER}": "1000", "{other}": "0.5"}}')
    listed = tmp_path / "l.json"
    listed.write_text(
        f'[{{"address": "{HOLDER}", "amount": 1000}}, {{"address": "{other}", "amount": "0.5"}}]'
    )
    want = (Allocation(HOLDER, 1000 * TOKEN), Allocation(other, TOKEN // 2))
    assert read_distribution(csv) == read_distribution(mapping) == read_distribution(listed) == want


def test_production_refuses_what_would_make_the_dao_unsafe() -> None:
    holders = (Allocation(HOLDER, 1000 * TOKEN),)
    params = production_params(supply=1000 * TOKEN)
    check_production(params, GUARDIAN, holders)
    with pytest.raises(ValueError, match=r"^--guardian ADDRESS is required"):
        check_production(params, None, holders)
    with pytest.raises(ValueError, match=r"^--distribution FILE is required"):
        check_production(params, GUARDIAN, ())
    with pytest.raises(ValueError, match=r"^--proposal-threshold must be above zero"):
        check_production(replace(params, proposal_threshold=0), GUARDIAN, holders)
    with pytest.raises(ValueError, match=r"^--timelock-delay must be at least one day"):
        check_production(replace(params, timelock_delay_s=86_399), GUARDIAN, holders)
    check_production(
        replace(DEV_PARAMS, proposal_threshold=1, timelock_delay_s=86_400), GUARDIAN, holders
    )
    with pytest.raises(ValueError, match="exceeds the distributed supply"):
        check_production(params, GUARDIAN, (Allocation(holders[0].address, 1),))


def test_a_production_set_on_the_embedded_evm_leaves_the_deployer_nothing() -> None:
    chain = Chain.embedded()
    assert chain.faucet_key is not None
    holders = (Allocation(HOLDER, 600 * TOKEN), Allocation(GUARDIAN, 400 * TOKEN))
    params = production_params(clock=Clock.TIMESTAMP, supply=1000 * TOKEN)
    deployment = deploy(
        chain, chain.faucet_key, guardian=GUARDIAN, params=params, distribution=holders
    )

    def contract(name: str) -> Any:
        return chain.contract(name, deployment.addresses[name]).functions

    token, gov = contract("GovToken"), contract("DaoGovernor")
    assert token.CLOCK_MODE().call() == "mode=timestamp"
    assert token.balanceOf(deployment.deployer).call() == 0
    assert token.totalSupply().call() == 1000 * TOKEN
    assert token.balanceOf(GUARDIAN).call() == 400 * TOKEN
    assert gov.proposalGuardian().call() == GUARDIAN
    assert gov.votingPeriod().call() == 604_800
    assert gov.proposalThreshold().call() == 25 * TOKEN // 10
    assert gov.lateQuorumVoteExtension().call() == 86_400
    assert contract("DaoTimelock").getMinDelay().call() == 172_800


def test_fork_calldata_names_the_anchored_log_and_round_trips() -> None:
    controller = "0x" + "c0" * 20
    log_id = chain_log_id(GUARDIAN, b"\x07" * 32)
    fork = DirectiveCall(
        DirectiveKind.FORK, "x-wide", "x", 42, b"\x01" * 32, b"\x02" * 32, "u", True, log_id
    )
    resume = DirectiveCall(DirectiveKind.RESUME, "x-wide")
    prepared = prepare(controller, [fork, resume], "fork x and run the child")
    assert decode_calls(controller, prepared.targets, prepared.values, prepared.calldatas) == [
        fork,
        resume,
    ]
    assert fork.as_json()["log_id"] == "0x" + log_id.hex()
    unnamed = DirectiveCall(DirectiveKind.FORK, "x-wide", "x", 42, b"\x01" * 32, b"\x02" * 32)
    with pytest.raises(MalformedCallError, match="names the 32-byte id of the log"):
        unnamed.calldata()
