"""Evidence as a log entry: an in-toto Statement v1 whose subject is the binding document.

The node signs this statement (DSSE, its log key) and appends it to its transparency
log, so evidence, its binding document and the key that vouches for both are published
together and cannot be swapped later. `bundle_from_statement` reverses it and checks the
subject digest, so an auditor reads back exactly the bundle that was logged.
"""

from __future__ import annotations

from typing import Any

from attestation.errors import FormatError
from attestation.tee.errors import BindingError
from attestation.tee.evidence import EvidenceBundle

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://asi-node.dev/tee-evidence/v1"
SUBJECT_NAME = "tee-binding-document"


class StatementError(FormatError):
    """A log entry that is not a well-formed attestation statement.

    Treat the node as having published no evidence (the message says what is wrong);
    the node must collect and log its evidence again.
    """


def evidence_statement(bundle: EvidenceBundle) -> dict[str, Any]:
    """The statement to sign and log for `bundle` (canonicalise it with RFC 8785)."""
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": SUBJECT_NAME, "digest": {"sha256": bundle.binding.digest().hex()}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": bundle.to_json(),
    }


def is_evidence_statement(statement: Any) -> bool:
    return isinstance(statement, dict) and statement.get("predicateType") == PREDICATE_TYPE


def bundle_from_statement(statement: Any) -> EvidenceBundle:
    """The bundle a logged statement carries; StatementError if the statement is malformed
    or its subject is not the digest of the bundle's binding document."""
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
        raise StatementError("not an in-toto Statement v1")
    if statement.get("predicateType") != PREDICATE_TYPE:
        raise StatementError(
            f"predicate type {statement.get('predicateType')!r} is not TEE evidence"
        )
    subjects = statement.get("subject")
    if not (isinstance(subjects, list) and len(subjects) == 1 and isinstance(subjects[0], dict)):
        raise StatementError("expected exactly one subject")
    digest = subjects[0].get("digest")
    try:
        bundle = EvidenceBundle.from_json(statement.get("predicate"))
    except (ValueError, BindingError) as exc:
        raise StatementError(f"predicate: {exc}") from None
    if subjects[0].get("name") != SUBJECT_NAME or digest != {
        "sha256": bundle.binding.digest().hex()
    }:
        raise StatementError("subject is not the SHA-256 of the bundle's binding document")
    return bundle
