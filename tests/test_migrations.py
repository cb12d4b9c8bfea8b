"""The store's schema under alembic: stores created before alembic, fresh stores, drift between
the revisions and the models, refusals, and ``dss migrate``.

The stores "created before alembic" are SQL dumps of what that code wrote (tests/fixtures/
store_schema_v0.*.sql: its schema as it created it, a few rows and its schema-version row)."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from typer.testing import CliRunner

from search import migrations
from search.documents import DocumentWrite
from search.filters import Filters
from search.migrations import VERSION_TABLE
from search.store import Base, MigrationPending, SchemaError, Store, prepare_schema
from tests.test_store import _open_store_at_barrier

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
HEAD = migrations.head()
ON_SERVER = [pytest.mark.postgres, pytest.mark.integration]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=ON_SERVER)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.sqlite'}"
    return request.getfixturevalue("postgres_url")  # a fresh database, dropped afterwards


def load_v0(url: str) -> None:
    """Write the store as the code before alembic left it into the empty database at ``url``."""
    if url.startswith("sqlite"):
        sql = (FIXTURES / "store_schema_v0.sqlite.sql").read_text()
        db = sqlite3.connect(url.removeprefix("sqlite:///"))
        db.executescript(sql)
        db.close()
        return
    sql = (FIXTURES / "store_schema_v0.postgres.sql").read_text()
    engine = create_engine(url)
    raw = engine.raw_connection()
    try:
        raw.cursor().execute(sql)  # psycopg2 runs the whole script (pg_dump --inserts: no COPY)
        raw.commit()
    finally:
        raw.close()
        engine.dispose()


def revision_of(url: str) -> str | None:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()
    finally:
        engine.dispose()


def execute(url: str, statement: str) -> None:
    """One statement on the store's database, committed (what another process or an operator did)."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(statement))
    finally:
        engine.dispose()


def tables_of(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def schema_of(url: str) -> dict[str, Any]:
    """The schema as the database describes it, minus alembic's own table."""
    engine = create_engine(url)
    try:
        if engine.dialect.name == "sqlite":
            with engine.connect() as conn:
                rows = conn.execute(
                    text(
                        "SELECT type, name, sql FROM sqlite_master WHERE name != 'dss_alembic_version' "
                        "AND name NOT LIKE 'sqlite_autoindex%' ORDER BY name"
                    )
                ).all()
            return {name: (kind, " ".join((sql or "").split())) for kind, name, sql in rows}
        found = inspect(engine)
        schema: dict[str, Any] = {}
        for table in sorted(set(found.get_table_names()) - {"dss_alembic_version"}):
            schema[table] = {
                "columns": [
                    (c["name"], str(c["type"]), c["nullable"], c.get("default"), c.get("autoincrement"))
                    for c in found.get_columns(table)
                ],
                "primary key": found.get_pk_constraint(table),
                "unique": sorted((u["name"], tuple(u["column_names"])) for u in found.get_unique_constraints(table)),
                "indexes": sorted((i["name"], tuple(i["column_names"]), i["unique"]) for i in found.get_indexes(table)),
                "foreign keys": found.get_foreign_keys(table),
                "checks": found.get_check_constraints(table),
            }
        with engine.connect() as conn:
            schema["sequences"] = sorted(
                conn.execute(
                    text(
                        "SELECT sequencename, data_type::text, start_value, increment_by "
                        "FROM pg_sequences WHERE schemaname = 'public'"
                    )
                ).all()
            )
        return schema
    finally:
        engine.dispose()


def _upsert(store: Store, doc: DocumentWrite, version: int) -> int:
    with store.writing() as batch:
        return batch.upsert(doc, version, doc.content_hash(), np.ones(4, np.float32).tobytes(), "enc", None)


def add_revision(folder: Path, monkeypatch: pytest.MonkeyPatch, upgrade: str, downgrade: str = "pass") -> str:
    """A revision "0002" after this code's head, in ``folder``, found as the next release's
    scripts would be; returns its id."""
    folder.mkdir()
    body = textwrap.dedent(f"""
        import sqlalchemy as sa
        from alembic import op

        revision = "0002"
        down_revision = "{HEAD}"
        branch_labels = None
        depends_on = None

        def upgrade():
        {{upgrade}}

        def downgrade():
        {{downgrade}}
    """)
    indent = lambda code: textwrap.indent(textwrap.dedent(code).strip(), "    ")
    (folder / "0002_next.py").write_text(body.format(upgrade=indent(upgrade), downgrade=indent(downgrade)))
    monkeypatch.setattr(migrations, "version_locations", [*migrations.version_locations, folder])
    return "0002"


@pytest.fixture
def newer_release(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A revision after this code's head, as the next release would ship it: adds a column."""
    yield add_revision(
        tmp_path / "newer_versions",
        monkeypatch,
        upgrade="""
            with op.batch_alter_table("documents") as batch:
                batch.add_column(sa.Column("note", sa.Text(), nullable=True))
        """,
        downgrade="""
            with op.batch_alter_table("documents") as batch:
                batch.drop_column("note")
        """,
    )


def _column_names(url: str, table: str) -> list[str]:
    engine = create_engine(url)
    try:
        return [c["name"] for c in inspect(engine).get_columns(table)]
    finally:
        engine.dispose()


# -- a store created before alembic -------------------------------------------------------


def test_store_created_before_alembic_is_stamped_and_keeps_working(url: str) -> None:
    load_v0(url)
    assert "dss_alembic_version" not in tables_of(url) and revision_of(url) is None
    store = Store(url)
    assert store.schema.legacy and store.schema.before is None and store.schema.after == HEAD
    assert revision_of(url) == HEAD
    # The rows that code wrote, read through the store.
    assert store.store_id == "f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0"
    stats = store.stats()
    assert (stats.live, stats.deleted, stats.last_seq) == (2, 1, 4)
    first = store.get("doc-1")
    assert first is not None
    assert (first.key, first.title, first.text, first.metadata, first.category, first.version) == (
        1,
        "First",
        "the first document",
        {"lang": "en", "n": 1},
        "news",
        1,
    )
    assert first.created_at == datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert first.updated_at == datetime(2024, 5, 2, 12, tzinfo=UTC)
    assert store.get("gone") is None
    changes = [doc for page in store.changes_since(0) for doc in page]
    assert [(d.id, d.seq, d.deleted) for d in changes] == [("doc-1", 1, False), ("doc-2", 2, False), ("gone", 4, True)]
    live = {d.id: d for page in store.live_documents() for d in page}
    assert np.frombuffer(live["doc-2"].embedding, np.float32).tolist() == [2.0, 3.0, 4.0, 5.0]
    assert live["doc-2"].encoder == "test:hash:4"
    assert store.keys_matching(Filters(metadata={"ok": True})) == [2]
    assert store.keys_matching(Filters(categories=("news",))) == [1]
    assert sorted(store.get_by_keys([1, 2, 3])) == [1, 2]
    # Writes continue the sequence and the keys (PostgreSQL: the key sequence survived).
    assert _upsert(store, DocumentWrite(id="doc-3", text="written after the upgrade"), 1) == 5
    assert store.get("doc-3").key == 4
    with store.writing() as batch:
        batch.delete("doc-1", 2)
    assert store.last_seq() == 6 and store.get("doc-1") is None
    store.close()
    again = Store(url, migrate_on_start=False)
    assert (again.schema.before, again.schema.legacy, again.schema.pending) == (HEAD, False, False)
    assert again.stats().live == 2
    again.close()


def test_baseline_creates_the_schema_the_code_before_alembic_created(url: str, tmp_path: Path) -> None:
    """Column for column, index for index, constraint for constraint (PostgreSQL: names and
    the key's sequence too): a fresh store and one that code created differ in nothing."""
    load_v0(url)
    legacy = schema_of(url)
    if url.startswith("sqlite"):
        fresh_url = f"sqlite:///{tmp_path / 'fresh.sqlite'}"
        Store(fresh_url).close()
        assert schema_of(fresh_url) == legacy
    else:
        Store(url).close()  # stamped, so nothing to compare; create a fresh one beside it
        assert schema_of(url) == legacy
        execute(url, "DROP TABLE documents, counters, meta, dss_alembic_version")
        Store(url).close()
        assert revision_of(url) == HEAD
        assert schema_of(url) == legacy
    assert legacy["documents"]  # the comparison compared something


def test_legacy_store_with_another_schema_version_is_refused_untouched(url: str) -> None:
    load_v0(url)
    execute(url, "UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    with pytest.raises(SchemaError, match="schema version 2"):
        Store(url)
    assert "dss_alembic_version" not in tables_of(url)


def test_a_partial_legacy_store_is_refused(url: str) -> None:
    load_v0(url)
    execute(url, "DROP TABLE counters")
    with pytest.raises(SchemaError, match="not counters"):
        Store(url)


@pytest.mark.integration
def test_processes_opening_a_legacy_store_at_once_stamp_it_once(url: str) -> None:
    load_v0(url)
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(3)
    processes = [context.Process(target=_open_store_at_barrier, args=(url, barrier)) for _ in range(3)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
    assert [p.exitcode for p in processes] == [0, 0, 0]
    assert revision_of(url) == HEAD
    store = Store(url)
    assert store.stats().last_seq == 4
    store.close()


# -- fresh stores and drift ------------------------------------------------------------------


def test_a_new_store_is_created_at_head(url: str) -> None:
    store = Store(url, migrate_on_start=False)  # creating a store is not a migration
    assert (store.schema.before, store.schema.after, store.schema.legacy) == (None, HEAD, False)
    assert revision_of(url) == HEAD
    assert store.last_seq() == 0 and len(store.store_id) == 32
    assert _upsert(store, DocumentWrite(id="d", text="x"), 1) == 1
    store.close()


def test_migrations_match_the_models(url: str) -> None:
    """alembic's autogenerate finds nothing to do between the head revision and the tables
    declared in search/store.py: a model change without its revision fails here."""
    Store(url).close()
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            opts = {"compare_type": True, "compare_server_default": True, "version_table": VERSION_TABLE}
            context = MigrationContext.configure(conn, opts=opts)
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


def test_in_memory_sqlite_store_is_migrated_in_its_own_connection() -> None:
    store = Store("sqlite://")
    assert store.schema.after == HEAD and store.last_seq() == 0
    store.close()


# -- older and newer revisions ------------------------------------------------------------------


def test_pending_migration_is_refused_without_migrate_on_start(url: str, newer_release: str) -> None:
    monkeypatched = migrations.version_locations
    migrations.version_locations = monkeypatched[:1]  # this release: create the store at its head
    try:
        Store(url).close()
    finally:
        migrations.version_locations = monkeypatched
    with pytest.raises(MigrationPending, match=r"`dss migrate`") as refused:
        Store(url, migrate_on_start=False)
    assert f"revision {HEAD}" in str(refused.value) and newer_release in str(refused.value)
    assert revision_of(url) == HEAD and "note" not in _column_names(url, "documents")
    store = Store(url)  # migrate_on_start defaults to true
    assert (store.schema.before, store.schema.after) == (HEAD, newer_release)
    assert _upsert(store, DocumentWrite(id="d", text="x"), 1) == 1
    store.close()
    assert revision_of(url) == newer_release and "note" in _column_names(url, "documents")


def test_a_legacy_store_is_upgraded_past_the_baseline(url: str, newer_release: str) -> None:
    load_v0(url)
    store = Store(url)
    assert store.schema.legacy and store.schema.after == newer_release
    assert store.stats().live == 2 and "note" in _column_names(url, "documents")
    store.close()


def test_a_failed_migration_changes_nothing(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The migration runs in one transaction: a revision that fails half-way leaves the
    store as it was (its column added, then undone), on SQLite as on PostgreSQL."""
    Store(url).close()
    add_revision(
        tmp_path / "broken_versions",
        monkeypatch,
        upgrade="""
            op.add_column("documents", sa.Column("half", sa.Text(), nullable=True))
            op.execute("SELECT no_such_function()")
        """,
    )
    with pytest.raises(Exception, match="no_such_function"):
        Store(url)
    assert revision_of(url) == HEAD and "half" not in _column_names(url, "documents")


def test_a_store_from_a_newer_release_is_refused(url: str) -> None:
    Store(url).close()
    execute(url, "UPDATE dss_alembic_version SET version_num = '9999_from_the_future'")
    for migrate_on_start in (True, False):
        with pytest.raises(SchemaError, match=r"9999_from_the_future.*newer release"):
            Store(url, migrate_on_start=migrate_on_start)


def test_schema_version_row_is_still_checked_at_head(url: str) -> None:
    Store(url).close()
    execute(url, "UPDATE meta SET value = '7' WHERE key = 'schema_version'")
    with pytest.raises(SchemaError, match="schema version 7; this deepseek-search expects 1"):
        Store(url)


# -- dss migrate ---------------------------------------------------------------------------------


def _dss(*args: str) -> tuple[int, str]:
    """``dss`` in this process: its exit code and its output, wrapped lines joined."""
    from api.cli import app

    result = CliRunner().invoke(app, list(args))
    return result.exit_code, " ".join(result.output.split())


def test_dss_migrate_check_and_upgrade(tmp_path: Path, newer_release: str) -> None:
    data = tmp_path / "data"
    code, output = _dss("migrate", "--check", "--data-dir", str(data))
    assert code == 1 and "empty database" in output, output
    assert not (data / "store.sqlite").exists()  # a check creates nothing
    data.mkdir()
    load_v0(f"sqlite:///{data / 'store.sqlite'}")
    code, output = _dss("migrate", "--check", "--data-dir", str(data))
    assert code == 1, output
    assert "created before alembic" in output and f"-> {newer_release}" in output
    with pytest.raises(MigrationPending):
        Store(f"sqlite:///{data / 'store.sqlite'}", migrate_on_start=False)
    code, output = _dss("migrate", "--data-dir", str(data))
    assert code == 0, output
    assert "store: none: created before alembic" in output and f"now: {newer_release}" in output
    code, output = _dss("migrate", "--check", "--data-dir", str(data))
    assert code == 0 and f"up to date at {newer_release}" in output, output
    store = Store(f"sqlite:///{data / 'store.sqlite'}", migrate_on_start=False)
    assert store.stats().live == 2
    store.close()


def test_dss_migrate_refuses_a_store_from_a_newer_release(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    Store(url).close()
    execute(url, "UPDATE dss_alembic_version SET version_num = '9999'")
    code, output = _dss("migrate", "--data-dir", str(tmp_path))
    assert code == 2 and "9999" in output and "newer release" in output, output


@pytest.mark.postgres
@pytest.mark.integration
def test_dss_migrate_in_a_process_with_a_config_file(tmp_path: Path, postgres_url: str) -> None:
    """The installed command against PostgreSQL named in a YAML file: creates, then finds
    nothing to do."""
    config = tmp_path / "dss.yaml"
    config.write_text(f"store:\n  url: {postgres_url}\n")
    command = [sys.executable, "-c", "from api.cli import app; app()", "migrate", "--config", str(config)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    check = subprocess.run(
        [*command, "--check"], check=False, capture_output=True, text=True, timeout=120, cwd=ROOT, env=env
    )
    assert check.returncode == 1, check.stderr
    assert "empty database" in check.stdout
    run = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert run.returncode == 0, run.stderr
    assert "store: none: empty database" in run.stdout and f"now:   {HEAD}" in run.stdout
    check = subprocess.run(
        [*command, "--check"], check=False, capture_output=True, text=True, timeout=120, cwd=ROOT, env=env
    )
    assert check.returncode == 0 and f"up to date at {HEAD}" in check.stdout
    assert revision_of(postgres_url) == HEAD


def test_prepare_schema_dry_run_changes_nothing(url: str) -> None:
    load_v0(url)
    report = prepare_schema(url, dry_run=True)  # a store from before alembic: pending until stamped
    assert (report.before, report.after, report.legacy, report.pending) == (None, None, True, True)
    assert "dss_alembic_version" not in tables_of(url)
    with pytest.raises(MigrationPending, match="dss migrate"):  # stamping is a migration too
        Store(url, migrate_on_start=False)
    assert "dss_alembic_version" not in tables_of(url)


def test_a_store_at_the_head_opens_without_waiting_for_a_writer(tmp_path: Path) -> None:
    """Only a store that needs work takes the migration lock: a process starting while
    another holds a write transaction (SQLite's one writer) does not queue behind it."""
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    writer = Store(url)
    with writer.writing() as batch:
        doc = DocumentWrite(id="held", text="a write transaction held open")
        batch.upsert(doc, 1, doc.content_hash(), np.ones(4, np.float32).tobytes(), "enc", None)
        started = time.perf_counter()
        reader = Store(url)
        assert time.perf_counter() - started < 5 and reader.schema.after == HEAD
    assert reader.get("held") is not None
    reader.close()
    writer.close()


def test_migration_scripts_ship_in_the_package() -> None:
    """The revisions and the template live inside the package (no alembic.ini at run time)."""
    here = Path(migrations.__file__).parent
    assert (here / "env.py").is_file() and (here / "script.py.mako").is_file()
    assert (here / "versions" / "__init__.py").is_file()
    assert migrations.script_directory().get_base() == migrations.BASELINE
