"""alembic's environment for the store's migrations (see search/migrations/__init__.py)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from search.migrations import VERSION_TABLE
from search.store import Base

config = context.config


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        # SQLite's DDL is transactional as well; with the caller's transaction (BEGIN
        # IMMEDIATE, see search/store.py) a failed migration leaves the store as it was.
        transactional_ddl=True,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite's ALTER TABLE is limited
        compare_type=True,
        compare_server_default=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()
elif config.attributes.get("connection") is not None:
    _run(config.attributes["connection"])
else:
    url = config.get_main_option("sqlalchemy.url")
    if url is None:
        raise SystemExit("no database: pass a connection or sqlalchemy.url (search.migrations.alembic_config)")
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            _run(connection)
            connection.commit()
    finally:
        engine.dispose()
