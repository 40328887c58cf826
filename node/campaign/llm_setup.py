"""The node's LLM set-up for campaign runs: endpoints per role from the settings, the
probes run before a campaign starts, the cognition base and the campaign's LLM caps."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from loop.cognition import CognitionBase, CognitionError
from loop.llm import ROLES, Caps, Endpoint, Ledger, OpenAIChat, Portal, Role
from node.campaign.config import CampaignConfig
from node.errors import ConfigError
from node.settings import Settings

COGNITION_FILE = "cognition.jsonl"


@dataclass(frozen=True)
class LLMSetup:
    """The node's LLM configuration, resolved per role (secrets as plain strings here:
    this object is never logged or stored)."""

    endpoints: Mapping[Role, Endpoint]
    max_code_chars: int = 20_000
    repair_rounds: int = 2
    duplicate_rounds: int = 2
    cognition_file: Path | None = None
    max_parallel_calls: int = 8  # Researcher calls in flight at once, and Analyst calls
    # Proposals to have coming (queued or asked for); None: sized from the workers and the
    # measured call and experiment times; 0: one per idle worker, when it is idle.
    proposals_ahead: int | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, url: str | None = None, model: str | None = None
    ) -> LLMSetup:
        """Endpoints per role from [llm] (a role's own keys win); `url` and `model` (the
        demo's --llm-url and --model) replace them for every role. Raises ConfigError when a
        role ends up without a base URL or a model."""
        llm = settings.llm
        endpoints: dict[Role, Endpoint] = {}
        for role in ROLES:
            own = getattr(llm, role)
            base_url = url or own.base_url or llm.base_url
            name = model or own.model or llm.model
            if not base_url:
                raise ConfigError(
                    f"no LLM endpoint for the {role}: set [llm] base_url in config.toml "
                    "(or ASI_NODE_LLM__BASE_URL), or pass --llm-url"
                )
            if not name:
                raise ConfigError(
                    f"no LLM model for the {role}: set [llm] model (or ASI_NODE_LLM__MODEL), "
                    "or pass --model"
                )
            key = own.api_key or llm.api_key
            endpoints[role] = Endpoint(
                base_url=base_url,
                model=name,
                api_key=key.get_secret_value() if key is not None else "",
                timeout_s=llm.timeout_seconds,
                max_retries=llm.max_retries,
                structured=llm.structured_outputs,
                max_output_tokens=llm.max_output_tokens,
                temperature=llm.temperature,
                price_input_per_mtok=(
                    own.price_input_per_mtok
                    if own.price_input_per_mtok is not None
                    else llm.price_input_per_mtok
                ),
                price_output_per_mtok=(
                    own.price_output_per_mtok
                    if own.price_output_per_mtok is not None
                    else llm.price_output_per_mtok
                ),
            )
        return cls(
            endpoints,
            max_code_chars=llm.max_code_chars,
            repair_rounds=llm.repair_rounds,
            duplicate_rounds=llm.duplicate_rounds,
            cognition_file=settings.home / COGNITION_FILE,
            max_parallel_calls=llm.max_parallel_calls,
        )


def check_endpoints(setup: LLMSetup) -> list[str]:
    """Probe every distinct endpoint and model before a run: one line per endpoint found
    working. Raises ConfigError saying what is wrong (unreachable, key, model)."""
    from loop.llm import LLMConfigError

    portal = Portal()
    chat = OpenAIChat(setup.endpoints, Ledger(Caps()))
    seen: dict[tuple[str, str], str] = {}
    try:
        for role in ROLES:
            ep = setup.endpoints[role]
            if (ep.base_url, ep.model) not in seen:
                seen[(ep.base_url, ep.model)] = portal.call(chat.probe(role))
    except LLMConfigError as exc:
        raise ConfigError(str(exc)) from None
    finally:
        portal.call(chat.close())
        portal.close()
    return list(seen.values())


def first_model(url: str, api_key: str = "") -> str | None:
    """The first model an endpoint lists: the demo's model when none is named."""
    endpoint = Endpoint(base_url=url, model="", api_key=api_key, timeout_s=10, max_retries=0)
    portal = Portal()
    chat = OpenAIChat(dict.fromkeys(ROLES, endpoint), Ledger(Caps()))
    try:
        return portal.call(chat.first_model("researcher"))
    finally:
        portal.call(chat.close())
        portal.close()


def load_cognition(path: Path | None) -> CognitionBase:
    try:
        return CognitionBase.load(path)
    except CognitionError as exc:
        raise ConfigError(f"cognition base: {exc}") from None


def caps_of(config: CampaignConfig) -> Caps:
    b = config.budget
    return Caps(b.max_llm_calls, b.max_llm_tokens, b.max_llm_cost_usd)
