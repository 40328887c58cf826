"""Schema migrations: an ordered list of steps, each applied once, in its own transaction.

Every step is written with alembic's `Operations`, so the same DDL runs on SQLite and
PostgreSQL; steps that alter a table use `op.batch_alter_table`, which recreates the
table on SQLite and is a plain ALTER on PostgreSQL. A step's columns are spelled out
here and frozen: the SQLModel classes in `node.store` describe what the code reads and
writes today, and when they change, a new step brings old databases along. The applied
steps are recorded in `schema_version`; a database newer than this code is refused
untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection, Engine

from node.errors import SchemaVersionError, StoreError

log = logging.getLogger(__name__)

# Execution option read by the store's SQLite `begin` hook: a transaction that will
# write starts with BEGIN IMMEDIATE, taking the write lock up front, so two processes
# never both read and then both try to upgrade to writing (which SQLite answers with
# an immediate "database is locked" that no busy timeout can cure).
WRITE_OPTION = "asi_node_write"

# pg_advisory_xact_lock key ("asi-node" in ASCII): two nodes opening one PostgreSQL
# database at once apply each step exactly once.
_PG_LOCK_KEY = 0x6173692D6E6F6465

VERSION_TABLE = "schema_version"
_version_table = sa.Table(
    VERSION_TABLE,
    sa.MetaData(),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
)


@dataclass(frozen=True)
class Migration:
    """One schema step. Its version is its position in `MIGRATIONS`, counting from 1."""

    description: str
    apply: Callable[[Operations], None]


def _v1_initial(op: Operations) -> None:
    """Campaigns, content-addressed code, candidates, experiments, metrics, insights, events."""
    op.create_table(
        "campaign",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("config_json", sa.Text, nullable=False),
        sa.Column("config_hash", sa.String(80), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("parent_campaign_id", sa.String(32), nullable=True),
        sa.Column("fork_tree_size", sa.BigInteger, nullable=True),
        # The last experiment sequence number handed out: enqueueing bumps it with one
        # UPDATE, which serialises concurrent enqueuers on PostgreSQL's row lock.
        sa.Column("last_seq", sa.Integer, nullable=False),
        sa.UniqueConstraint("name", name="uq_campaign_name"),
        sa.ForeignKeyConstraint(["parent_campaign_id"], ["campaign.id"], name="fk_campaign_parent"),
        sa.CheckConstraint(
            "status IN ('created', 'running', 'paused', 'stopped', 'done')",
            name="ck_campaign_status",
        ),
    )
    op.create_table(
        "code_blob",
        sa.Column("digest", sa.String(80), primary_key=True),
        sa.Column("code", sa.Text, nullable=False),
    )
    op.create_table(
        "candidate",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("campaign_id", sa.String(32), nullable=False),
        sa.Column("digest", sa.String(80), nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("motivation", sa.Text, nullable=False),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("parent_ids_json", sa.Text, nullable=False),
        sa.Column("options_json", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("campaign_id", "digest", name="uq_candidate_campaign_digest"),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaign.id"], name="fk_candidate_campaign"),
        sa.ForeignKeyConstraint(["digest"], ["code_blob.digest"], name="fk_candidate_code"),
    )
    op.create_table(
        "experiment",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("campaign_id", sa.String(32), nullable=False),
        sa.Column("candidate_id", sa.String(32), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("seed", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("failure_class", sa.String(32), nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("screen_json", sa.Text, nullable=True),
        sa.Column("train_json", sa.Text, nullable=True),
        sa.Column("metrics_json", sa.Text, nullable=True),
        sa.Column("fitness", sa.Float, nullable=True),
        sa.Column("fitness_version", sa.Text, nullable=True),
        sa.Column("timings_json", sa.Text, nullable=True),
        sa.Column("analysis", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("campaign_id", "seq", name="uq_experiment_campaign_seq"),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaign.id"], name="fk_experiment_campaign"),
        sa.ForeignKeyConstraint(["candidate_id"], ["candidate.id"], name="fk_experiment_candidate"),
        sa.CheckConstraint("role IN ('baseline', 'candidate', 'rerun')", name="ck_experiment_role"),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'done', 'failed', 'interrupted')",
            name="ck_experiment_status",
        ),
        sa.CheckConstraint("attempts >= 0", name="ck_experiment_attempts"),
    )
    # The claim query: a campaign's queued experiments in sequence order.
    op.create_index("ix_experiment_claim", "experiment", ["campaign_id", "status", "seq"])
    op.create_index("ix_experiment_candidate", "experiment", ["candidate_id"])
    op.create_table(
        "metric",
        sa.Column("experiment_id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("value", sa.Float, nullable=False),
        sa.ForeignKeyConstraint(["experiment_id"], ["experiment.id"], name="fk_metric_experiment"),
    )
    op.create_index("ix_metric_name_value", "metric", ["name", "value"])
    op.create_table(
        "insight",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("campaign_id", sa.String(32), nullable=False),
        sa.Column("experiment_id", sa.String(32), nullable=True),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaign.id"], name="fk_insight_campaign"),
        sa.ForeignKeyConstraint(["experiment_id"], ["experiment.id"], name="fk_insight_experiment"),
    )
    op.create_index("ix_insight_campaign_created", "insight", ["campaign_id", "created_at"])
    op.create_table(
        "event",
        # Plain INTEGER so SQLite makes it the rowid alias and numbers it; SERIAL on PostgreSQL.
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("campaign_id", sa.String(32), nullable=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("payload_json", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaign.id"], name="fk_event_campaign"),
    )
    op.create_index("ix_event_campaign", "event", ["campaign_id", "id"])


def _v2_llm_exchanges(op: Operations) -> None:
    """What the LLM agents saw and said (kept locally), and each experiment's LLM usage."""
    op.create_table(
        "llm_exchange",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("campaign_id", sa.String(32), nullable=False),
        sa.Column("experiment_id", sa.String(32), nullable=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("prompt", sa.Text, nullable=False),
        sa.Column("completion", sa.Text, nullable=False),
        sa.Column("prompt_sha256", sa.String(80), nullable=False),
        sa.Column("completion_sha256", sa.String(80), nullable=False),
        sa.Column("prompt_tokens", sa.Integer, nullable=False),
        sa.Column("completion_tokens", sa.Integer, nullable=False),
        sa.Column("cost_usd", sa.Float, nullable=False),
        sa.Column("latency_s", sa.Float, nullable=False),
        sa.Column("structured", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaign.id"], name="fk_llm_campaign"),
        sa.ForeignKeyConstraint(["experiment_id"], ["experiment.id"], name="fk_llm_experiment"),
    )
    op.create_index("ix_llm_exchange_campaign", "llm_exchange", ["campaign_id", "id"])
    op.create_index("ix_llm_exchange_experiment", "llm_exchange", ["experiment_id"])
    with op.batch_alter_table("experiment") as batch:
        # Counts and digests of the experiment's LLM exchanges; the text stays in llm_exchange.
        batch.add_column(sa.Column("llm_json", sa.Text, nullable=True))


def _v3_transparency_log(op: Operations) -> None:
    """The transparency log: signed envelopes by index, and signed checkpoints."""
    op.create_table(
        "log_entry",
        sa.Column("idx", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("leaf_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        # The experiment id a record is about: finding unrecorded experiments on restart.
        sa.Column("subject", sa.String(64), nullable=True),
        sa.Column("envelope", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_log_entry_kind_subject", "log_entry", ["kind", "subject"])
    op.create_table(
        "log_checkpoint",
        sa.Column("tree_size", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("root_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("origin", sa.Text, nullable=False),
        sa.Column("public_key", sa.Text, nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def _v4_governance_directives(op: Operations) -> None:
    """Governance directives the node applied, awaiting their on-chain acknowledgement."""
    op.create_table(
        "governance_directive",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(32), nullable=False),
        # The node's campaign id, or "*" for a directive to every campaign: no foreign key.
        sa.Column("campaign_id", sa.String(64), nullable=False),
        sa.Column("epoch", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("ref", sa.Text, nullable=False),
        sa.Column("height", sa.BigInteger, nullable=True),
        sa.Column("config_hash", sa.String(80), nullable=True),
        sa.Column("detail_json", sa.Text, nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ack_ref", sa.Text, nullable=True),
        sa.UniqueConstraint("source", "campaign_id", "epoch", name="uq_directive_epoch"),
        sa.CheckConstraint("kind IN ('pause', 'resume', 'stop', 'fork')", name="ck_directive_kind"),
    )
    op.create_index("ix_directive_campaign", "governance_directive", ["campaign_id", "id"])


def _v5_anchor_outbox(op: Operations) -> None:
    """The anchoring outbox: one row per checkpoint root to put on-chain, keyed by log and size."""
    op.create_table(
        "anchor_outbox",
        sa.Column("log_id", sa.String(66), primary_key=True),
        sa.Column("tree_size", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("root", sa.String(66), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("sender", sa.String(42), nullable=True),
        sa.Column("nonce", sa.BigInteger, nullable=True),
        sa.Column("tx_hash", sa.String(66), nullable=True),
        sa.Column("raw_tx", sa.Text, nullable=True),
        sa.Column("block_number", sa.BigInteger, nullable=True),
        sa.Column("block_hash", sa.String(66), nullable=True),
        sa.Column("gas_used", sa.BigInteger, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'sent', 'confirmed', 'failed')", name="ck_anchor_outbox_status"
        ),
        sa.CheckConstraint("tree_size > 0", name="ck_anchor_outbox_tree_size"),
    )
    op.create_index("ix_anchor_outbox_status", "anchor_outbox", ["status", "next_attempt_at"])


def _v5_outbox_table(pk_name: str) -> sa.Table:
    """anchor_outbox as version 5 left it (for v6's table copy on SQLite; frozen)."""
    return sa.Table(
        "anchor_outbox",
        sa.MetaData(),
        sa.Column("log_id", sa.String(66), nullable=False),
        sa.Column("tree_size", sa.BigInteger, nullable=False, autoincrement=False),
        sa.Column("root", sa.String(66), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("sender", sa.String(42), nullable=True),
        sa.Column("nonce", sa.BigInteger, nullable=True),
        sa.Column("tx_hash", sa.String(66), nullable=True),
        sa.Column("raw_tx", sa.Text, nullable=True),
        sa.Column("block_number", sa.BigInteger, nullable=True),
        sa.Column("block_hash", sa.String(66), nullable=True),
        sa.Column("gas_used", sa.BigInteger, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True),
        # Named, so that v6 can drop it by name on either backend.
        sa.PrimaryKeyConstraint("log_id", "tree_size", name=pk_name),
        sa.CheckConstraint(
            "status IN ('pending', 'sent', 'confirmed', 'failed')", name="ck_anchor_outbox_status"
        ),
        sa.CheckConstraint("tree_size > 0", name="ck_anchor_outbox_tree_size"),
        sa.Index("ix_anchor_outbox_status", "status", "next_attempt_at"),
    )


def _v6_anchor_targets(op: Operations) -> None:
    """A second anchoring target: the outbox is keyed by (target, log, size); existing rows
    are the EVM chain's. ICP receipts: the log's anchor count and the certified time.

    SQLite recreates the table (from the frozen v5 definition, so its CHECK constraints
    and index survive); PostgreSQL alters it in place, swapping the primary key.
    """
    # PostgreSQL named v5's key anchor_outbox_pkey; SQLite's is unnamed and is dropped
    # from the copy the table is rebuilt from.
    pk = sa.inspect(op.get_bind()).get_pk_constraint("anchor_outbox").get("name")
    pk = pk or "anchor_outbox_pkey"
    with op.batch_alter_table("anchor_outbox", copy_from=_v5_outbox_table(pk)) as batch:
        batch.add_column(sa.Column("target", sa.String(16), nullable=False, server_default="evm"))
        batch.add_column(sa.Column("anchor_count", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("certified_at_ns", sa.BigInteger, nullable=True))
        batch.drop_constraint(pk, type_="primary")
        batch.create_primary_key("pk_anchor_outbox", ["target", "log_id", "tree_size"])
        batch.create_check_constraint("ck_anchor_outbox_target", "target IN ('evm', 'icp')")


MIGRATIONS: tuple[Migration, ...] = (
    Migration("initial schema", _v1_initial),
    Migration("llm exchanges", _v2_llm_exchanges),
    Migration("transparency log", _v3_transparency_log),
    Migration("governance directives", _v4_governance_directives),
    Migration("anchor outbox", _v5_anchor_outbox),
    Migration("anchor targets", _v6_anchor_targets),
)

# Tables the steps above create; finding any of them in a database without a version
# table means it was made by something else, and migrating it would fail half-way.
_OWN_TABLES = frozenset(
    {
        "campaign",
        "code_blob",
        "candidate",
        "experiment",
        "metric",
        "insight",
        "event",
        "llm_exchange",
        "log_entry",
        "log_checkpoint",
        "governance_directive",
        "anchor_outbox",
    }
)


def upgrade(
    engine: Engine,
    steps: Sequence[Migration] = MIGRATIONS,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> int:
    """Apply the steps the database has not seen yet; return its version afterwards.

    Each step runs in its own transaction together with its `schema_version` row, so a
    crash leaves the database at the last completed step. Safe to call from several
    processes at once. Raises SchemaVersionError for a database newer than `steps`.
    """
    target = len(steps)
    while True:
        with _migration_transaction(engine) as conn:
            current = _read_version(conn)
            if current > target:
                raise SchemaVersionError(
                    f"the database schema is at version {current}, but this asi-node knows "
                    f"versions up to {target}: it was written by a newer asi-node. Upgrade "
                    "asi-node or use another database; nothing was changed."
                )
            if current == target:
                return current
            if current == 0:
                _refuse_foreign_tables(conn)
            step = steps[current]
            step.apply(Operations(MigrationContext.configure(connection=conn)))
            conn.execute(
                _version_table.insert().values(
                    version=current + 1, description=step.description, applied_at=now()
                )
            )
            log.info(
                "schema migrated",
                extra={"version": current + 1, "description": step.description},
            )


def current_version(engine: Engine) -> int:
    """The database's schema version; 0 for a database asi-node has never touched."""
    with engine.connect() as conn, conn.begin():
        return _read_version(conn, create=False)


def _read_version(conn: Connection, *, create: bool = True) -> int:
    if not sa.inspect(conn).has_table(VERSION_TABLE):
        if not create:
            return 0
        _version_table.create(conn)
    found = conn.execute(sa.select(sa.func.max(_version_table.c.version))).scalar()
    return int(found) if found is not None else 0


def _refuse_foreign_tables(conn: Connection) -> None:
    clash = sorted(_OWN_TABLES & set(sa.inspect(conn).get_table_names()))
    if clash:
        raise StoreError(
            f"the database already has tables {', '.join(clash)} but no {VERSION_TABLE} "
            "table: it was not created by asi-node. Use an empty database."
        )


@contextmanager
def _migration_transaction(engine: Engine) -> Iterator[Connection]:
    """A write transaction fit for DDL on either backend.

    SQLite: foreign keys are switched off while a step runs (a table recreated by batch
    mode would otherwise trip them, and the pragma is ignored inside a transaction) and
    checked with `foreign_key_check` before commit. PostgreSQL: an advisory lock makes
    concurrent upgrades take turns.
    """
    with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            _sqlite_pragma(conn, "PRAGMA foreign_keys = OFF")
        try:
            conn.execution_options(**{WRITE_OPTION: True})
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    conn.execute(
                        sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY}
                    )
                yield conn
                if sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise StoreError(
                            f"a migration left {len(broken)} rows with dangling foreign keys "
                            f"(first: {tuple(broken[0])}); it was rolled back"
                        )
        finally:
            if sqlite:
                _sqlite_pragma(conn, "PRAGMA foreign_keys = ON")


def _sqlite_pragma(conn: Connection, pragma: str) -> None:
    # Straight to the driver: through SQLAlchemy the statement would open a transaction,
    # inside which SQLite ignores this pragma.
    driver = conn.connection.driver_connection
    if driver is None:
        raise StoreError("the SQLite connection was closed while migrating")
    driver.execute(pragma)
