"""The dashboard in headless Chromium (Debian's chromium and chromium-driver, through
Selenium) against the API of a node that ran a real small campaign: every view shows the
rows the API answers, the lineage and loss curves drawn from them, an experiment's
inclusion proof checked in the browser, a ballot whose typed data the relay accepts once
signed, and no request that leaves loopback.

The browser runs with every host name resolving to nothing but 127.0.0.1, and its
network log is read back: a page that asked a CDN would show it there.
"""

from __future__ import annotations

import base64
import json
import os
import re
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import uvicorn

sys.path.insert(0, str(Path(__file__).parents[1] / "governance"))

from dao import Dao
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils.crypto import keccak

from governance.ballots import Ballot, ballot_digest
from governance.chain import Chain, address_of, deploy
from governance.deploy_config import DEV_PARAMS
from governance.directives import DirectiveKind
from governance.proposals import DirectiveCall, prepare
from governance.relay import ChainGovernor
from loop.proposal import Proposal
from node.api.app import create_app
from node.campaign.config import Budget, CampaignConfig
from node.cli.main import main
from node.network.provenance import IMPORT_EVENT, REPLICATION_EVENT
from node.runtime import open_node
from node.store import DirectiveLedger, Store

# The campaign trains for real and the browser starts once: about three minutes on two
# busy cores, so beside `integration` the module is `slow` (CI runs it with -m slow).
pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
MISSING = (
    "the browser tests need Debian's chromium and chromium-driver (/usr/bin/chromium, "
    "/usr/bin/chromedriver) and the selenium package: run scripts/install.sh --dev"
)
LOOPBACK = {"127.0.0.1", "localhost", "[::1]", "::1"}


def _need_browser() -> None:
    """CI fails without the browser; a developer's machine skips, saying why."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        present = False
    else:
        present = CHROMIUM.exists() and CHROMEDRIVER.exists()
    if not present:
        if os.environ.get("CI"):
            pytest.fail(MISSING)
        pytest.skip(MISSING)


def small_campaign() -> CampaignConfig:
    """Real training, cut short: two baselines and three generated candidates."""
    return CampaignConfig(
        preset="quick",
        train_steps=100,
        baselines=("deltanet", "linear"),
        rerun_seeds=(),
        budget=Budget(max_candidates=3, max_rerun_candidates=0),
    )


@dataclass
class Served:
    url: str
    campaign_id: str
    voter_key: bytes
    governor: ChainGovernor

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=30) as reply:
            return json.loads(reply.read())


def _governor() -> tuple[ChainGovernor, bytes]:
    """The real relay on the embedded EVM with one proposal open, and a holder who can
    vote on it and has not."""
    chain = Chain.embedded()
    assert chain.faucet_key is not None
    params = replace(DEV_PARAMS, timelock_delay_s=0, voting_period=50)
    deployment = deploy(chain, chain.faucet_key, params=params)
    dao = Dao(chain, deployment, chain.faucet_key, anvil=False)
    proposer = dao.holder(10**23)
    voter = dao.holder(10**22)
    controller = deployment.addresses["CampaignController"]
    call = DirectiveCall(DirectiveKind.PAUSE, "small")
    dao.propose(prepare(controller, [call], "pause small"), proposer)
    return ChainGovernor.from_deployment(chain, deployment, dao.funded()), voter


def _replicated_import(store: Store, campaign_id: str) -> None:
    """A peer's record imported into the campaign and replicated here, as a sync and the
    replication judge leave it (their own tests: test_network_replication.py)."""
    ours = store.list_candidates(campaign_id)[-1]
    code = "# a peer's variant\n" + store.get_code(ours.digest)
    cand = store.add_candidate(
        campaign_id, Proposal(name="peers-mixer", motivation="imported", code=code, origin="peer")
    )
    found = {
        "candidate_id": cand.id,
        "peer": "http://peer.invalid:8000",
        "log_origin": "asi-node.log/" + "ab" * 16,
        "key_fingerprint": "sha256:" + "cd" * 32,
        "leaf_index": 7,
        "leaf_hash": "ef" * 32,
        "peer_experiment_id": "exp-peer000001",
        "peer_fitness": 0.12,
    }
    store.add_event(campaign_id, IMPORT_EVENT, found)
    judged = {"outcome": "replicated", "fitness": 0.115, "experiment_ids": ["exp-here"]}
    store.add_event(
        campaign_id,
        REPLICATION_EVENT,
        {"candidate_id": cand.id, "node_id": "sha256:" + "12" * 32, **judged},
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    _need_browser()
    home = tmp_path_factory.mktemp("dashboard") / "home"
    assert main(["--home", str(home), "init"]) == 0
    config = home / "config.toml"
    config.write_text(config.read_text().replace("checkpoint_every = 100", "checkpoint_every = 4"))
    node = open_node(home)
    camp = node.store.create_campaign("small", small_campaign().model_dump(mode="json"))
    with node.anchoring_followers():  # anchored on the embedded EVM
        node.run_campaign(camp.id)
    DirectiveLedger(node.store).record(source="evm", campaign_id=camp.id, epoch=1, kind="pause")
    _replicated_import(node.store, camp.id)
    governor, voter_key = _governor()
    app = create_app(node.store, governor=governor, log_store=node.log_db())
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, name="dashboard-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not (server.started and server.servers):
        assert time.monotonic() < deadline and thread.is_alive(), "the API did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield Served(f"http://127.0.0.1:{port}", camp.id, voter_key, governor)
    finally:
        server.should_exit = True
        thread.join(10)
        node.store.close()


@pytest.fixture(scope="module")
def browser(served: Served) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--window-size=1280,800",
        # Any name but loopback resolves to nothing: a CDN fetch fails (and is logged).
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def show(driver: Any, served: Served, view: str) -> None:
    """Open a view of the dashboard and wait until it has drawn."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{served.url}/{view}")
    expected = view or "#/"
    WebDriverWait(driver, 60).until(
        lambda d: d.execute_script("return document.body.dataset.ready") == expected
    )


def row_ids(driver: Any, table: str) -> list[str]:
    from selenium.webdriver.common.by import By

    rows = driver.find_elements(By.CSS_SELECTOR, f"#{table} tbody tr")
    return [r.get_attribute("data-id") for r in rows]


def path_points(d: str) -> int:
    return len(re.findall(r"[ML]", d))


def test_the_campaigns_view_lists_every_campaign_by_id(browser: Any, served: Served) -> None:
    show(browser, served, "")
    assert row_ids(browser, "campaigns") == [c["id"] for c in served.get("/campaigns")]
    assert served.campaign_id in browser.find_element("id", "campaigns").text


def test_a_campaign_view_draws_its_leaderboard_lineage_and_loss_curves(
    browser: Any, served: Served
) -> None:
    from selenium.webdriver.common.by import By

    cid = served.campaign_id
    show(browser, served, f"#/campaign/{cid}")
    board = served.get(f"/campaigns/{cid}/leaderboard")
    assert row_ids(browser, "leaderboard") == [r["candidate_id"] for r in board]
    experiments = served.get(f"/campaigns/{cid}/experiments")
    assert row_ids(browser, "experiments") == [e["id"] for e in experiments]
    assert row_ids(browser, "directives") == [
        str(d["id"]) for d in served.get(f"/gov/campaigns/{cid}")["directives"]
    ]

    candidates = served.get(f"/campaigns/{cid}/candidates")
    known = {c["id"] for c in candidates}
    nodes = browser.find_elements(By.CSS_SELECTOR, "#lineage g.node")
    assert {n.get_attribute("data-id") for n in nodes} == known
    edges = browser.find_elements(By.CSS_SELECTOR, "#lineage line.edge")
    drawn = {(e.get_attribute("data-from"), e.get_attribute("data-to")) for e in edges}
    assert drawn == {(p, c["id"]) for c in candidates for p in c["parent_ids"] if p in known}

    curves = {
        e["id"]: [p for p in e["train"]["loss_curve"] if p[1] == p[1]]  # NaN is left out
        for e in experiments
        if e["train"] and e["train"].get("loss_curve")
    }
    assert curves, "no experiment of the real campaign recorded a loss curve"
    paths = browser.find_elements(By.CSS_SELECTOR, "svg.loss-curves path.curve")
    drawn_points = {
        p.get_attribute("data-experiment"): path_points(p.get_attribute("d")) for p in paths
    }
    assert drawn_points == {exp: len(points) for exp, points in curves.items() if points}
    assert max(drawn_points.values()) >= 2


def test_an_experiment_view_shows_its_record_and_checks_its_inclusion_proof(
    browser: Any, served: Served
) -> None:
    from selenium.webdriver.common.by import By

    experiments = served.get(f"/campaigns/{served.campaign_id}/experiments")
    exp = next(e for e in experiments if e["train"] and e["train"].get("loss_curve"))
    show(browser, served, f"#/experiment/{exp['id']}")
    record = served.get(f"/experiments/{exp['id']}/record")
    assert record["proof"] is not None, "the campaign's last checkpoint covers every record"
    shown = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#proof li")]
    assert shown == [base64.b64decode(h).hex() for h in record["proof"]]
    check = browser.find_element(By.ID, "proof-check")
    assert check.get_attribute("class") == "ok", check.text
    assert json.loads(browser.find_element(By.ID, "record").text) == record["statement"]
    path = browser.find_element(By.CSS_SELECTOR, "svg.loss-curves path.curve")
    finite = [p for p in exp["train"]["loss_curve"] if p[1] == p[1]]
    assert path_points(path.get_attribute("d")) == len(finite) > 0


def test_a_ballot_signed_from_the_typed_data_shown_is_relayed(browser: Any, served: Served) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    show(browser, served, "#/governance")
    proposals = served.get("/gov/proposals")
    assert row_ids(browser, "proposals") == [p["proposal_id"] for p in proposals]
    (active,) = [p for p in proposals if p["state"] == "active"]
    voter = address_of(served.voter_key)
    form = browser.find_element(By.CSS_SELECTOR, f"form[data-proposal='{active['proposal_id']}']")
    form.find_element(By.NAME, "voter").send_keys(voter)
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    typed = WebDriverWait(browser, 30).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "pre.typed-data")
    )[0]
    shown = json.loads(typed.text)
    pid, domain = int(active["proposal_id"]), served.governor.domain()
    nonce = served.governor.nonce(voter)
    expected = Ballot(pid, 1, voter, nonce, b"")
    assert shown == expected.wallet_typed_data(domain)
    # What the wallet signs hashes to the digest the relay checks the signature against.
    message = encode_typed_data(full_message=shown)
    signed_hash = keccak(b"\x19" + message.version + message.header + message.body)
    assert signed_hash == ballot_digest(expected, domain)

    signature = Account.sign_message(message, served.voter_key).signature.hex()
    browser.find_element(By.NAME, "signature").send_keys("0x" + signature.removeprefix("0x"))
    browser.find_element(By.XPATH, "//button[text()='Relay ballot']").click()
    WebDriverWait(browser, 60).until(
        lambda d: (
            "relayed: 0x" in d.find_element(By.CLASS_NAME, "ballot-out").text
            or d.find_elements(By.CSS_SELECTOR, ".ballot-out .bad")
        )
    )
    assert "relayed: 0x" in browser.find_element(By.CLASS_NAME, "ballot-out").text
    assert served.governor.has_voted(pid, voter)


def test_the_node_view_shows_the_log_audit_attestation_and_anchors(
    browser: Any, served: Served
) -> None:
    from selenium.webdriver.common.by import By

    show(browser, served, "#/node")
    report = served.get("/log/audit")
    assert report["ok"]
    assert browser.find_element(By.ID, "audit-result").text == "PASS"
    assert row_ids(browser, "audit-steps") == [str(s["number"]) for s in report["steps"]]
    assert report["attestation"]["status"] in browser.find_element(By.ID, "attestation").text
    anchors = served.get("/anchors")
    assert anchors["evm"], "the run anchored its checkpoints on the embedded EVM"
    assert row_ids(browser, "anchors-evm") == [
        f"{a['log_id']}:{a['tree_size']}" for a in anchors["evm"]
    ]


def test_the_network_view_ranks_the_replicated_discoveries(browser: Any, served: Served) -> None:
    show(browser, served, "#/network")
    board = served.get("/network/leaderboard")
    assert [d["experiment_id"] for d in board] == ["exp-peer000001"]
    assert row_ids(browser, "network-leaderboard") == ["exp-peer000001"]
    text = browser.find_element("id", "network-leaderboard").text
    assert "peers-mixer" in text and "http://peer.invalid:8000" in text
    assert "sha256:121212121212… (this node, 0.1150)" in text


def test_no_view_and_no_docs_page_asks_anything_beyond_loopback(
    browser: Any, served: Served
) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get_log("performance")  # start from here
    exp = served.get(f"/campaigns/{served.campaign_id}/experiments")[0]["id"]
    for view in (
        "",
        f"#/campaign/{served.campaign_id}",
        f"#/experiment/{exp}",
        "#/governance",
        "#/node",
        "#/network",
    ):
        show(browser, served, view)
    browser.get(f"{served.url}/docs")
    WebDriverWait(browser, 60).until(
        lambda d: d.execute_script("return !!document.querySelector('.opblock')")
    )
    urls = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    assert any(u.endswith("/docs/assets/swagger-ui-bundle.js") for u in urls)
    assert any(u.endswith("/ui/dashboard.js") for u in urls)
    outside = [
        u
        for u in urls
        if urlsplit(u).scheme not in ("data", "blob") and urlsplit(u).hostname not in LOOPBACK
    ]
    assert outside == []
