"""Baseline: the schema of deepseek-search before it used alembic (meta.schema_version 1).

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00

A store created by that code has exactly these tables and is stamped with this revision
rather than upgraded from nothing (search/store.py, ``prepare_schema``). The types are
spelled out here, not imported from search/store.py: a revision must keep creating what it
created when later code changes the models.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "documents",
        # SQLite only auto-increments an INTEGER PRIMARY KEY (64-bit there as well).
        sa.Column(
            "key",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.String(512), nullable=False, unique=True),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column(
            "metadata",
            sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql"),
            nullable=True,
        ),
        sa.Column("category", sa.String(256), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=True),
        sa.Column("content_hash", sa.String(64), nullable=True),
        sa.Column("embedding", sa.LargeBinary(), nullable=True),
        sa.Column("encoder", sa.String(512), nullable=True),
    )
    op.create_index("ix_documents_seq", "documents", ["seq"])
    op.create_index("ix_documents_category", "documents", ["category"])
    op.create_index("ix_documents_updated_at", "documents", ["updated_at"])
    op.create_table(
        "counters",
        sa.Column("name", sa.String(64), primary_key=True, nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "meta",
        sa.Column("key", sa.String(64), primary_key=True, nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("meta")
    op.drop_table("counters")
    op.drop_index("ix_documents_updated_at", table_name="documents")
    op.drop_index("ix_documents_category", table_name="documents")
    op.drop_index("ix_documents_seq", table_name="documents")
    op.drop_table("documents")
