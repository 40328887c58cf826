"""From a campaign config to what the loop runs: task spec, training recipe, held-out seeds
and split; the checks a campaign's data and devices must pass before it runs."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from attestation.schema import CandidateOrigin
from loop.model import BackboneConfig, swiglu_hidden
from loop.screen import ScreenConfig
from loop.tasks import LMSpec, MQARSpec, TaskSpec
from loop.tasks.lm import heldout_windows_for, read_stream
from loop.tasks.shards import read_manifest
from loop.train import TrainConfig
from loop.train_device import (
    EXPLORATION_HELDOUT_TOKENS,
    EXPLORATION_TRAIN_TOKENS,
    EXPLORATION_VOCAB,
    ExplorationPreset,
    exploration_preset,
    steps_for_tokens,
)
from node.campaign.config import CampaignConfig
from node.errors import ConfigError


def build_task(config: CampaignConfig, split_key: str = "") -> TaskSpec:
    """The campaign's task; for the LM task `split_key` (node.campaign.tasks.split_key)
    picks the held-out windows, "" for a spec that only names the task (records)."""
    if config.task == "lm":
        if config.preset == "exploration":
            return dataclasses.replace(_exploration(config).spec, split_key=split_key)
        spec = LMSpec.quick() if config.preset == "quick" else LMSpec()
        if config.data_path is not None:
            vocab = config.vocab_size or spec.vocab_size
            spec = dataclasses.replace(spec, data_path=config.data_path, vocab_size=vocab)
        if config.heldout_tokens is not None:
            windows = heldout_windows_for(config.heldout_tokens, spec.seq_len)
            spec = dataclasses.replace(spec, heldout_windows=windows)
        return dataclasses.replace(spec, split_key=split_key)
    return MQARSpec.quick() if config.preset == "quick" else MQARSpec()


def build_backbone(config: CampaignConfig) -> BackboneConfig:
    """MQAR: DESIGN section 3's screening model (no MLP); LM: blocks with a SwiGLU MLP."""
    if config.preset == "exploration":
        return _exploration(config).model
    backbone = BackboneConfig(vocab_size=build_task(config).vocab_size)
    if config.task == "lm":
        return dataclasses.replace(backbone, mlp_hidden=swiglu_hidden(backbone.d_model))
    return backbone


def build_train(config: CampaignConfig, threads: int, seed: int) -> TrainConfig:
    """The preset's recipe on `seed`; `train_steps`, or `train_tokens` over the task's
    batch and context, rescales it (early abort moves along)."""
    if config.preset == "exploration":
        recipe = _exploration(config).train
    else:
        recipe = TrainConfig.quick() if config.preset == "quick" else TrainConfig()
        spec = build_task(config)
        if isinstance(spec, LMSpec):
            # MQAR's abort threshold is a margin under chance over its values; a language
            # model's chance is ln(vocabulary), as the exploration preset has it.
            hopeless = round(0.9 * math.log(spec.vocab_size), 2)
            recipe = dataclasses.replace(recipe, abort_min_loss=hopeless)
        if config.train_tokens is not None:
            assert isinstance(spec, LMSpec)  # the config's validator insists
            recipe = recipe.with_steps(
                steps_for_tokens(config.train_tokens, spec.batch_size, spec.seq_len)
            )
    if config.train_steps is not None:
        recipe = recipe.with_steps(config.train_steps)
    return dataclasses.replace(recipe, threads=threads, seed=seed)


def _exploration(config: CampaignConfig) -> ExplorationPreset:
    assert config.data_path is not None  # the config's validator insists
    return exploration_preset(
        config.data_path,
        vocab_size=config.vocab_size or EXPLORATION_VOCAB,
        train_tokens=config.train_tokens or EXPLORATION_TRAIN_TOKENS,
        heldout_tokens=config.heldout_tokens or EXPLORATION_HELDOUT_TOKENS,
    )


SCAN_CHUNK = 1 << 24  # tokens read at a time when a shard is scanned (memory-mapped)


def check_data(
    config: CampaignConfig,
    home: Path,
    scan_tokens: int | None = 1 << 20,
    *,
    gpus: Sequence[int],
) -> None:
    """ConfigError unless the campaign can run on this node's data and devices, caught
    when the campaign is created (every token) or run (the first ones), not as a failure
    of every experiment:

    1. the exploration preset needs GPUs (`gpus`, the node's `[gpu] devices`);
    2. the shard can be read as one (a 1-D integer .npy, or raw little-endian uint16) and
       its folder does not hold the node's `home` (the sandbox exposes that folder to
       candidates);
    3. it holds the held-out split plus at least one training window;
    4. the vocabulary fits: the shard's manifest.json (from loop.tasks.shards), when it
       lists the shard, names the campaign's vocab_size, and its first `scan_tokens`
       tokens (None: every one) lie below it."""
    if config.preset == "exploration" and not gpus:
        raise ConfigError(
            "preset 'exploration' trains about 20 M-parameter models on "
            f"{config.train_tokens or EXPLORATION_TRAIN_TOKENS:,} tokens each and needs "
            "GPUs: list them in the node's config.toml ([gpu] devices = [0]), or use "
            "preset = 'quick' or 'full' on this CPU node"
        )
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
    try:
        spec.split(len(stream))
    except ValueError as exc:
        raise ConfigError(
            f"data_path {path}: too small for this campaign: {exc}; use a larger shard or "
            "set heldout_tokens lower"
        ) from None
    declared = _manifest_vocab(path)
    if declared is not None and declared != spec.vocab_size:
        raise ConfigError(
            f"data_path {path}: its manifest.json says the tokenizer has {declared:,} tokens "
            f"but the campaign's vocabulary is {spec.vocab_size:,} (set vocab_size = {declared})"
        )
    end = len(stream) if scan_tokens is None else min(scan_tokens, len(stream))
    top = max(int(np.max(stream[i : min(i + SCAN_CHUNK, end)])) for i in range(0, end, SCAN_CHUNK))
    if top >= spec.vocab_size:
        raise ConfigError(
            f"data_path {path}: token {top} is outside the vocabulary of {spec.vocab_size} "
            "(set vocab_size to the shard's)"
        )


def _manifest_vocab(path: Path) -> int | None:
    """The vocabulary that the manifest.json beside a shard declares for it; None when there
    is no readable manifest that lists this file (a shard made by other tools)."""
    try:
        manifest = read_manifest(path.parent)
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if not any(shard.file == path.name for shard in manifest.shards):
        return None
    return int(manifest.vocab_size)


def build_screen(origin: CandidateOrigin) -> ScreenConfig:
    """Baselines skip the cost-scaling check: softmax attention is quadratic on purpose."""
    if origin is CandidateOrigin.BASELINE:
        return ScreenConfig(max_cost_ratio=None)
    return ScreenConfig()


def heldout_seed(secret: bytes, experiment_id: str) -> int:
    """The held-out draw of one experiment: keyed by the node's secret, never sent to it
    (MQAR's test sets; the LM task's causality probe)."""
    digest = hmac.new(secret, experiment_id.encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:6], "big")


def split_key(secret: bytes, campaign_id: str) -> str:
    """The LM task's held-out split of one campaign: keyed by the node's secret, so the
    held-out windows are the same for every candidate and baseline of the campaign and
    no one without the secret can tell which they are."""
    return hmac.new(secret, f"heldout-split:{campaign_id}".encode(), hashlib.sha256).hexdigest()
