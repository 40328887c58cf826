"""The node's database: campaigns, code, candidates, experiments, metrics, insights, events,
and the LLM agents' exchanges.

The only package that uses SQLModel. Every `Store` method runs in one transaction of its
own and returns frozen dataclasses (never live ORM objects), so nothing a caller does to
a result can reach the database. SQLite (the default, WAL mode) and PostgreSQL (by URL)
behave the same: experiments are claimed with a conditional UPDATE, so several worker
processes can share one queue without running anything twice.

    store.py     the Store: every read and write, one transaction per call
    rows.py      the frozen rows it returns
    tables.py    the SQLModel tables (the DDL lives in node.store.migrations)
    migrations/  the alembic revisions, upgraded to under a lock; older databases adopted
    database.py  engines, SQLite transaction hooks, database errors translated
    outbox.py    the anchoring outbox (checkpoint roots on their way on-chain)
    log.py       the transparency log's entries and checkpoints (LogStore)
    governance.py  applied governance directives and campaign forks
"""

from node.store.governance import DirectiveLedger, DirectiveRow
from node.store.log import CheckpointRow, EntryRow, LogStore
from node.store.outbox import Outbox, OutboxRow, outbox_stats
from node.store.rows import (
    CampaignRow,
    CandidateRow,
    EventRow,
    ExperimentRow,
    InsightRow,
    Lease,
    LLMExchangeRow,
    LLMUsage,
)
from node.store.store import (
    BUDGET_EXEMPT,
    CAMPAIGN_STATUSES,
    DEFAULT_MAX_ATTEMPTS,
    EXPERIMENT_STATUSES,
    ROLES,
    Store,
)

__all__ = [
    "BUDGET_EXEMPT",
    "CAMPAIGN_STATUSES",
    "DEFAULT_MAX_ATTEMPTS",
    "EXPERIMENT_STATUSES",
    "ROLES",
    "CampaignRow",
    "CandidateRow",
    "CheckpointRow",
    "DirectiveLedger",
    "DirectiveRow",
    "EntryRow",
    "EventRow",
    "ExperimentRow",
    "InsightRow",
    "LLMExchangeRow",
    "LLMUsage",
    "Lease",
    "LogStore",
    "Outbox",
    "OutboxRow",
    "Store",
    "outbox_stats",
]
