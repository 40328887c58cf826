"""From a campaign config to what the loop runs: task spec, training recipe, held-out seeds."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from pathlib import Path

import numpy as np

from attestation.schema import CandidateOrigin
from loop.model import BackboneConfig
from loop.screen import ScreenConfig
from loop.tasks import LMSpec, MQARSpec, TaskSpec
from loop.tasks.lm import read_stream
from loop.train import TrainConfig
from loop.train_device import EXPLORATION_VOCAB, ExplorationPreset, exploration_preset
from node.campaign.config import CampaignConfig
from node.errors import ConfigError


def build_task(config: CampaignConfig) -> TaskSpec:
    if config.task == "lm":
        if config.preset == "exploration":
            return _exploration(config).spec
        spec = LMSpec.quick() if config.preset == "quick" else LMSpec()
        if config.data_path is not None:
            vocab = config.vocab_size or spec.vocab_size
            spec = dataclasses.replace(spec, data_path=config.data_path, vocab_size=vocab)
        return spec
    return MQARSpec.quick() if config.preset == "quick" else MQARSpec()


def build_backbone(config: CampaignConfig) -> BackboneConfig:
    if config.preset == "exploration":
        return _exploration(config).model
    return BackboneConfig(vocab_size=build_task(config).vocab_size)


def build_train(config: CampaignConfig, threads: int, seed: int) -> TrainConfig:
    """The preset's recipe on `seed`; `train_steps` rescales it (early abort moves along)."""
    if config.preset == "exploration":
        recipe = _exploration(config).train
    else:
        recipe = TrainConfig.quick() if config.preset == "quick" else TrainConfig()
    if config.train_steps is not None:
        recipe = recipe.with_steps(config.train_steps)
    return dataclasses.replace(recipe, threads=threads, seed=seed)


def _exploration(config: CampaignConfig) -> ExplorationPreset:
    assert config.data_path is not None  # the config's validator insists
    return exploration_preset(config.data_path, vocab_size=config.vocab_size or EXPLORATION_VOCAB)


SCAN_CHUNK = 1 << 24  # tokens read at a time when a shard is scanned (memory-mapped)


def check_data(config: CampaignConfig, home: Path, scan_tokens: int | None = 1 << 20) -> None:
    """ConfigError unless the campaign's data shard can be read as one (a 1-D integer
    .npy, or raw little-endian uint16), its first `scan_tokens` tokens (None: every one)
    lie below the vocabulary, and its folder does not hold the node's `home` (the
    sandbox exposes that folder to candidates): caught when the campaign is created
    (every token) or run (the first ones), not as a failure of every experiment."""
    if config.data_path is None:
        return
    spec = build_task(config)
    assert isinstance(spec, LMSpec)
    path = Path(config.data_path)
    if not path.is_absolute():
        raise ConfigError(f"data_path {path}: give an absolute path")
    if not path.is_file():
        raise ConfigError(f"data_path {path}: no such file")
    if home.resolve().is_relative_to(path.resolve().parent):
        raise ConfigError(
            f"data_path {path}: its folder holds the node home {home}, and candidates "
            "get to read that folder; keep shards in a folder of their own"
        )
    try:
        stream = read_stream(spec)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"data_path {path}: not a token shard ({exc})") from None
    needed = spec.seq_len + 1
    if len(stream) < 2 * needed:
        raise ConfigError(
            f"data_path {path}: {len(stream)} tokens, too few for sequences of {spec.seq_len}"
        )
    end = len(stream) if scan_tokens is None else min(scan_tokens, len(stream))
    top = max(int(np.max(stream[i : min(i + SCAN_CHUNK, end)])) for i in range(0, end, SCAN_CHUNK))
    if top >= spec.vocab_size:
        raise ConfigError(
            f"data_path {path}: token {top} is outside the vocabulary of {spec.vocab_size} "
            "(set vocab_size to the shard's)"
        )


def build_screen(origin: CandidateOrigin) -> ScreenConfig:
    """Baselines skip the cost-scaling check: softmax attention is quadratic on purpose."""
    if origin is CandidateOrigin.BASELINE:
        return ScreenConfig(max_cost_ratio=None)
    return ScreenConfig()


def heldout_seed(secret: bytes, experiment_id: str) -> int:
    """The held-out draw of one experiment: keyed by the node's secret, never sent to it."""
    digest = hmac.new(secret, experiment_id.encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:6], "big")
