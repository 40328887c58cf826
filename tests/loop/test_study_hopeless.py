from __future__ import annotations

import dataclasses

import pytest

from loop.researcher.grammar import Genome
from loop.tasks.mqar import MQARSpec
from loop.train import TrainConfig
from scripts import study_hopeless


def test_candidates_are_found_by_their_grammar_names() -> None:
    genome = Genome(
        update="additive", feature="elu1", qk_l2=False, value="identity", conv=0, norm="none"
    )
    assert genome.name == "add-elu1"
    assert study_hopeless.genomes_named(["add-elu1", "delta-silu-l2-vsilu-conv4-rms"]) == [
        genome,
        Genome(),
    ]
    with pytest.raises(ValueError, match="not a grammar candidate's name: add-nothing"):
        study_hopeless.genomes_named(["add-elu1", "add-nothing"])


def test_a_candidate_trains_to_the_abort_step_and_stops_with_the_probe_read() -> None:
    config = dataclasses.replace(TrainConfig.quick(), steps=40, abort_step=10, log_every=5)
    log = study_hopeless.to_abort_step(Genome(), MQARSpec.quick(), config)
    assert log.steps_done == 10 and log.loss_curve[-1][0] == 10
    assert log.probe_loss is not None and log.probe_accuracy is not None
    assert 0.0 <= log.probe_accuracy <= 1.0 and log.probe_loss > 0.0
    # Accuracy is never below 0 nor the loss below -1: these bounds stop nothing ...
    assert not study_hopeless.stopped_by(log, 0.0, -1.0)
    # ... and an accuracy bound above 1 with a loss bound below 0 stops everything.
    assert study_hopeless.stopped_by(log, 1.01, -1.0)
    assert study_hopeless.stopped_by(log, 1.01, log.probe_loss + 1.0) is False
    no_abort = dataclasses.replace(config, abort_step=None)
    with pytest.raises(ValueError, match="no early-abort step"):
        study_hopeless.to_abort_step(Genome(), MQARSpec.quick(), no_abort)
