"""A campaign's configuration: the task, the baselines, the budgets; content-hashed."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)

from attestation.canonical import json_sha256
from kernels.baselines import BASELINES
from node.errors import ConfigError


class Budget(BaseModel):
    """When a campaign stops proposing: generated candidates, or summed experiment time."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_candidates: int = Field(default=24, ge=0)
    max_wall_seconds: float | None = Field(default=None, gt=0)
    max_rerun_candidates: int | None = Field(
        default=None, ge=0, description="candidates that may earn re-runs; None: all"
    )
    # LLM budget (researcher = "llm"): when one is spent the campaign pauses.
    max_llm_calls: int | None = Field(default=None, ge=0)
    max_llm_tokens: int | None = Field(default=None, ge=0)
    max_llm_cost_usd: float | None = Field(default=None, ge=0)


class Selected(BaseModel):
    """A candidate a verification stage re-trains, as the node chose it at creation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    candidate_id: str  # in the source campaign
    name: str
    code_digest: str
    experiment_id: str  # its first-seed experiment in the source campaign
    leaf_hash: str  # hex RFC 6962 leaf hash of that experiment's record in the node's log
    mean: float  # fitness over its seeds in the source campaign
    lower_bound: float  # what ranked it
    seeds: int


class Verify(BaseModel):
    """A verification stage: the top k of an earlier campaign (by a lower confidence
    bound over its seeds), re-trained at this campaign's scale on the seed and every re-run
    seed, beside baselines matched to each candidate's non-embedding parameter count.

    The bound is mean - z * s / sqrt(n) over the candidate's n scored seeds, with s the
    largest of their sample spread, the seed-to-seed spread pooled over the source's
    candidates that were re-run, and `seed_noise` (a floor; about a point on MQAR). The
    node fills `selected` when the campaign is created, so the choice, k and every
    threshold are part of the hashed config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(description="the campaign whose candidates this stage verifies")
    top_k: int = Field(default=3, ge=1)
    z: float = Field(default=1.645, ge=0, description="one-sided normal quantile (95 %)")
    seed_noise: float = Field(default=0.01, ge=0)
    min_lower_bound: float | None = Field(
        default=None, description="leave out candidates whose bound is not above this"
    )
    param_tolerance: float = Field(default=0.05, gt=0, lt=1)
    selected: tuple[Selected, ...] = ()


class Rungs(BaseModel):
    """Early stopping on the learning curve (node.campaign.rungs): at each rung, a fraction
    of the recipe's steps, a generated candidate's first run goes on only while its
    training loss is within the best `keep` share of the losses that the campaign's runs on
    the same seed had at that step; the rest stop as 'outpaced'. Baselines, re-runs and
    verification stages always train to the end.

    The defaults, one rung at two-thirds keeping two-thirds: over the two samples of
    full-recipe MQAR curves in tests/node/data they kept 5 of the 6 best-three candidates,
    the old ones (a quarter and a half, keeping half) 1. Good candidates leave MQAR's
    plateau as late as half-way, so earlier rungs stop them with the hopeless."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    at: tuple[float, ...] = Field(
        default=(0.67,), description="the rungs, as fractions of the recipe's steps"
    )
    keep: float = Field(default=0.67, gt=0, le=1, description="the share of runs that go on")
    min_peers: int = Field(
        default=4, ge=1, description="a rung cuts once this many runs have reached it"
    )

    @model_validator(mode="after")
    def _increasing(self) -> Rungs:
        if not self.at or any(not 0 < f < 1 for f in self.at):
            raise ValueError("rungs lie strictly between 0 and 1 (fractions of the steps)")
        if list(self.at) != sorted(set(self.at)):
            raise ValueError("rungs must be increasing")
        return self


class Replication(BaseModel):
    """Re-running peers' discoveries (node.network.replication): of the candidates a sync
    imports from a peer, the best `share` by the fitness their records state run here on
    `seeds` instead of the campaign's seed; their mean fitness here within `spread` of the
    stated one replicates the record, anything else is a failed replication; with
    `attested`, only a replicating node under a verified TEE counts. Part of the hashed
    config, so every node of the campaign replicates by the same rule."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    share: float = Field(default=1.0, ge=0, le=1, description="of each sync's imports")
    seeds: tuple[int, ...] = Field(default=(101, 102), min_length=1)
    spread: float = Field(default=0.02, ge=0, description="|mean here - stated fitness|")
    attested: bool = Field(
        default=False,
        description="count only replications by nodes whose logs carry verified TEE evidence",
    )

    @model_validator(mode="after")
    def _distinct(self) -> Replication:
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("replication seeds must be distinct")
        return self

    @model_serializer(mode="wrap")
    def _attested_when_asked(self, handler: SerializerFunctionWrapHandler) -> Any:
        # Rules from before `attested` hash as they did: no `attested: false`.
        data = handler(self)
        if isinstance(data, dict) and not self.attested:
            data.pop("attested", None)
        return data


class CampaignConfig(BaseModel):
    """Everything that decides what a campaign computes. Its hash names the recipe."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task: Literal["mqar", "lm"] = "mqar"
    # "exploration": the LM stage at ASI-Arch's exploration scale (about 20 M parameters,
    # context 2048, 1 B training tokens) on a tokenised shard; GPU nodes only
    # (loop.train_device).
    preset: Literal["quick", "full", "exploration"] = "full"
    train_steps: int | None = Field(default=None, ge=1, description="overrides the preset's")
    train_tokens: int | None = Field(
        default=None,
        ge=1,
        description="lm: training budget in tokens (steps = tokens / (batch x context)); "
        "default: the preset's (1 B for exploration)",
    )
    heldout_tokens: int | None = Field(
        default=None,
        ge=1,
        description="lm: size of the campaign's held-out split in target tokens; default: "
        "the preset's (4,194,304 for exploration)",
    )
    data_path: str | None = Field(
        default=None,
        description="lm: a tokenised shard (.npy, or raw uint16) instead of the generated corpus",
    )
    vocab_size: int | None = Field(
        default=None,
        ge=2,
        description="the shard's vocabulary (default: 256, or 32,000 with exploration)",
    )
    benchmarks: str | None = Field(
        default=None,
        description="lm: a folder of zero-shot benchmarks staged with `asi-node bench stage` "
        "(the shard's tokenizer), scored on every experiment and counted by lm-fitness-v1",
    )
    baselines: tuple[str, ...] = ("deltanet", "gated_deltanet", "mamba2", "linear", "softmax")
    reference: str = "deltanet"
    seed: int = 0
    rerun_seeds: tuple[int, ...] = (1, 2)
    promote_margin: float = 0.01  # re-runs only above seed noise (about a point on MQAR)
    researcher: Literal["offline", "llm"] = "offline"
    # "fitness-v1+judge" adds the LLM Analyst's judge score (llm campaigns only).
    fitness: Literal["fitness-v1", "fitness-v1+judge"] = "fitness-v1"
    researcher_seed: int = 0
    budget: Budget = Budget()
    verify: Verify | None = None
    rungs: Rungs | None = None
    replication: Replication | None = None

    @model_validator(mode="after")
    def _known_names(self) -> CampaignConfig:
        unknown = [b for b in self.baselines if b not in BASELINES]
        if unknown:
            raise ValueError(f"unknown baselines {unknown}; known: {sorted(BASELINES)}")
        if self.reference not in self.baselines:
            raise ValueError(f"reference {self.reference!r} must be one of the baselines")
        if self.seed in self.rerun_seeds:
            raise ValueError("rerun_seeds must differ from seed")
        if self.fitness != "fitness-v1" and self.researcher != "llm":
            raise ValueError(f"fitness {self.fitness!r} needs researcher = 'llm'")
        if self.data_path is not None and self.task != "lm":
            raise ValueError("data_path is for task = 'lm' (a tokenised shard)")
        if self.preset == "exploration" and self.data_path is None:
            raise ValueError("preset 'exploration' needs task = 'lm' and a data_path shard")
        if self.vocab_size is not None and self.data_path is None:
            raise ValueError("vocab_size goes with data_path (the shard's vocabulary)")
        if self.benchmarks is not None and self.task != "lm":
            raise ValueError("benchmarks are for task = 'lm' (staged with asi-node bench stage)")
        lm_only = (self.train_tokens, self.heldout_tokens)
        if self.task != "lm" and any(v is not None for v in lm_only):
            raise ValueError("train_tokens and heldout_tokens are for task = 'lm'")
        if self.train_tokens is not None and self.train_steps is not None:
            raise ValueError("set train_tokens or train_steps, not both")
        if self.verify is not None and len(self.rerun_seeds) < 2:
            raise ValueError(
                "a verification stage trains on at least 3 seeds: seed and 2 rerun_seeds"
            )
        if len(set(self.rerun_seeds)) != len(self.rerun_seeds):
            raise ValueError("rerun_seeds must be distinct")
        if self.verify is not None and self.rungs is not None:
            raise ValueError(
                "a verification stage trains every chosen candidate to the end: no rungs"
            )
        return self

    @model_serializer(mode="wrap")
    def _no_unset_sections(self, handler: SerializerFunctionWrapHandler) -> Any:
        # Configs from before verification stages, rungs and replication hash as they
        # did: no `verify: null`, no `rungs: null`, no `replication: null`.
        data = handler(self)
        if isinstance(data, dict):
            for key in ("verify", "rungs", "replication"):
                if data.get(key) is None:
                    data.pop(key, None)
        return data

    @property
    def seeds(self) -> tuple[int, ...]:
        """Every seed the campaign trains on: `seed`, then the re-run seeds."""
        return (self.seed, *self.rerun_seeds)

    def config_hash(self) -> str:
        """The hash the config is known by: SHA-256 of its RFC 8785 JSON, as stored."""
        return "sha256:" + json_sha256(self.model_dump(mode="json")).hex()


def parse_config(data: dict[str, Any], source: str = "campaign config") -> CampaignConfig:
    """Validate a config mapping; a bad key is named with its dotted path."""
    try:
        return CampaignConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(top level)"
            problems.append(f"{where}: {err['msg']}")
        raise ConfigError(f"{source}: " + "; ".join(problems)) from None


def load_config(path: Path) -> CampaignConfig:
    """Read a campaign config TOML file."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such campaign config file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(data, str(path))


def demo_config(researcher: Literal["offline", "llm"] = "offline") -> CampaignConfig:
    """The demo: the quick preset, two baselines and eight generated candidates, without
    promotion re-runs so that it fits about ten minutes on two cores; `campaign run` on
    a config of your own re-runs and promotes. With the llm researcher, a budget of 200
    calls and two million tokens."""
    llm = researcher == "llm"
    return CampaignConfig(
        preset="quick",
        baselines=("deltanet", "linear"),
        researcher=researcher,
        budget=Budget(
            max_candidates=8,
            max_rerun_candidates=0,
            max_llm_calls=200 if llm else None,
            max_llm_tokens=2_000_000 if llm else None,
        ),
    )
