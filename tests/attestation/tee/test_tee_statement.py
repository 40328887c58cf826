"""Evidence as a log entry: the statement round-trips, and a swapped subject is caught."""

from __future__ import annotations

import copy
import json

import pytest
import rfc8785

from attestation.tee import collect
from attestation.tee.binding import BindingDocument
from attestation.tee.statement import (
    StatementError,
    bundle_from_statement,
    evidence_statement,
    is_evidence_statement,
)


def _bundle():  # type: ignore[no-untyped-def]
    doc = BindingDocument.fresh(
        log_public_key="ab" * 32,
        evm_address="0x" + "12" * 20,
        icp_principal="2vxsx-fae",
        config_hash="cd" * 32,
    )
    return collect.collect_evidence("none", doc, collected_at="2026-01-01T00:00:00+00:00")


def test_statement_round_trips_through_canonical_json() -> None:
    bundle = _bundle()
    statement = evidence_statement(bundle)
    assert is_evidence_statement(statement)
    assert statement["subject"][0]["digest"]["sha256"] == bundle.binding.digest().hex()
    assert bundle_from_statement(json.loads(rfc8785.dumps(statement))) == bundle


def test_statement_whose_subject_or_predicate_was_changed_is_rejected() -> None:
    statement = evidence_statement(_bundle())
    swapped = copy.deepcopy(statement)
    swapped["predicate"]["binding"]["nonce"] = "00" * 32
    with pytest.raises(StatementError, match="subject is not the SHA-256"):
        bundle_from_statement(swapped)
    for broken, message in (
        ({**statement, "_type": "x"}, "not an in-toto Statement"),
        ({**statement, "predicateType": "x"}, "not TEE evidence"),
        ({**statement, "subject": []}, "exactly one subject"),
        ({**statement, "predicate": {"format": "x"}}, "predicate: not an evidence bundle"),
        (
            {**statement, "predicate": {**statement["predicate"], "binding": {}}},
            "predicate: binding document: missing",
        ),
    ):
        with pytest.raises(StatementError, match=message):
            bundle_from_statement(broken)
