"""Screenshots of the dashboard's main views for the README, from a node that ran a campaign.

A fresh node home in a temporary folder runs the demo's campaign (or a shorter one, with
--candidates and --train-steps), anchored on the embedded EVM, where a Governor holds one
open proposal; the daemon's app is served on a loopback port and headless Chromium
(Debian's chromium and chromium-driver, through Selenium) saves each view as a PNG.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from governance.chain import Chain, address_of, deploy, new_private_key
from governance.deploy_config import DEV_PARAMS
from governance.directives import DirectiveKind
from governance.proposals import DirectiveCall, prepare
from governance.relay import ChainGovernor
from node.api.app import create_app
from node.campaign.config import demo_config
from node.cli.main import main as cli
from node.runtime import open_node

SIZE = (1280, 800)


def open_proposal(campaign_id: str) -> tuple[ChainGovernor, str]:
    """A Governor on the embedded EVM with a proposal to pause the campaign open for
    votes, and the address of a holder who may vote on it."""
    chain = Chain.embedded()
    assert chain.faucet_key is not None
    treasury = chain.faucet_key
    deployment = deploy(chain, treasury, params=replace(DEV_PARAMS, voting_period=50))
    token = chain.contract("GovToken", deployment.addresses["GovToken"], check_code=False)
    holders = []
    for tokens in (10**23, 10**22):
        key = new_private_key()
        chain.transfer(treasury, address_of(key), 10**18)
        chain.send(treasury, token.functions.transfer(address_of(key), tokens))
        chain.send(key, token.functions.delegate(address_of(key)))
        holders.append(key)
    governor = chain.contract("DaoGovernor", deployment.addresses["DaoGovernor"], check_code=False)
    call = DirectiveCall(DirectiveKind.PAUSE, campaign_id)
    prepared = prepare(deployment.addresses["CampaignController"], [call], "pause the demo")
    chain.send(
        holders[0],
        governor.functions.propose(
            list(prepared.targets),
            list(prepared.values),
            list(prepared.calldatas),
            prepared.description,
        ),
    )
    for _ in range(int(governor.functions.votingDelay().call()) + 1):
        chain.rpc("evm_mine", [])
    relayer = new_private_key()
    chain.transfer(treasury, address_of(relayer), 10**18)
    return ChainGovernor.from_deployment(chain, deployment, relayer), address_of(holders[1])


def run_node(home: Path, candidates: int | None, train_steps: int | None) -> tuple[Any, str]:
    assert cli(["--home", str(home), "init"]) == 0
    config = demo_config()
    if candidates is not None:
        config = config.model_copy(
            update={"budget": config.budget.model_copy(update={"max_candidates": candidates})}
        )
    if train_steps is not None:
        config = config.model_copy(update={"train_steps": train_steps})
    node = open_node(home)
    camp = node.store.create_campaign("demo", config.model_dump(mode="json"))
    with node.anchoring_followers():
        node.run_campaign(camp.id)
    return node, camp.id


def shoot(url: str, out: Path, campaign_id: str, experiment_id: str, voter: str) -> None:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                f"--window-size={SIZE[0]},{SIZE[1]}", "--hide-scrollbars",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    try:
        views = {
            "campaigns": "#/",
            "campaign": f"#/campaign/{campaign_id}",
            "experiment": f"#/experiment/{experiment_id}",
            "governance": "#/governance",
            "node": "#/node",
        }
        for name, view in views.items():
            driver.get(f"{url}/{view}")
            WebDriverWait(driver, 60).until(
                lambda d, v=view: d.execute_script("return document.body.dataset.ready") == v
            )
            if name == "governance":
                form = driver.find_element(By.CSS_SELECTOR, "form.ballot")
                form.find_element(By.NAME, "voter").send_keys(voter)
                form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
                WebDriverWait(driver, 30).until(
                    lambda d: d.find_elements(By.CSS_SELECTOR, "pre.typed-data")
                )
            driver.save_screenshot(str(out / f"{name}.png"))
            print(f"wrote {out / f'{name}.png'}")
    finally:
        driver.quit()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    parser.add_argument("--candidates", type=int, help="generated candidates (demo: 8)")
    parser.add_argument("--train-steps", type=int, help="training steps (demo: the preset's)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="asi-node-screens-") as tmp:
        node, campaign_id = run_node(Path(tmp) / "home", args.candidates, args.train_steps)
        governor, voter = open_proposal(campaign_id)
        board = node.store.list_experiments(campaign_id)
        shown = max(board, key=lambda e: len((e.train or {}).get("loss_curve", [])))
        app = create_app(node.store, governor=governor, log_store=node.log_db())
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not (server.started and server.servers):
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        try:
            shoot(f"http://127.0.0.1:{port}", args.out, campaign_id, shown.id, voter)
        finally:
            server.should_exit = True
            thread.join(10)
            node.store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
