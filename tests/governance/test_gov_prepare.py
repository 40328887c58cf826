"""`POST /gov/proposals/prepare` and `/check` for every CampaignController governance
function, each call run as the timelock first (here on the fake controller; on the real
one in test_gov_voters_on_evm.py), and the calldata they build held to the compiled ABI."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from eth_utils.address import to_checksum_address
from fastapi.testclient import TestClient
from governor_fake import ControllerFake
from pydantic import SecretStr

from governance.chain import artifact
from governance.errors import MalformedCallError
from governance.proposals import (
    FUNCTIONS,
    ControllerCall,
    decode_calls,
    decode_controller_calls,
    prepare,
    signature_of,
    with_proposer,
)
from node.api.app import create_app
from node.store import CampaignRow, Store

NODE = "0x" + "12" * 20
MEASUREMENT = "0x" + "34" * 32


@pytest.fixture
def store() -> Iterator[Store]:
    with Store.open("sqlite://") as s:
        yield s


@pytest.fixture
def gov() -> ControllerFake:
    return ControllerFake()


@pytest.fixture
def client(store: Store, gov: ControllerFake) -> TestClient:
    return TestClient(create_app(store, governor=gov, operator_token=SecretStr("t")))


@pytest.fixture
def camp(store: Store, gov: ControllerFake) -> CampaignRow:
    row = store.create_campaign("x", {"preset": "quick"})
    gov.campaigns[row.id] = "active"
    return row


def test_the_function_table_matches_the_compiled_controller() -> None:
    abi = artifact("CampaignController").abi
    compiled = {
        item["name"]: f"{item['name']}({','.join(i['type'] for i in item['inputs'])})"
        for item in abi
        if item.get("type") == "function"
    }
    names = {
        item["name"]: [i["name"] for i in item["inputs"]]
        for item in abi
        if item.get("type") == "function"
    }
    for function, params in FUNCTIONS.items():
        assert signature_of(function) == compiled[function]
        assert [p.name for p in params] == names[function]


def body(action: str, **fields: Any) -> dict[str, Any]:
    return {"action": action, "description": f"{action} please"} | fields


@pytest.mark.parametrize(
    ("request_body", "function", "args"),
    [
        (body("pause", campaign="x"), "pauseCampaign", None),
        (body("stop", campaign="x"), "stopCampaign", None),
        (body("pause_all"), "pauseAll", {}),
        (body("set_measurement", measurement=MEASUREMENT), "setMeasurement", None),
        (body("approve_node", node=NODE), "approveNode", None),
        (body("revoke_node", node=NODE), "revokeNode", {"node": "0x" + "12" * 20}),
        (
            body("register", campaign="c-elsewhere", config_hash="0x" + "07" * 32),
            "registerCampaign",
            {"campaignId": "c-elsewhere", "configHash": "0x" + "07" * 32, "configURI": ""},
        ),
    ],
)
def test_prepare_builds_and_simulates_each_controller_function(
    client: TestClient,
    gov: ControllerFake,
    camp: CampaignRow,
    request_body: dict[str, Any],
    function: str,
    args: dict[str, Any] | None,
) -> None:
    gov.nodes.add(NODE)
    r = client.post("/gov/proposals/prepare", json=request_body)
    assert r.status_code == 200, r.text
    prepared = r.json()
    (call,) = prepared["calls"]
    assert call["function"] == function and call["simulated"] is True
    assert gov.simulated == [function]
    if args is not None:
        assert call["args"] == args
    assert call["target"].lower() == gov.controller_address
    data = bytes.fromhex(prepared["calldatas"][0][2:])
    (decoded,) = decode_controller_calls(gov.controller_address, [call["target"]], [0], [data])
    again = prepare(gov.controller_address, [decoded], prepared["description"])
    assert prepared["proposal_id"] == str(again.proposal_id)
    assert prepared["propose_calldata"] == "0x" + again.propose_calldata().hex()
    assert prepared["governor"] == gov.domain().verifying_contract


@pytest.mark.parametrize(
    ("request_body", "setup", "reason"),
    [
        (body("resume", campaign="x"), None, "InvalidTransition"),  # x is active
        (body("register", campaign="x"), None, "CampaignExists"),
        (body("pause", campaign="x"), "unregistered", "UnknownCampaign"),
        (body("unpause_all"), None, "not paused globally"),
        (body("set_measurement", measurement="0x" + "00" * 32), None, "measurement is zero"),
        (body("revoke_node", node=NODE), None, "NodeNotApproved"),
    ],
)
def test_a_call_the_controller_would_revert_is_refused_with_its_reason(
    client: TestClient,
    gov: ControllerFake,
    camp: CampaignRow,
    request_body: dict[str, Any],
    setup: str | None,
    reason: str,
) -> None:
    if setup == "unregistered":
        del gov.campaigns[camp.id]
    r = client.post("/gov/proposals/prepare", json=request_body)
    assert r.status_code == 409, r.text
    error = r.json()["detail"]
    assert error["error"] == "TransactionRevertedError"
    assert (
        reason in error["detail"] and "would revert when the timelock executes" in error["detail"]
    )


def test_register_takes_the_nodes_config_hash_and_refuses_another(
    client: TestClient, store: Store, gov: ControllerFake
) -> None:
    row = store.create_campaign("y", {"preset": "quick"})
    r = client.post("/gov/proposals/prepare", json=body("register", campaign="y"))
    assert r.status_code == 200, r.text
    args = r.json()["calls"][0]["args"]
    assert args["campaignId"] == row.id
    assert args["configHash"] == "0x" + row.config_hash.removeprefix("sha256:")
    other = body("register", campaign="y", config_hash="0x" + "00" * 32)
    r = client.post("/gov/proposals/prepare", json=other)
    assert r.status_code == 422 and "only under the hash registered" in r.text
    r = client.post("/gov/proposals/prepare", json=body("register", campaign="nope"))
    assert r.status_code == 404 and "config_hash" in r.text


def test_a_fork_names_its_log_and_can_resume_its_child_in_the_same_proposal(
    client: TestClient, gov: ControllerFake, camp: CampaignRow
) -> None:
    fork = body(
        "fork",
        campaign="x",
        child="x-wide",
        from_tree_size=7,
        checkpoint_root="0x" + "0a" * 32,
        config_hash="0x" + "0b" * 32,
    )
    r = client.post("/gov/proposals/prepare", json=fork)
    assert r.status_code == 422 and "log_id" in r.text  # controller v2 names the log
    fork["log_id"] = "0x" + "0c" * 32
    r = client.post("/gov/proposals/prepare", json=fork | {"resume_child": True})
    assert r.status_code == 200, r.text
    first, second = r.json()["calls"]
    assert first["function"] == "forkCampaign" and first["simulated"] is True
    assert first["args"]["parent"] == camp.id and first["args"]["logId"] == "0x" + "0c" * 32
    assert second["function"] == "resumeCampaign" and second["simulated"] is False
    assert second["args"] == {"campaignId": "x-wide"} and second["kind"] == "resume"
    assert gov.simulated == ["forkCampaign"]
    r = client.post("/gov/proposals/prepare", json=fork | {"child": "x"})
    assert r.status_code == 422 and "name a new child" in r.text


def test_a_named_proposer_is_bound_into_the_description(
    client: TestClient, gov: ControllerFake, camp: CampaignRow
) -> None:
    proposer = "0xabcdef0123456789abcdef0123456789abcdef01"
    r = client.post("/gov/proposals/prepare", json=body("pause", campaign="x", proposer=proposer))
    assert r.status_code == 200, r.text
    prepared = r.json()
    checksummed = to_checksum_address(proposer)
    assert prepared["description"] == f"pause please#proposer={checksummed}"
    assert prepared["proposer"] == checksummed
    # OpenZeppelin's check reads the last 52 characters: "#proposer=0x" and 40 hex digits.
    assert prepared["description"][-52:-40] == "#proposer=0x"
    same = body("pause", campaign="x", proposer=proposer)
    same["description"] = prepared["description"]
    assert (
        client.post("/gov/proposals/prepare", json=same).json()["description"]
        == (prepared["description"])
    )
    other = same | {"proposer": "0x" + "99" * 20}
    r = client.post("/gov/proposals/prepare", json=other)
    assert r.status_code == 422 and "already names proposer" in r.text
    with pytest.raises(MalformedCallError):
        with_proposer("d", "not an address")


def test_check_decodes_and_simulates_any_controller_function(
    client: TestClient, gov: ControllerFake, camp: CampaignRow
) -> None:
    calls = [
        ControllerCall("setMeasurement", (bytes.fromhex(MEASUREMENT[2:]), True)),
        ControllerCall("approveNode", (NODE, bytes.fromhex(MEASUREMENT[2:]))),
        ControllerCall("pauseCampaign", (camp.id,)),
    ]
    prepared = prepare(gov.controller_address, calls, "approve a node under a new measurement")
    r = client.post(
        "/gov/proposals/check",
        json={
            "targets": list(prepared.targets),
            "values": [0, 0, 0],
            "calldatas": ["0x" + c.hex() for c in prepared.calldatas],
            "description": prepared.description,
        },
    )
    assert r.status_code == 200, r.text
    shown = r.json()
    assert shown["proposal_id"] == str(prepared.proposal_id)
    assert [c["function"] for c in shown["calls"]] == [c.function for c in calls]
    # approveNode reads the measurement the first call sets: it is not run on its own.
    assert [c["simulated"] for c in shown["calls"]] == [True, False, True]
    with pytest.raises(MalformedCallError, match="no controller directive"):
        decode_calls(gov.controller_address, prepared.targets, [0, 0, 0], prepared.calldatas)


def test_controller_calls_refuse_arguments_that_do_not_fit() -> None:
    with pytest.raises(MalformedCallError, match="no governance function"):
        ControllerCall("grantRole", ())
    with pytest.raises(MalformedCallError, match="takes 1 argument"):
        ControllerCall("pauseCampaign", ())
    with pytest.raises(MalformedCallError, match="no campaign id"):
        ControllerCall("pauseCampaign", ("x" * 33,))
    with pytest.raises(MalformedCallError, match="32 bytes"):
        ControllerCall("setMeasurement", (b"\x01", True))
    with pytest.raises(MalformedCallError, match="address"):
        ControllerCall("revokeNode", ("0x12",))
    with pytest.raises(MalformedCallError, match="true or false"):
        ControllerCall("setMeasurement", (bytes(32), 1))
