"""The schema's alembic revisions, one file each, oldest first (0001, 0002, ...)."""
