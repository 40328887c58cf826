"""`asi-node chain`: operator mistakes end in one clear line and exit code 2; a production
deployment is refused unless it is safe, and reaches the contracts as configured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from chains import ANVIL_KEY, Anvil, free_port
from eth_utils.address import to_checksum_address

from governance.chain import Chain, Deployment, address_of, new_private_key
from governance.deploy_config import TOKEN
from node.cli.main import main

GUARDIAN = str(to_checksum_address("0x" + "6a" * 20))


def test_deploy_to_an_endpoint_that_is_down_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "deployer.key"
    key.write_text("11" * 32)
    url = f"http://127.0.0.1:{free_port()}"
    args = ["--home", str(tmp_path / "home"), "chain", "deploy", "--rpc", url, "--profile", "dev"]
    assert main([*args, "--deployer-key-file", str(key)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"asi-node: error: no answer from the RPC endpoint {url}")
    assert "Traceback" not in err


def test_deploy_with_a_malformed_key_file_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "deployer.key"
    key.write_text("not a key")
    args = ["--home", str(tmp_path / "home"), "chain", "deploy", "--rpc", "http://127.0.0.1:1"]
    assert main([*args, "--profile", "dev", "--deployer-key-file", str(key)]) == 2
    assert capsys.readouterr().err == f"asi-node: error: {key}: expected a hex private key\n"


def test_status_before_any_deployment_points_at_chain_deploy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    args = ["--home", str(home), "chain", "status", "--rpc", "http://127.0.0.1:1"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "chain.json does not exist: deploy the contracts with `asi-node chain deploy" in err


def _deploy_args(tmp_path: Path, *extra: str, url: str | None = None) -> list[str]:
    key = tmp_path / "deployer.key"
    key.write_text(ANVIL_KEY.hex())
    url = url or f"http://127.0.0.1:{free_port()}"
    home = ["--home", str(tmp_path / "home")]
    return [*home, "chain", "deploy", "--rpc", url, "--deployer-key-file", str(key), *extra]


def _distribution(tmp_path: Path, text: str, name: str = "holders.csv") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _refusal(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("asi-node: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err.removeprefix("asi-node: error: ")


def test_production_deploy_without_a_guardian_is_refused_naming_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _refusal(capsys, _deploy_args(tmp_path)).startswith("--guardian ADDRESS is required")


def test_production_deploy_refuses_an_unsafe_dao_naming_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    holders = _distribution(tmp_path, f"address,amount\n{'0x' + '11' * 20},1000\n")
    safe = ["--guardian", GUARDIAN, "--distribution", holders]
    assert _refusal(capsys, _deploy_args(tmp_path, "--guardian", GUARDIAN)).startswith(
        "--distribution FILE is required"
    )
    err = _refusal(capsys, _deploy_args(tmp_path, *safe, "--proposal-threshold", "0"))
    assert err.startswith("--proposal-threshold must be above zero")
    err = _refusal(capsys, _deploy_args(tmp_path, *safe, "--timelock-delay", "12h"))
    assert err.startswith("--timelock-delay must be at least one day (86400 s), got 43200 s")
    err = _refusal(capsys, _deploy_args(tmp_path, *safe, "--timelock-delay", "3600"))
    assert err.startswith("--timelock-delay must be at least one day")
    err = _refusal(capsys, _deploy_args(tmp_path, *safe, "--quorum", "0"))
    assert err.startswith("--quorum: quorum 0% is outside 1..100%")
    err = _refusal(capsys, _deploy_args(tmp_path, *safe, "--voting-period", "a week"))
    assert err.startswith("--voting-period: 'a week' is not a duration")
    err = _refusal(
        capsys, _deploy_args(tmp_path, "--guardian", "0x1234", "--distribution", holders)
    )
    assert err.startswith("--guardian: the guardian: '0x1234' is not a 20-byte 0x address")


@pytest.mark.parametrize(
    ("text", "name", "why"),
    [
        ("0x1234,5\n", "h.csv", "line 1: '0x1234' is not a 20-byte 0x address"),
        (f"{'0x' + '11' * 20},0\n", "h.csv", "line 1: amount '0' must be above zero"),
        (f"{'0x' + '11' * 20},-3\n", "h.csv", "line 1: amount '-3' must be above zero"),
        (f"{'0x' + '11' * 20},1\n{'0x' + '11' * 20},2\n", "h.csv", "appears more than once"),
        (f"{'0x' + '00' * 20},1\n", "h.csv", "the zero address cannot hold tokens"),
        ("0xaBaBaBaBABabABabAbAbABAbABabababaBaBABaB,1\n", "h.csv", "wrong EIP-55 checksum"),
        (f"{'0x' + '11' * 20},1.0000000000000000001\n", "h.csv", "more than 18 decimal places"),
        ("[]", "h.json", "the distribution names no holders"),
        ('{"0x' + "11" * 20 + '": 1.5}', "h.json", "is not a number (write amounts as"),
        (f"{'0x' + '11' * 20},{2**208}\n", "h.csv", "exceeds ERC20Votes' supply cap"),
    ],
)
def test_a_bad_distribution_file_is_refused_naming_what_is_wrong(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, name: str, why: str
) -> None:
    holders = _distribution(tmp_path, text, name)
    argv = _deploy_args(tmp_path, "--guardian", GUARDIAN, "--distribution", holders)
    err = _refusal(capsys, argv)
    assert err.startswith(f"--distribution: {holders}: ") and why in err, err


@pytest.mark.integration
def test_production_deploy_reaches_the_contracts_as_configured(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], anvil: Anvil
) -> None:
    a, b = address_of(new_private_key()), address_of(new_private_key())
    holders = _distribution(
        tmp_path,
        json.dumps([{"address": a, "amount": "600000"}, {"address": b, "amount": 400000}]),
        "holders.json",
    )
    argv = _deploy_args(tmp_path, "--guardian", GUARDIAN, "--distribution", holders, url=anvil.url)
    assert main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "blocknumber clock; voting delay 7200 blocks, period 50400 blocks" in out
    assert "timelock 172800 s; threshold 2500 tokens; quorum 4%" in out
    deployment = Deployment.from_json((tmp_path / "home" / "chain.json").read_text())
    chain = Chain.connect(anvil.url)

    def read(name: str, function: str, *args: object) -> object:
        contract = chain.contract(name, deployment.addresses[name])
        return getattr(contract.functions, function)(*args).call()

    ctl = chain.contract("CampaignController", deployment.addresses["CampaignController"])
    assert read("DaoGovernor", "votingDelay") == 7_200  # one day of 12 s blocks
    assert read("DaoGovernor", "votingPeriod") == 50_400  # one week
    assert read("DaoGovernor", "lateQuorumVoteExtension") == 7_200
    assert read("DaoGovernor", "proposalThreshold") == 2_500 * TOKEN  # 0.25% of the supply
    assert read("DaoGovernor", "quorumNumerator") == 4
    assert read("DaoGovernor", "proposalGuardian") == GUARDIAN
    assert read("DaoTimelock", "getMinDelay") == 2 * 86_400
    assert read("GovToken", "CLOCK_MODE") == "mode=blocknumber&from=default"
    assert read("GovToken", "balanceOf", a) == 600_000 * TOKEN
    assert read("GovToken", "balanceOf", b) == 400_000 * TOKEN
    assert read("GovToken", "balanceOf", address_of(ANVIL_KEY)) == 0  # the deployer holds none
    role = ctl.functions.GUARDIAN_ROLE().call()
    assert ctl.functions.hasRole(role, GUARDIAN).call()
    assert not ctl.functions.hasRole(role, address_of(ANVIL_KEY)).call()


@pytest.mark.integration
def test_timestamp_clock_for_l2s_counts_the_vote_in_seconds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], anvil: Anvil
) -> None:
    holders = _distribution(tmp_path, f"{address_of(new_private_key())},1000\n")
    argv = _deploy_args(
        tmp_path,
        "--guardian",
        GUARDIAN,
        "--distribution",
        holders,
        "--clock",
        "timestamp",
        "--voting-period",
        "5d",
        "--proposal-threshold",
        "10",
        url=anvil.url,
    )
    assert main(argv) == 0, capsys.readouterr().err
    deployment = Deployment.from_json((tmp_path / "home" / "chain.json").read_text())
    chain = Chain.connect(anvil.url)
    gov = chain.contract("DaoGovernor", deployment.addresses["DaoGovernor"]).functions
    assert gov.CLOCK_MODE().call() == "mode=timestamp"
    assert gov.votingDelay().call() == 86_400 and gov.votingPeriod().call() == 5 * 86_400
    assert gov.proposalThreshold().call() == 10 * TOKEN
