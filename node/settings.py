"""The node's settings: one typed object from `<home>/config.toml` and `ASI_NODE_*` variables.

`load_settings` is the only code in the project that reads `os.environ`; everything else
receives a `Settings` (or the few values it needs) as arguments. Environment variables
win over the file, nested keys use `__` (`ASI_NODE_LOOP__WORKERS=4`), and any variable
name ending in `_FILE` reads that setting from a file instead (`ASI_NODE_API__OPERATOR_TOKEN_FILE`,
for container secrets). Unknown keys are errors in both places: a typo must not be
silently ignored.
"""

from __future__ import annotations

import logging
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args

import tomli_w
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from node.errors import ConfigError

log = logging.getLogger(__name__)

ENV_PREFIX = "ASI_NODE_"
HOME_VARIABLE = "ASI_NODE_HOME"
FILE_SUFFIX = "_file"
CONFIG_FILE = "config.toml"
DATABASE_FILE = "node.db"
WORKSPACES_DIR = "workspaces"
# The sandbox user must reach its own workspace inside the home (x) without listing the
# home or reading the config, the database or the keys beside it (no r).
HOME_MODE = 0o711
SECRET_FILE_MODE = 0o600


def default_home() -> Path:
    """`~/.asi-node`: the home when neither an argument nor ASI_NODE_HOME names one."""
    return Path.home() / ".asi-node"


def _resolve_home(home: Path | str) -> Path:
    return Path(home).expanduser().absolute()


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LoopSettings(_Section):
    """How many experiments run at once and who proposes them."""

    workers: int = Field(
        default=2, ge=1, description="experiments run at once: one per GPU, or per CPU budget"
    )
    threads_per_worker: int = Field(
        default=1,
        ge=1,
        description="torch threads per experiment; more threads than cores ran 3-5x slower",
    )
    researcher_mode: Literal["offline", "llm"] = Field(
        default="offline",
        description='"offline" (grammar mutation, no LLM) or "llm" (OpenAI-compatible API)',
    )
    lease_seconds: float = Field(
        default=120.0,
        gt=0,
        description="a running experiment stays this node's while its lease is renewed "
        "within this many seconds; once it runs out, a node sharing the database requeues it",
    )
    lease_renew_seconds: float = Field(
        default=20.0, gt=0, description="how often the node renews its running experiments' leases"
    )
    standby: bool = Field(
        default=True,
        description="start the next experiment's training sandbox (jail, interpreter, torch) "
        "while this one exports its graphs, so its start-up costs no wall time",
    )

    @model_validator(mode="after")
    def _renewed_in_time(self) -> LoopSettings:
        if self.lease_renew_seconds >= self.lease_seconds:
            raise ValueError(
                f"lease_renew_seconds ({self.lease_renew_seconds}) must be shorter than "
                f"lease_seconds ({self.lease_seconds}), or leases run out while renewed"
            )
        return self


class SandboxSettings(_Section):
    """The limits one experiment's subprocess runs under."""

    # Defaults match loop.sandbox.Limits: one CPU job on a small host.
    wall_seconds: float = Field(
        default=600.0, gt=0, description="wall-clock limit; the whole process group is killed"
    )
    cpu_seconds: int = Field(default=1200, gt=0, description="CPU-time limit (RLIMIT_CPU)")
    memory_bytes: int = Field(
        default=8 * 2**30,
        ge=0,
        description="address-space limit (RLIMIT_AS), bytes; 0 = none, needed on CUDA hosts",
    )
    max_processes: int = Field(
        default=64, gt=0, description="processes and threads of the sandbox user (RLIMIT_NPROC)"
    )
    max_file_bytes: int = Field(
        default=256 * 2**20, gt=0, description="largest file the sandbox may write (RLIMIT_FSIZE)"
    )
    allow_unisolated: bool = Field(
        default=False,
        description="run candidates with rlimits only, seeing the host, where namespaces "
        "cannot be made (a container without --cap-add SYS_ADMIN --security-opt "
        "apparmor=unconfined); by default such a node refuses to run them",
    )


class GpuSettings(_Section):
    """Training on GPUs: the devices experiments lease and the compile cache they share."""

    devices: tuple[int, ...] | Literal["auto"] = Field(
        default="auto",
        description='CUDA device indices, one experiment training per GPU (bf16); "auto": '
        "every GPU torch sees; [] = the CPU",
    )
    compile_cache: str = Field(
        default="cache/compile",
        description="Triton/Inductor cache kept across sandboxed runs, relative to the home",
    )


class ApiSettings(_Section):
    """The local HTTP API."""

    host: str = Field(default="127.0.0.1", description="address to listen on; keep it loopback")
    port: int = Field(default=8787, ge=1, le=65535, description="TCP port")
    operator_token: SecretStr | None = Field(
        default=None,
        description="bearer token for operator actions; prefer ASI_NODE_API__OPERATOR_TOKEN_FILE",
    )
    relayer_key_path: str = Field(
        default="",
        description="hex key file (relative to the home) of the account that pays gas for "
        'relayed ballots, queue and execute; it needs no votes. "" = the node\'s chain.key',
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="browser origins (e.g. https://vote.example.org) whose pages may call "
        "the API, such as a governance dApp; empty = none",
    )

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        # A browser sends its origin as scheme://host[:port]; anything else never matches.
        for origin in value:
            if not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ValueError(
                    f"{origin!r} is not an origin: write scheme://host[:port], "
                    "without a path or a trailing slash"
                )
        return value


class LLMRoleSettings(_Section):
    """One agent's own endpoint; every key left out falls back to the [llm] value."""

    base_url: str | None = Field(default=None, description="OpenAI-compatible base URL")
    model: str | None = Field(default=None, description="model name")
    api_key: SecretStr | None = Field(
        default=None, description="API key; prefer the _FILE variable of this key"
    )
    price_input_per_mtok: float | None = Field(
        default=None, ge=0, description="USD per million prompt tokens"
    )
    price_output_per_mtok: float | None = Field(
        default=None, ge=0, description="USD per million completion tokens"
    )


class LLMSettings(_Section):
    """The LLM agents (campaigns with researcher = "llm"): endpoint, model, key, limits."""

    base_url: str = Field(
        default="", description="OpenAI-compatible base URL, e.g. http://127.0.0.1:11434/v1"
    )
    model: str = Field(default="", description="model name for every role without its own")
    api_key: SecretStr | None = Field(
        default=None, description="API key; prefer ASI_NODE_LLM__API_KEY_FILE"
    )
    timeout_seconds: float = Field(default=120.0, gt=0, description="per request, per attempt")
    max_retries: int = Field(
        default=2, ge=0, description="the SDK's retries (backoff; a 429's Retry-After honoured)"
    )
    structured_outputs: Literal["auto", "on", "off"] = Field(
        default="auto",
        description='JSON-schema replies: "auto" falls back when the server refuses them',
    )
    max_output_tokens: int = Field(default=4096, ge=16, description="per reply")
    temperature: float | None = Field(default=None, ge=0, description="sampling temperature")
    price_input_per_mtok: float = Field(default=0.0, ge=0, description="USD per 1M prompt tokens")
    price_output_per_mtok: float = Field(
        default=0.0, ge=0, description="USD per 1M completion tokens"
    )
    max_code_chars: int = Field(
        default=20_000, ge=100, description="longest module the Researcher may send"
    )
    repair_rounds: int = Field(default=2, ge=0, description="debugger rounds per failed run")
    duplicate_rounds: int = Field(
        default=2, ge=0, description="times a near-duplicate proposal is sent back"
    )
    max_parallel_calls: int = Field(
        default=8,
        ge=1,
        description="Researcher calls in flight at once, and Analyst calls; 1 for a server "
        "that answers one request at a time",
    )
    researcher: LLMRoleSettings = LLMRoleSettings()
    engineer: LLMRoleSettings = LLMRoleSettings()
    analyst: LLMRoleSettings = LLMRoleSettings()


class LogSettings(_Section):
    """What the node logs."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        default="INFO",
        description="DEBUG, INFO, WARNING, ERROR or CRITICAL: what `daemon` and `serve` log "
        "(other commands log warnings; -v logs debug detail)",
    )
    format: Literal["text", "json"] = Field(
        default="text",
        description='"text": a line per record with its fields as key=value; "json": an '
        "object per line, for a log shipper",
    )

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


class IcpSettings(_Section):
    """The Internet Computer: the anchor canister and SNS governance (off while url is unset)."""

    url: str | None = Field(
        default=None, description="boundary node or local replica, e.g. https://icp-api.io"
    )
    root_key_path: str | None = Field(
        default=None, description="DER root key of a local replica; default: the IC mainnet key"
    )
    identity_path: str = Field(
        default="icp_identity.pem",
        description="the node's Ed25519 ICP key (PEM), relative to the home; created if absent",
    )
    anchor_canister: str | None = Field(default=None, description="anchor canister id")
    sns_governance_canister: str | None = Field(
        default=None, description="SNS governance canister id"
    )
    sns_pause_function: int | None = Field(default=None, description="SNS function id: pause")
    sns_resume_function: int | None = Field(default=None, description="SNS function id: resume")
    sns_stop_function: int | None = Field(default=None, description="SNS function id: stop")
    sns_fork_function: int | None = Field(default=None, description="SNS function id: fork")
    max_certificate_age_s: float = Field(
        default=300.0, gt=0, description="oldest certificate accepted (its /time), seconds"
    )
    call_timeout_s: float = Field(
        default=60.0, gt=0, description="how long to poll for an update call's answer"
    )

    @field_validator("anchor_canister", "sns_governance_canister")
    @classmethod
    def _principal(cls, value: str | None) -> str | None:
        if value is not None:
            from attestation.icp.principal import from_text

            from_text(value)  # ValueError names the problem
        return value


class TlogSettings(_Section):
    """The transparency log: node key and checkpoints."""

    checkpoint_every: int = Field(
        default=100, gt=0, description="sign a checkpoint after this many new log entries"
    )
    checkpoint_interval_s: float = Field(
        default=60.0, gt=0, description="or when this many seconds passed since the last one"
    )
    key_passphrase: SecretStr | None = Field(
        default=None,
        description="passphrase of the node key; prefer ASI_NODE_TLOG__KEY_PASSPHRASE_FILE",
    )


class GovernanceSettings(_Section):
    """How the node obeys governance directives (`asi-node gov run`)."""

    poll_seconds: float = Field(default=5.0, gt=0, description="directive poll interval")
    confirmations: int = Field(
        default=2, ge=1, description="blocks on a resume or fork before it applies"
    )
    stale_after_seconds: float = Field(
        default=60.0, gt=0, description="pause every campaign after this long without fresh state"
    )
    stop_deadline_seconds: float = Field(
        default=30.0, gt=0, description="a paused campaign's training must stop within this"
    )
    fork_configs: str = Field(
        default="fork-configs",
        description="directory (relative to the home) of fork configs named <sha256 hex>.json",
    )
    cross_check_rpc_urls: list[str] = Field(
        default_factory=list,
        description=(
            "more JSON-RPC endpoints of chain.rpc_url's chain: governance is read from all "
            "and cross-checked (an event one filters arrives through another)"
        ),
    )
    max_head_age_seconds: float = Field(
        default=600.0,
        ge=0,
        description="an endpoint whose newest block is older than this is stale (0: no limit)",
    )


class AttestationSettings(_Section):
    """TEE evidence: how this node collects it, and the policy `attest verify` applies."""

    provider: Literal["none", "sev-snp", "tdx", "nvidia"] = Field(
        default="none",
        description='"sev-snp", "tdx", "nvidia" (GPU only) or "none" (no TEE: records say so)',
    )
    gpus: bool = Field(
        default=False, description="also collect NVIDIA GPU evidence (needs asi-node[nvidia])"
    )
    tsm_path: str = Field(
        default="/sys/kernel/config/tsm/report", description="the configfs-tsm report directory"
    )
    sev_guest_device: str = Field(
        default="/dev/sev-guest", description="SEV-SNP fallback device when configfs-tsm is absent"
    )
    allow_debug: bool = Field(
        default=False, description="accept evidence from debuggable guests (never in production)"
    )
    measurements: list[str] = Field(
        default_factory=list,
        description="allowed launch measurements (hex); empty: any, with a warning in reports",
    )

    @property
    def under_tee(self) -> bool:
        """Whether the node collects TEE evidence (a provider is set): the daemon does not
        start without it, so the node's log carries it."""
        return self.provider != "none"


class ChainSettings(_Section):
    """The EVM chain that log roots are anchored on."""

    rpc_url: str = Field(
        default="",
        description='JSON-RPC URL; "" = an embedded in-process EVM with the contracts deployed',
    )
    chain_id: int = Field(
        default=0, ge=0, description="expected chain id; 0 = the one recorded in chain.json"
    )
    confirmations: int = Field(
        default=2, ge=1, description="blocks on top of an anchor before it counts as confirmed"
    )
    poll_seconds: float = Field(default=2.0, gt=0, description="anchor publisher poll interval")
    retry_base_seconds: float = Field(
        default=1.0, gt=0, description="first retry delay; doubles per attempt"
    )
    retry_max_seconds: float = Field(default=300.0, gt=0, description="longest retry delay")


class RaySettings(_Section):
    """Scale-out: experiments run as tasks on a Ray cluster (needs asi-node[ray]); this
    node stays the one writer of its store and log."""

    address: str = Field(
        default="",
        description='"" = experiments run on this machine; "auto", "host:port" or '
        '"ray://host:10001": the Ray cluster they run on',
    )
    gpus_per_experiment: int = Field(
        default=1, ge=0, le=1, description="GPUs each experiment's task holds; 0 = CPU training"
    )
    cpus_per_experiment: int = Field(
        default=0, ge=0, description="CPU slots each task holds; 0 = [loop] threads_per_worker"
    )
    workers: int = Field(
        default=0,
        ge=0,
        description="experiments in flight on the cluster; 0 = as many as its resources hold",
    )
    workspaces: str = Field(
        default="", description='workspace folder on each worker; "" = its temp folder'
    )


class NetworkSettings(_Section):
    """Following peers: each peer's log is audited as `asi-node audit URL --state` does,
    and its finished experiments of campaigns this node also runs (same config hash) are
    imported as `peer` candidates, queued to run here through the screen and sandbox."""

    peers: list[str] = Field(
        default_factory=list,
        description="base URLs of the peers' APIs (http://host:8000); empty = follow none",
    )
    directory: bool = Field(
        default=False,
        description="also follow the nodes listed in the CampaignController's directory "
        "(needs [chain] rpc_url)",
    )
    anchors: bool = Field(
        default=True,
        description="read a peer's log only up to a checkpoint an active node anchored "
        "on the chain of [chain] rpc_url, with the root the chain holds (not checked when "
        "rpc_url is empty: the embedded chain holds no peer's anchors)",
    )
    endpoint: str = Field(
        default="",
        description="this node's public API URL, published by `asi-node network publish`; "
        '"" = none',
    )
    max_entries_per_sync: int = Field(
        default=10_000,
        gt=0,
        description="log entries read from one peer per sync, at most (beyond its first "
        "checkpoint after the kept one)",
    )
    max_imports_per_sync: int = Field(
        default=20, gt=0, description="candidates imported from one peer per sync, at most"
    )
    max_pending_imports: int = Field(
        default=1_000,
        ge=0,
        description="verified records kept to import at later syncs; beyond it, dropped",
    )
    max_code_bytes: int = Field(
        default=256 * 1024, gt=0, description="the largest candidate code read from a peer"
    )
    timeout_s: float = Field(default=30.0, gt=0, description="each request to a peer")
    sync_seconds: float = Field(
        default=300.0, gt=0, description="how often the daemon syncs its peers"
    )
    retry_base_s: float = Field(
        default=60.0, gt=0, description="first wait before retrying an unreachable peer"
    )
    retry_max_s: float = Field(
        default=3_600.0, gt=0, description="the longest wait; each failure doubles it up to this"
    )

    @field_validator("peers")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        return [api_url(url, "a peer's API URL") for url in value]

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        return api_url(value, "an API URL") if value else value


def api_url(url: str, what: str) -> str:
    """`url` without a trailing slash if it is an http(s) base URL, else ValueError."""
    if not re.fullmatch(r"https?://[^\s]+", url):
        raise ValueError(f"{url!r} is not {what}: write http(s)://host[:port]")
    return url.rstrip("/")


class Settings(BaseSettings):
    """Everything the node is configured with. Build it with `load_settings`.

    Constructing `Settings()` directly gives the defaults and reads nothing from the
    environment; the file and the variables are merged by `load_settings` only, so a
    test can never pick up the developer's shell by accident.
    """

    model_config = SettingsConfigDict(extra="forbid", frozen=True)

    home: Path = Field(default_factory=default_home, description="the node's directory")
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL; default: the SQLite file node.db in the home",
    )
    log_database_url: str = Field(
        default="",
        description="where this node's transparency log, anchor outbox and governance "
        "ledger live; default: database_url. Nodes sharing one database_url each need "
        "their own",
    )
    loop: LoopSettings = LoopSettings()
    sandbox: SandboxSettings = SandboxSettings()
    gpu: GpuSettings = GpuSettings()
    api: ApiSettings = ApiSettings()
    log: LogSettings = LogSettings()
    llm: LLMSettings = LLMSettings()
    icp: IcpSettings = IcpSettings()
    tlog: TlogSettings = TlogSettings()
    governance: GovernanceSettings = GovernanceSettings()
    attestation: AttestationSettings = AttestationSettings()
    chain: ChainSettings = ChainSettings()
    ray: RaySettings = RaySettings()
    network: NetworkSettings = NetworkSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # load_settings merges the file and the variables itself, so it can say which of
        # the two a bad value came from; the class only validates what it is given.
        return (init_settings,)

    @model_validator(mode="before")
    @classmethod
    def _database_in_home(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("database_url"):
            home = _resolve_home(data.get("home") or default_home())
            return {**data, "database_url": f"sqlite:///{home / DATABASE_FILE}"}
        return data

    @field_validator("home", mode="after")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return _resolve_home(value)

    @field_validator("database_url", "log_database_url", mode="after")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if value and not value.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:")):
            raise ValueError("expected a sqlite:/// or postgresql+psycopg:// URL")
        return value

    @property
    def log_url(self) -> str:
        """The database of this node's own log: `log_database_url`, else `database_url`."""
        return self.log_database_url or self.database_url

    @property
    def config_path(self) -> Path:
        return self.home / CONFIG_FILE

    @property
    def workspaces_dir(self) -> Path:
        return self.home / WORKSPACES_DIR


def load_settings(home: Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read `<home>/config.toml` and the `ASI_NODE_*` variables of `env` into a Settings.

    `home` (the CLI's `--home`) wins over ASI_NODE_HOME, which wins over `~/.asi-node`.
    `env` defaults to the process environment. A missing config file means all defaults.
    Raises ConfigError naming the file or variable, the key and what was expected.
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    resolved = _choose_home(home, environ)
    config_path = resolved / CONFIG_FILE
    settings = _build(resolved, _read_toml(config_path), config_path, environ)
    log.debug("settings loaded", extra={"home": str(resolved), "config": str(config_path)})
    return settings


def _choose_home(home: Path | None, environ: Mapping[str, str]) -> Path:
    return _resolve_home(
        home if home is not None else (environ.get(HOME_VARIABLE) or default_home())
    )


def _build(
    home: Path, from_file: dict[str, Any], config_path: Path, environ: Mapping[str, str]
) -> Settings:
    if "home" in from_file:
        raise ConfigError(
            f"{config_path}: home: not allowed in the config file; "
            f"the home is chosen with --home or {HOME_VARIABLE}"
        )
    from_env, origins = _env_overrides(environ)
    merged = _deep_merge(from_file, from_env)
    merged["home"] = home
    try:
        return Settings(**merged)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, config_path, origins)) from None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; expected a TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


KeyPath = tuple[str, ...]


def _env_overrides(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[KeyPath, str]]:
    """The ASI_NODE_* variables as a nested dict, and which variable set each key path."""
    tree: dict[str, Any] = {}
    origins: dict[KeyPath, str] = {}
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name == HOME_VARIABLE:
            continue
        value = environ[name]
        path: KeyPath = tuple(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))
        if not all(path):
            raise ConfigError(f"environment variable {name}: empty key; use KEY or SECTION__KEY")
        if not _names_field(path) and path[-1].endswith(FILE_SUFFIX):
            target = (*path[:-1], path[-1].removesuffix(FILE_SUFFIX))
            if _names_field(target):
                value = _read_secret_file(name, Path(value))
                path = target
        node = tree
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"environment variable {name}: {part} is not a section")
            node = child
        if isinstance(node.get(path[-1]), dict):
            raise ConfigError(
                f"environment variable {name}: {'.'.join(path)} is a section; "
                f"set its keys with {name}__KEY"
            )
        node[path[-1]] = value
        origins[path] = name
    return tree, origins


def _read_secret_file(variable: str, path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(
            f"environment variable {variable}: cannot read {path}: {exc.strerror}"
        ) from None


def _model_at(path: KeyPath) -> type[BaseModel] | None:
    """The section model holding the last key of `path` (Settings for a top-level key)."""
    model: type[BaseModel] = Settings
    for part in path[:-1]:
        field = model.model_fields.get(part)
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def _field_at(path: KeyPath) -> FieldInfo | None:
    model = _model_at(path)
    return model.model_fields.get(path[-1]) if model is not None and path else None


def _names_field(path: KeyPath) -> bool:
    """Whether a key path names a setting (a leaf or a whole section) of Settings."""
    return _field_at(path) is not None


def _is_secret(path: KeyPath) -> bool:
    field = _field_at(path)
    if field is None:
        return False
    return field.annotation is SecretStr or SecretStr in get_args(field.annotation)


def _deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _describe(exc: ValidationError, config_path: Path, origins: Mapping[KeyPath, str]) -> str:
    """One line per problem: where it came from, the dotted key, what was expected."""
    problems = []
    for err in exc.errors():
        loc = tuple(str(part) for part in err["loc"])
        key = ".".join(loc) or "(top level)"
        source = next(
            (
                f"environment variable {origins[loc[:n]]}"
                for n in range(len(loc), 0, -1)
                if loc[:n] in origins
            ),
            str(config_path),
        )
        if err["type"] == "extra_forbidden":
            expected = "unknown key; expected one of: " + ", ".join(_siblings(loc))
        else:
            expected = err["msg"]
            if not _is_secret(loc) and not isinstance(err.get("input"), Mapping):
                expected += f" (got {err.get('input')!r})"
        problems.append(f"{source}: {key}: {expected}")
    return "invalid settings:\n  " + "\n  ".join(problems)


def _siblings(loc: KeyPath) -> list[str]:
    model = _model_at(loc)
    if model is None:
        return []
    return [name for name in model.model_fields if not (model is Settings and name == "home")]


def default_config_text() -> str:
    """The commented config.toml that `init_home` writes: every key at its default."""
    lines = [
        "# asi-node settings. Every key below is at its default; edit what you need.",
        f"# Any key can be overridden by an environment variable: {ENV_PREFIX}SECTION__KEY,",
        f"# e.g. {ENV_PREFIX}LOOP__WORKERS=4; append _FILE to read the value from a file.",
        "",
        "# Database URL. Default: the SQLite file node.db in this directory. For PostgreSQL:",
        '# database_url = "postgresql+psycopg://asi@db.example:5432/asi"',
        "# Nodes sharing one database_url each keep their own log elsewhere, e.g.:",
        '# log_database_url = "sqlite:////path/to/this/home/log.db"',
    ]
    defaults = Settings()
    for name in Settings.model_fields:
        section = getattr(defaults, name)
        if isinstance(section, BaseModel):
            lines += _section_text(name, section)
    return "\n".join(lines) + "\n"


def _section_text(name: str, section: BaseModel) -> list[str]:
    lines = ["", f"[{name}]"]
    if type(section).__doc__:
        doc = (type(section).__doc__ or "").strip()
        lines += [f"# {line.strip()}" for line in doc.splitlines()]
    tables = []
    for key, sub in type(section).model_fields.items():
        value = getattr(section, key)
        if isinstance(value, BaseModel):
            tables.append((f"{name}.{key}", value))
            continue
        lines.append(f"# {sub.description}")
        if value is None:
            lines.append(f'# {key} = "..."')
        else:
            lines.append(tomli_w.dumps({key: value}).strip())
    for table, value in tables:
        lines += _section_text(table, value)
    return lines


def init_home(
    home: Path | None = None, *, force: bool = False, env: Mapping[str, str] | None = None
) -> Path:
    """Create a node home: the directory, `config.toml`, `workspaces/` and the database.

    The home is chosen as in `load_settings`. The home and workspaces get mode 0711, the
    config and the SQLite file 0600. The database is the one the settings name (with the
    `ASI_NODE_*` overrides of `env`, default the process environment), created and
    migrated. Refuses to replace an existing config unless `force`; the database is never
    replaced. Nothing is written if the environment holds a bad setting. Returns the home.
    """
    from node.store import Store  # the store is heavy; settings alone must stay light

    environ: Mapping[str, str] = os.environ if env is None else env
    home = _choose_home(home, environ)
    config_path = home / CONFIG_FILE
    if config_path.exists() and not force:
        raise ConfigError(
            f"{config_path} already exists; leaving it alone. "
            "Use --force to replace it with the defaults (the database is kept)."
        )
    text = default_config_text()
    settings = _build(home, tomllib.loads(text), config_path, environ)
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(HOME_MODE)
    workspaces = home / WORKSPACES_DIR
    workspaces.mkdir(exist_ok=True)
    workspaces.chmod(HOME_MODE)
    _write_private(config_path, text)
    database_file = home / DATABASE_FILE
    if settings.database_url == f"sqlite:///{database_file}":
        # Created empty and private before SQLite opens it: SQLite gives its -wal and
        # -shm files the database file's mode, so they stay private too.
        os.close(os.open(database_file, os.O_CREAT | os.O_WRONLY, SECRET_FILE_MODE))
        database_file.chmod(SECRET_FILE_MODE)
    Store.open(settings.database_url).close()
    log.info("node home initialised", extra={"home": str(home)})
    return home


def _write_private(path: Path, text: str) -> None:
    """Write a file readable by its owner only, atomically (no moment with loose mode)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, SECRET_FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
