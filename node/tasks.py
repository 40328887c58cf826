"""From a campaign config to what the loop runs: task spec, training recipe, held-out seeds."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac

from loop.model import BackboneConfig
from loop.screen import ScreenConfig
from loop.tasks import LMSpec, MQARSpec, TaskSpec
from loop.train import TrainConfig
from node.campaign import CampaignConfig


def build_task(config: CampaignConfig) -> TaskSpec:
    if config.task == "lm":
        return LMSpec.quick() if config.preset == "quick" else LMSpec()
    return MQARSpec.quick() if config.preset == "quick" else MQARSpec()


def build_backbone(config: CampaignConfig) -> BackboneConfig:
    return BackboneConfig(vocab_size=build_task(config).vocab_size)


def build_train(config: CampaignConfig, threads: int, seed: int) -> TrainConfig:
    """The preset's recipe on `seed`; `train_steps` rescales it (early abort moves along)."""
    recipe = TrainConfig.quick() if config.preset == "quick" else TrainConfig()
    if config.train_steps is not None:
        recipe = recipe.with_steps(config.train_steps)
    return dataclasses.replace(recipe, threads=threads, seed=seed)


def build_screen(origin: str) -> ScreenConfig:
    """Baselines skip the cost-scaling check: softmax attention is quadratic on purpose."""
    return ScreenConfig(max_cost_ratio=None) if origin == "baseline" else ScreenConfig()


def heldout_seed(secret: bytes, experiment_id: str) -> int:
    """The held-out draw of one experiment: keyed by the node's secret, never sent to it."""
    digest = hmac.new(secret, experiment_id.encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:6], "big")
