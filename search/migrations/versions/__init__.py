"""The store's schema revisions, oldest first (alembic skips this file)."""
