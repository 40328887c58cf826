"""From a campaign config to what the loop runs: task spec, training recipe, held-out seeds
and split; the checks a campaign's data and devices must pass before it runs."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from attestation.schema import CandidateOrigin
from loop.benchmarks.staged import Manifest as StagedManifest
from loop.benchmarks.staged import Staged, StagedError
from loop.benchmarks.staged import load as load_staged
from loop.engineer import ExperimentJob
from loop.model import BackboneConfig, swiglu_hidden
from loop.probe import Probe
from loop.screen import ScreenConfig
from loop.tasks import LMSpec, MQARSpec, TaskSpec
from loop.tasks.lm import heldout_windows_for, read_stream
from loop.tasks.shards import Manifest as ShardManifest
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
from node.campaign.rungs import rung_cuts
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
       tokens (None: every one) lie below it;
    5. the staged benchmarks (`check_benchmarks`) are intact and were tokenised as the
       shard was."""
    if config.preset == "exploration" and not gpus:
        raise ConfigError(
            "preset 'exploration' trains about 20 M-parameter models on "
            f"{config.train_tokens or EXPLORATION_TRAIN_TOKENS:,} tokens each and needs "
            "GPUs: list them in the node's config.toml ([gpu] devices = [0]), or use "
            "preset = 'quick' or 'full' on this CPU node"
        )
    if config.data_path is None:
        check_benchmarks(config, home)
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
    shard = _shard_manifest(path)
    declared = None if shard is None else int(shard.vocab_size)
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
    check_benchmarks(config, home)


def _shard_manifest(path: Path) -> ShardManifest | None:
    """The manifest.json beside a shard when it lists the shard; None when there is no
    readable manifest that lists this file (a shard made by other tools)."""
    try:
        manifest = read_manifest(path.parent)
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if not any(shard.file == path.name for shard in manifest.shards):
        return None
    return manifest


def check_benchmarks(config: CampaignConfig, home: Path) -> Staged | None:
    """ConfigError unless the campaign's staged benchmarks can be scored on its models:

    1. an absolute path to a folder that does not hold the node home and lies outside
       the shard's folder (training reads that one: the answers must stay out of reach);
    2. a staged folder whose files match its manifest (loop.benchmarks.staged);
    3. tokenised as the campaign's data: the same vocabulary size, and the shard's
       tokenizer (by its manifest.json: "bytes", or the same tokenizer.json by sha256;
       the generated corpus is bytes);
    4. every continuation fits the model's context."""
    if config.benchmarks is None:
        return None
    folder = Path(config.benchmarks)
    if not folder.is_absolute():
        raise ConfigError(f"benchmarks {folder}: give an absolute path")
    if not folder.is_dir():
        raise ConfigError(f"benchmarks {folder}: no such folder (stage it: asi-node bench stage)")
    if home.resolve().is_relative_to(folder.resolve()):
        raise ConfigError(
            f"benchmarks {folder}: it holds the node home {home}; stage benchmarks in a "
            "folder of their own"
        )
    spec = build_task(config)
    assert isinstance(spec, LMSpec)
    if config.data_path is not None:
        shard_dir = Path(config.data_path).resolve().parent
        if folder.resolve().is_relative_to(shard_dir):
            raise ConfigError(
                f"benchmarks {folder}: it lies in the shard's folder {shard_dir}, which "
                "training reads; stage benchmarks in a folder of their own"
            )
    try:
        staged = load_staged(folder)
    except StagedError as exc:
        raise ConfigError(f"benchmarks: {exc}") from None
    manifest = staged.manifest
    if manifest.vocab_size != spec.vocab_size:
        raise ConfigError(
            f"benchmarks {folder}: staged with a tokenizer of {manifest.vocab_size:,} tokens "
            f"({manifest.tokenizer}) but the campaign's vocabulary is {spec.vocab_size:,}; "
            "stage them again with the shard's tokenizer"
        )
    shard = None if config.data_path is None else _shard_manifest(Path(config.data_path))
    expected: tuple[str, str | None] | None = ("bytes", None) if config.data_path is None else None
    if shard is not None:
        expected = (shard.tokenizer, shard.tokenizer_sha256)
    if expected is not None and not _same_tokenizer(expected, manifest):
        raise ConfigError(
            f"benchmarks {folder}: staged with tokenizer {manifest.tokenizer} but the "
            f"campaign's data was tokenised with {expected[0]}; stage them again with "
            f"--tokenizer {expected[0]}"
        )
    for bench in staged.benchmarks:
        if bench.entry.max_continuation_tokens > spec.seq_len:
            raise ConfigError(
                f"benchmarks {folder}: {bench.name} has a continuation of "
                f"{bench.entry.max_continuation_tokens} tokens, longer than the model's "
                f"context of {spec.seq_len}"
            )
    return staged


def _same_tokenizer(expected: tuple[str, str | None], manifest: StagedManifest) -> bool:
    """Bytes on both sides, or tokenizer files of the same sha256 (where both recorded
    one; a shard from before digests were recorded is matched by its path)."""
    name, digest = expected
    if (name == "bytes") != (manifest.tokenizer == "bytes"):
        return False
    if name == "bytes":
        return True
    if digest is not None and manifest.tokenizer_sha256 is not None:
        return digest == manifest.tokenizer_sha256
    return Path(name).resolve() == Path(manifest.tokenizer).resolve()


def build_screen(origin: CandidateOrigin) -> ScreenConfig:
    """Baselines skip the cost-scaling check: softmax attention is quadratic on purpose."""
    if origin is CandidateOrigin.BASELINE:
        return ScreenConfig(max_cost_ratio=None)
    return ScreenConfig()


def experiment_job(
    config: CampaignConfig,
    *,
    experiment_id: str,
    code: str,
    origin: CandidateOrigin,
    seed: int,
    threads: int,
    split: str,
    heldout: int,
    options: Mapping[str, Any] | None = None,
    backbone: BackboneConfig | None = None,
    twins: tuple[tuple[str, Probe], ...] = (),
    peers: Iterable[Sequence[Sequence[float]]] | None = None,
) -> ExperimentJob:
    """One experiment of a campaign as the Engineer runs it: the campaign's task with the
    held-out `split` key (`split_key`), its recipe on `seed` and `threads`, the held-out
    draw `heldout` (`heldout_seed`), the screen for the candidate's `origin`, and its
    staged benchmarks; `backbone` when it trains at another width than the campaign's.
    `peers`, the loss curves of the campaign's other runs on `seed`, set the recipe's
    rungs when the campaign has `[rungs]` (None: a run that is never cut)."""
    train = build_train(config, threads, seed)
    if config.rungs is not None and peers is not None:
        cuts = rung_cuts(config.rungs, train.steps, train.log_every, peers)
        train = dataclasses.replace(train, rungs=cuts)
    return ExperimentJob(
        experiment_id=experiment_id,
        code=code,
        task=build_task(config, split),
        train=train,
        seed=seed,
        heldout_seed=heldout,
        backbone=backbone or build_backbone(config),
        options=dict(options or {}),
        screen=build_screen(origin),
        benchmarks=None if config.benchmarks is None else Path(config.benchmarks),
        twins=twins,
    )


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
