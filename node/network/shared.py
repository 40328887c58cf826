"""Shared campaigns: one campaign, registered on the controller, run by many nodes.

The controller knows a campaign by its id (its bytes32 key) and config hash, so a node
runs another node's campaign under the same id and config: `asi-node campaign join ID
--from URL` reads both from a node's API (the config must hash to what that node states)
or takes the config from a file, checks that the controller registered the campaign with
that config hash (with `[chain] rpc_url`; the embedded chain is this home's alone, so
there it is said to be unchecked), and creates it here. Each node then runs its own
experiments and anchors its own log; the governance of that one campaign reaches them all,
and peers' records of it are imported (`node.network.follow`, matched by config hash).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from attestation.canonical import hash_rule, json_sha256
from governance.directives import campaign_key
from node.errors import AsiNodeError
from node.tlog.audit_source import AuditSourceError, fetch_json

if TYPE_CHECKING:
    from governance.chain import Controller
    from node.store import CampaignRow, Store


class JoinError(AsiNodeError):
    """The campaign cannot be joined as asked (the message says why).

    Check the campaign id, the node URL or config file, and that governance registered
    the campaign with that config.
    """


@dataclass(frozen=True)
class Shared:
    """A campaign as another node serves it: its name and config."""

    name: str
    config: dict[str, Any]


def _hash_of(config: Mapping[str, Any]) -> str:
    """The hash a campaign's config as served is stored and logged under (as
    `CampaignConfig.config_hash` gives it once parsed)."""
    return "sha256:" + json_sha256(dict(config)).hex()


def fetch_shared(url: str, campaign_id: str, timeout_s: float = 30.0) -> Shared:
    """The campaign `campaign_id` as the node at `url` serves it; its config must hash to
    the hash that node states."""
    path = f"/campaigns/{urllib.parse.quote(campaign_id, safe='')}"
    try:
        answer = fetch_json(url, path, timeout_s)
    except AuditSourceError as exc:
        raise JoinError(f"cannot read campaign {campaign_id} from {url}: {exc}") from None
    if not (
        isinstance(answer, dict)
        and isinstance(answer.get("config"), dict)
        and isinstance(answer.get("name"), str)
        and isinstance(answer.get("config_hash"), str)
    ):
        raise JoinError(f"{url}{path} did not answer a campaign")
    config: dict[str, Any] = answer["config"]
    served = _hash_of(config)
    if served != answer["config_hash"]:
        raise JoinError(
            f"{url} serves campaign {campaign_id} with a config that hashes to "
            f"{served}, not the {answer['config_hash']} it states"
        )
    return Shared(answer["name"], config)


def registered_with(controller: Controller, campaign_id: str, config: Mapping[str, Any]) -> str:
    """A line saying the controller registered `campaign_id` with `config`'s hash;
    JoinError when it did not, naming the proposal that would."""
    from governance.chain import ControllerReader
    from governance.errors import SourceError

    key = campaign_key(campaign_id)
    reader = ControllerReader(controller)
    ours = "0x" + json_sha256(dict(config)).hex()
    where = f"the controller on chain {controller.chain.chain_id}"
    try:
        known = reader.effective_status(key) != 0
        registered = reader.config_hash(key) if known else None
    except SourceError as exc:
        raise JoinError(str(exc)) from None
    if registered is None:
        raise JoinError(
            f"campaign {campaign_id} is not registered on {where}: a DAO proposal must call "
            f"registerCampaign(0x{key.hex()}, {ours}, ...)"
        )
    if hash_rule(dict(config), registered) is None:
        raise JoinError(
            f"{where} registered campaign {campaign_id} with config hash "
            f"0x{registered.hex()}, but this config hashes to {ours}"
        )
    return f"registered on {where} with this config"


def join(
    store: Store,
    campaign_id: str,
    shared: Shared,
    controller: Controller | None,
    name: str | None = None,
) -> tuple[CampaignRow, str]:
    """Create `campaign_id` here with the shared config (checked against `controller`
    when given); the campaign and a line on what was checked."""
    from node.campaign.config import parse_config

    try:
        campaign_key(campaign_id)
    except ValueError as exc:
        raise JoinError(str(exc)) from None
    config = parse_config(shared.config, f"the config of campaign {campaign_id}")
    ours, theirs = config.config_hash(), _hash_of(shared.config)
    if ours != theirs:
        raise JoinError(
            f"this node reads campaign {campaign_id}'s config as {ours}, not {theirs}: run "
            "the asi-node version of the nodes that share it"
        )
    dumped = config.model_dump(mode="json")
    checked = (
        registered_with(controller, campaign_id, dumped)
        if controller is not None
        else "not checked against a controller ([chain] rpc_url is empty)"
    )
    try:
        camp = store.create_campaign(name or shared.name, dumped, campaign_id=campaign_id)
    except ValueError as exc:
        raise JoinError(str(exc)) from None
    return camp, checked
