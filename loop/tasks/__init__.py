"""Training and evaluation tasks: MQAR for CPU screening, a byte-level LM for the next stage.

A task spec is a frozen dataclass; its `spec_digest()` names it in experiment records.
Both specs offer the same methods (the `Task` protocol), so training and evaluation code
does not branch on the task except for the score it reports.
"""

from __future__ import annotations

from typing import Protocol

from loop.tasks.common import IGNORE_INDEX, Batch, TestSet, derive_seed, generator
from loop.tasks.lm import LMSpec, generated_corpus
from loop.tasks.mqar import MQARSpec

TaskSpec = MQARSpec | LMSpec


class Task(Protocol):
    """What training and evaluation need from a task spec."""

    @property
    def kind(self) -> str: ...
    @property
    def vocab_size(self) -> int: ...
    def spec_digest(self) -> str: ...
    def test_lengths(self) -> tuple[int, ...]: ...
    def train_batch(self, step: int, seed: int) -> Batch: ...
    def probe_batch(self, seed: int) -> Batch: ...
    def test_sets(self, seed: int) -> tuple[TestSet, ...]: ...


__all__ = [
    "IGNORE_INDEX",
    "Batch",
    "LMSpec",
    "MQARSpec",
    "Task",
    "TaskSpec",
    "TestSet",
    "derive_seed",
    "generated_corpus",
    "generator",
]
