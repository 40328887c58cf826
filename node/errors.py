"""The node's exception tree: one root, and a docstring per error saying what to do.

Each package below `node` cannot import this one and has its own root in its `errors.py`:
`TrustError` (attestation), `GovernanceError`, `LoopError` and `KernelInputError`
(kernels); `node.cli.main` shows the first three beside `AsiNodeError`.

Expected outcomes (a candidate that crashes, times out or scores badly) are values, not
exceptions; these are for broken invariants, bad input from the operator and broken
infrastructure. Third-party errors are translated where they are caught; the original
is kept as `__cause__` where it helps debugging, and dropped where the message already
says everything (a config error shows no pydantic traceback).
"""

from __future__ import annotations


class AsiNodeError(Exception):
    """Root of every error the node raises on purpose.

    Catch this at the outermost layer (CLI, HTTP handler) to show the message to the
    operator; the message is written to be read by a person and says what to do.
    """


class ConfigError(AsiNodeError):
    """The node's settings or a campaign config are malformed or inconsistent.

    The message names the file (or environment variable), the key and what was expected:
    fix that value and start again. Nothing has been changed on disk.
    """


class NotFoundError(AsiNodeError):
    """A campaign, candidate, experiment or code blob named by the caller does not exist.

    Check the identifier (list what exists first); retrying will not help.
    """


class ConflictError(AsiNodeError):
    """The request contradicts the current state: a duplicate name, or a state change
    that is not allowed from the record's current status (finishing an experiment that is
    not running, restarting a stopped campaign).

    Re-read the record and decide again; retrying the same call will fail the same way.
    """


class LeaseLostError(ConflictError):
    """This process's lease on a running experiment ran out and another runner took the
    experiment over (or it was requeued): its result is not this process's to record.

    Drop the result; the experiment's new runner records it.
    """


class StoreError(AsiNodeError):
    """The database could not be reached or refused the operation.

    Usually transient or environmental (server down, disk full, locked for too long):
    check the database named in the message and retry. Nothing was half-written: every
    store operation runs in one transaction.
    """


class CorruptStoreError(StoreError):
    """The database file is damaged, is not a database, or holds data that fails its own
    checks (a code blob whose content no longer matches its digest).

    Do not keep writing to it: stop the node, move the file aside or restore a backup,
    then start again. Retrying will not help.
    """


class SchemaVersionError(StoreError):
    """The database was written by a newer asi-node whose schema this code does not know.

    Upgrade asi-node, or point it at another database. The database was not modified.
    """
