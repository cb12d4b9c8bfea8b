"""The document store: the source of truth that every index follows.

SQLAlchemy 2.x over SQLite (default, WAL mode) or PostgreSQL. Each applied write gets the
next value of one change sequence; the indexes record the sequence they reflect and catch up
with ``changes_since(seq)``. Writers serialise on the sequence counter's row for the whole
transaction, so sequence order is commit order and a reader never skips a change that
commits late.

The schema is managed by alembic (revisions in search/migrations/): ``Store`` brings a new
database to the newest revision, recognises one created before alembic, and upgrades an older
one when allowed (``prepare_schema``).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Integer,
    LargeBinary,
    String,
    Text,
    bindparam,
    create_engine,
    event,
    exists,
    func,
    insert,
    inspect,
    select,
    type_coerce,
    update,
)
from sqlalchemy import text as sql_text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import URL, Connection, Engine, Row
from sqlalchemy.exc import DataError, DBAPIError, OperationalError, StatementError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.pool import NullPool
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeDecorator

from search.documents import DocumentWrite, StoredDocument, as_utc, utcnow
from search.filters import Filters, Scalar

log = logging.getLogger(__name__)

# ``meta.schema_version``: the number releases from before alembic check (they refuse a store
# whose row is not 1). It stays 1 while those releases can still use the schema; a revision
# they would misuse sets a higher number in that row (and here), so they refuse the store
# instead. ``prepare_schema`` refuses a store at the head revision whose row differs.
SCHEMA_VERSION = 1
SEQUENCE = "change_seq"
# The tables of a store created before alembic (the baseline revision creates exactly these).
LEGACY_TABLES = frozenset({"documents", "counters", "meta"})
# pg_advisory_xact_lock key held while a process checks and migrates the schema.
_SCHEMA_LOCK = 7305917


class SchemaError(RuntimeError):
    """The database was written by an incompatible version of deepseek-search."""


class MigrationPending(SchemaError):
    """The store's schema is older than this code and ``store.migrate_on_start`` is off."""


class WriteRefused(ValueError):
    """The database refused a value in the batch, so the same batch would fail again. Trouble
    that passes (a lost connection, a locked or full database) is never this."""


def _refused(exc: BaseException) -> bool:
    if isinstance(exc, DBAPIError):  # the database's verdict: only bad data is the batch's fault
        return isinstance(exc, DataError)
    if isinstance(exc, StatementError):  # a value that failed in its type's bind processing
        return isinstance(exc.orig, (ValueError, TypeError, OverflowError))
    return isinstance(exc, (ValueError, TypeError, OverflowError))  # the driver's own checks (NUL)


class UTCDateTime(TypeDecorator[datetime]):
    """Stored as naive UTC (SQLite has no time zones), returned as aware UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        value = as_utc(value)
        return value.replace(tzinfo=None) if value else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return value.replace(tzinfo=UTC) if value else None


class Base(DeclarativeBase):
    pass


class DocumentRow(Base):
    __tablename__ = "documents"

    # SQLite only auto-increments an INTEGER PRIMARY KEY; it is 64-bit there as well.
    key: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(512), unique=True)
    version: Mapped[int] = mapped_column(BigInteger)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    seq: Mapped[int] = mapped_column(BigInteger, index=True)
    title: Mapped[str | None] = mapped_column(Text)
    text: Mapped[str | None] = mapped_column(Text)
    meta: Mapped[dict[str, Any] | None] = mapped_column(
        "metadata", JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
    )
    category: Mapped[str | None] = mapped_column(String(256), index=True)
    created_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    content_hash: Mapped[str | None] = mapped_column(String(64))
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary)
    encoder: Mapped[str | None] = mapped_column(String(512))


# Hydration of a result page: live documents by key, without their embeddings.
_BY_KEYS = select(
    *(c.label("meta") if c.name == "metadata" else c for c in DocumentRow.__table__.c if c.name != "embedding")
).where(DocumentRow.key.in_(bindparam("keys", expanding=True)), DocumentRow.deleted.is_(False))


class CounterRow(Base):
    __tablename__ = "counters"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)


class MetaRow(Base):
    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


@dataclass(frozen=True)
class DocumentState:
    """What the version rules need to know about a stored document."""

    key: int
    version: int
    deleted: bool
    content_hash: str | None
    encoder: str | None
    embedding: bytes | None
    created_at: datetime | None


@dataclass(frozen=True)
class StoreStats:
    live: int
    deleted: int
    last_seq: int


def _sequence(session: Session) -> int:
    """The sequence counter's value (its row is made with the schema)."""
    value = session.scalar(select(CounterRow.value).where(CounterRow.name == SEQUENCE))
    assert value is not None, "the sequence counter row is missing"
    return int(value)


def _to_document(row: DocumentRow | Row[Any], with_embedding: bool = True) -> StoredDocument:
    """From an ORM row or a Core row of the same columns (``_BY_KEYS``: no embedding)."""
    return StoredDocument(
        key=row.key,
        id=row.id,
        version=row.version,
        deleted=row.deleted,
        seq=row.seq,
        title=row.title or "",
        text=row.text or "",
        metadata=row.meta or {},
        category=row.category,
        created_at=row.created_at,
        updated_at=row.updated_at,
        embedding=row.embedding if with_embedding else None,
        encoder=row.encoder,
    )


class WriteBatch:
    """One write transaction holding the sequence lock. Obtain it from ``Store.writing()``.

    Upserts and deletes are collected and written in two bulk statements when the
    transaction ends (one UPDATE by primary key, one INSERT), not a round trip per document.
    """

    def __init__(self, session: Session, first_seq: int) -> None:
        self._session = session
        self.last_seq = first_seq
        self._pending: dict[str, dict[str, Any]] = {}
        self._keys: dict[str, int | None] = {}  # looked up in this transaction; None = absent

    def states(self, ids: Sequence[str]) -> dict[str, DocumentState]:
        rows = self._session.execute(
            select(
                DocumentRow.id,
                DocumentRow.key,
                DocumentRow.version,
                DocumentRow.deleted,
                DocumentRow.content_hash,
                DocumentRow.encoder,
                DocumentRow.embedding,
                DocumentRow.created_at,
            ).where(DocumentRow.id.in_(list(ids)))
        )
        found = {r.id: DocumentState(*r[1:]) for r in rows}
        self._keys.update({doc_id: found[doc_id].key if doc_id in found else None for doc_id in ids})
        return found

    def _next_seq(self) -> int:
        self.last_seq += 1
        return self.last_seq

    def upsert(
        self,
        doc: DocumentWrite,
        version: int,
        content_hash: str,
        embedding: bytes,
        encoder: str,
        created_at: datetime | None,
    ) -> int:
        now = utcnow()
        seq = self._next_seq()
        values = dict(
            version=version,
            deleted=False,
            seq=seq,
            title=doc.title,
            text=doc.text,
            meta=doc.metadata,
            category=doc.category,
            created_at=doc.created_at or created_at or now,
            updated_at=doc.updated_at or now,
            content_hash=content_hash,
            embedding=embedding,
            encoder=encoder,
        )
        self._put(doc.id, values)
        return seq

    def delete(self, doc_id: str, version: int) -> int:
        """A tombstone: keeps id, version and sequence; erases content and embedding."""
        seq = self._next_seq()
        values = dict(
            version=version,
            deleted=True,
            seq=seq,
            title=None,
            text=None,
            meta=None,
            category=None,
            created_at=None,
            updated_at=utcnow(),
            content_hash=None,
            embedding=None,
            encoder=None,
        )
        self._put(doc_id, values)
        return seq

    def _put(self, doc_id: str, values: dict[str, Any]) -> None:
        self._pending.pop(doc_id, None)  # a later write of the same id wins, in sequence order
        self._pending[doc_id] = values

    def flush(self) -> None:
        if not self._pending:
            return
        unknown = [doc_id for doc_id in self._pending if doc_id not in self._keys]
        if unknown:  # the writer looks every id up through states(); others are found here
            self._keys.update(dict.fromkeys(unknown))
            rows = self._session.execute(select(DocumentRow.id, DocumentRow.key).where(DocumentRow.id.in_(unknown)))
            self._keys.update({doc_id: key for doc_id, key in rows})
        updates = [{"key": self._keys[i], **v} for i, v in self._pending.items() if self._keys[i] is not None]
        inserts = [{"id": i, **v} for i, v in self._pending.items() if self._keys[i] is None]
        if updates:
            self._session.execute(update(DocumentRow), updates)
        if inserts:
            self._session.execute(insert(DocumentRow), inserts)
        self._pending.clear()


@dataclass(frozen=True)
class SchemaReport:
    """What ``prepare_schema`` found and left. ``before`` is the alembic revision found (None:
    none; ``legacy`` tells a store created before alembic from an empty database)."""

    before: str | None
    after: str | None
    head: str
    legacy: bool = False

    @property
    def pending(self) -> bool:
        """Whether the store needs migrating: after a dry run, that it is short of the head
        revision (an empty database included); after a run, never (it refuses instead)."""
        return self.after != self.head

    def describe(self, revision: str | None) -> str:
        if revision is not None:
            return revision
        if self.legacy:
            return f"none: created before alembic (schema version 1, i.e. revision {_baseline()})"
        return "none: empty database"


class Store:
    def __init__(self, url: str, *, echo: bool = False, migrate_on_start: bool = True) -> None:
        """Open the store at ``url``, creating its tables in an empty database. A store at an
        older schema revision is upgraded when ``migrate_on_start`` (``store.migrate_on_start``),
        else refused with ``MigrationPending``; one newer than this code, with ``SchemaError``."""
        self.url = url
        # A pooled server connection may have been dropped: check it out with a ping. An
        # SQLite file has no connection to lose, and the ping is not free on the query path
        # (see docs/architecture.md).
        self.engine: Engine = create_engine(url, echo=echo, pool_pre_ping=not url.startswith("sqlite"))
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._store_id: str | None = None
        try:
            # An in-memory SQLite database lives in this engine's connection only.
            target = self.engine if _is_sqlite_memory(self.engine) else url
            self.schema = prepare_schema(target, migrate=migrate_on_start)
        except BaseException:
            self.engine.dispose()
            raise
        database = self.engine.url.database
        self._page_reader = _SqlitePageReader(database) if database and _is_sqlite_file(self.engine) else None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        if self._page_reader is not None:
            self._page_reader.close()
        self.engine.dispose()

    @property
    def store_id(self) -> str:
        """A random id given to this store when it was created: tells caches shared by
        several services apart, and a re-created database from its previous life."""
        if self._store_id is None:
            with Session(self.engine) as session:
                row = session.get(MetaRow, "store_id")
                assert row is not None, "the store_id row is missing"  # written when the store is made
                self._store_id = row.value
        return self._store_id

    @contextmanager
    def writing(self) -> Iterator[WriteBatch]:
        """A transaction that holds the sequence counter's lock until it commits. Raises
        ``WriteRefused`` (and commits nothing) when the database refuses a value in it."""
        try:
            with Session(self.engine) as session, session.begin():
                # Touching the counter row first takes SQLite's write lock / PostgreSQL's row lock.
                session.execute(update(CounterRow).where(CounterRow.name == SEQUENCE).values(value=CounterRow.value))
                batch = WriteBatch(session, _sequence(session))
                yield batch
                batch.flush()
                session.execute(update(CounterRow).where(CounterRow.name == SEQUENCE).values(value=batch.last_seq))
        except Exception as exc:
            if _refused(exc) and not isinstance(exc, WriteRefused):
                cause = exc.orig if isinstance(exc, StatementError) and exc.orig is not None else exc
                raise WriteRefused(f"the store refused it: {type(cause).__name__}: {str(cause).strip()[:300]}") from exc
            raise

    def set_embeddings(self, updates: Sequence[tuple[int, bytes]], encoder: str) -> None:
        """Replace embeddings after re-encoding; content and sequence are unchanged."""
        if not updates:
            return
        with Session(self.engine) as session, session.begin():
            session.execute(
                update(DocumentRow),
                [{"key": key, "embedding": blob, "encoder": encoder} for key, blob in updates],
            )

    # -- reads ---------------------------------------------------------------------------

    def get(self, doc_id: str) -> StoredDocument | None:
        """The live document with this id (tombstones read as absent)."""
        with Session(self.engine) as session:
            row = session.scalar(select(DocumentRow).where(DocumentRow.id == doc_id, DocumentRow.deleted.is_(False)))
            return _to_document(row, with_embedding=False) if row else None

    def get_by_keys(self, keys: Sequence[int]) -> dict[int, StoredDocument]:
        if not keys:
            return {}
        if self._page_reader is not None:
            return self._page_reader.get_by_keys(keys)
        # Core, not the ORM: this runs for every uncached query, and ORM rows cost several
        # times as much (see docs/architecture.md).
        with self.engine.connect() as conn:
            rows = conn.execute(_BY_KEYS, {"keys": [int(k) for k in keys]})
            return {row.key: _to_document(row, with_embedding=False) for row in rows}

    def keys_matching(self, filters: Filters) -> list[int]:
        """Keys of live documents that pass every filter."""
        query = select(DocumentRow.key).where(DocumentRow.deleted.is_(False))
        if filters.categories:
            query = query.where(DocumentRow.category.in_(filters.categories))
        if filters.updated_after:
            query = query.where(DocumentRow.updated_at >= filters.updated_after)
        if filters.updated_before:
            query = query.where(DocumentRow.updated_at < filters.updated_before)
        for name, value in filters.metadata.items():
            query = query.where(self._metadata_equals(name, value))
        with Session(self.engine) as session:
            return [int(k) for k in session.scalars(query)]

    def _metadata_equals(self, name: str, value: Scalar) -> ColumnElement[bool]:
        """Top-level field ``name`` equals ``value`` as JSON: a number only a number (1 and 1.0
        alike), a string only that string, true only true. Never a cast: a document whose field
        holds another type is just not a match (casting had failed the whole query on
        PostgreSQL, and on SQLite had matched "abc" to 0 and 1.5 to 1)."""
        if self.dialect == "postgresql":  # JSONB containment compares JSON types
            return type_coerce(DocumentRow.meta, JSONB).contains({name: value})
        # SQLite: json_each gives each top-level key with its JSON type; any key name is safe.
        fields = func.json_each(DocumentRow.meta).table_valued("key", "type", "value")
        if isinstance(value, bool):
            matches = fields.c.type == ("true" if value else "false")
        elif isinstance(value, (int, float)):
            matches = fields.c.type.in_(("integer", "real")) & (fields.c.value == value)
        else:
            matches = (fields.c.type == "text") & (fields.c.value == value)
        return exists().where(fields.c.key == name, matches)

    def changes_since(self, seq: int, batch_size: int = 1000) -> Iterator[list[StoredDocument]]:
        """Every document (tombstones included) whose last change is after ``seq``, in order."""
        return self._pages(DocumentRow.seq, seq, batch_size)

    def live_documents(self, batch_size: int = 1000) -> Iterator[list[StoredDocument]]:
        """All live documents in key order, with embeddings (for rebuilds)."""
        return self._pages(DocumentRow.key, 0, batch_size, DocumentRow.deleted.is_(False))

    def _pages(self, column: Any, after: int, batch_size: int, *where: Any) -> Iterator[list[StoredDocument]]:
        """Keyset pagination over ``column`` (seq or key), one short session a page."""
        while True:
            with Session(self.engine) as session:
                rows = session.scalars(
                    select(DocumentRow).where(column > after, *where).order_by(column).limit(batch_size)
                ).all()
                docs = [_to_document(row) for row in rows]
            if not docs:
                return
            yield docs
            after = getattr(docs[-1], column.key)

    def attributes(self) -> Iterator[tuple[int, str | None, datetime | None, datetime | None]]:
        """(key, category, updated_at, created_at) of every live document, streamed."""
        query = select(DocumentRow.key, DocumentRow.category, DocumentRow.updated_at, DocumentRow.created_at)
        with Session(self.engine) as session:
            for row in session.execute(query.where(DocumentRow.deleted.is_(False)).execution_options(yield_per=10_000)):
                yield int(row[0]), row[1], row[2], row[3]

    def last_seq(self) -> int:
        with Session(self.engine) as session:
            return _sequence(session)

    def stats(self) -> StoreStats:
        with Session(self.engine) as session:
            counts = dict(
                session.execute(select(DocumentRow.deleted, func.count()).group_by(DocumentRow.deleted)).all()
            )
        return StoreStats(live=int(counts.get(False, 0)), deleted=int(counts.get(True, 0)), last_seq=self.last_seq())

    def encoders_in_use(self) -> dict[str, int]:
        """How many live documents carry an embedding from each encoder fingerprint."""
        with Session(self.engine) as session:
            rows = session.execute(
                select(DocumentRow.encoder, func.count())
                .where(DocumentRow.deleted.is_(False))
                .group_by(DocumentRow.encoder)
            ).all()
        return {str(enc): int(n) for enc, n in rows}


# -- schema ---------------------------------------------------------------------------


def prepare_schema(
    target: str | URL | Engine, *, migrate: bool = True, dry_run: bool = False, attempts: int = 5
) -> SchemaReport:
    """Bring the store's schema to the head revision, in one transaction that holds a lock
    (PostgreSQL: an advisory lock; SQLite: BEGIN IMMEDIATE, its write lock), so that of two
    processes starting at once one migrates and the other then finds the work done.

    - an empty database gets the head revision (whatever ``migrate`` says: nothing to keep);
    - a store created before alembic (its tables, ``meta.schema_version`` 1 and no
      ``dss_alembic_version`` table) is stamped with the baseline revision, then treated as below;
    - a store at an older revision is upgraded when ``migrate``, else ``MigrationPending``;
    - a store at a revision this code does not know (a newer release's) raises ``SchemaError``.

    ``dry_run`` changes nothing and reports what would be done (``report.pending``).
    """
    from search import migrations

    engine = target if isinstance(target, Engine) else _migration_engine(target)
    if dry_run and _is_sqlite_file(engine) and not Path(engine.url.database or "").exists():
        engine.dispose()  # a look must not leave an empty database file behind
        return SchemaReport(None, None, migrations.head())
    if not isinstance(target, Engine) and (current := _ready_revision(target)) is not None:
        engine.dispose()  # at the head and seeded: nothing to do, no lock taken
        return SchemaReport(current, current, current)
    try:
        with _connect(engine, attempts) as connection, connection.begin():
            return _prepare(connection, migrate=migrate, dry_run=dry_run)
    finally:
        if engine is not target:
            engine.dispose()


def _ready_revision(url: str | URL) -> str | None:
    """The head revision when the store at ``url`` is there already and seeded, read without
    a lock (a start must not queue behind another process's write transaction); else None,
    and ``_prepare`` looks again under the lock."""
    from search import migrations

    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            where = connection.engine.url.render_as_string(hide_password=True)
            if _current_revision(connection, where) != migrations.head():
                return None
            seeded = (
                connection.scalar(select(MetaRow.value).where(MetaRow.key == "schema_version")) == str(SCHEMA_VERSION)
                and connection.scalar(select(CounterRow.value).where(CounterRow.name == SEQUENCE)) is not None
                and connection.scalar(select(MetaRow.value).where(MetaRow.key == "store_id")) is not None
            )
            return migrations.head() if seeded else None
    except OperationalError:  # e.g. a file being created by another process: look under the lock
        return None
    finally:
        engine.dispose()


def _connect(engine: Engine, attempts: int) -> Connection:
    for attempt in range(attempts):
        try:
            return engine.connect()
        except OperationalError:
            # SQLite: another process held a new file while this one set WAL mode; PostgreSQL:
            # a server still starting. Both pass. (A failing migration is not retried.)
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


def _prepare(connection: Connection, *, migrate: bool, dry_run: bool) -> SchemaReport:
    from alembic import command
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    from search import migrations

    where = connection.engine.url.render_as_string(hide_password=True)
    if connection.dialect.name == "postgresql":
        connection.execute(sql_text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
    config = migrations.alembic_config(connection)
    script = ScriptDirectory.from_config(config)
    head = script.get_current_head()
    assert head is not None, "no migration scripts found"
    before = _current_revision(connection, where)
    legacy = before is None and _is_legacy_store(connection, where)
    if before is not None:
        try:
            script.get_revision(before)
        except CommandError:
            raise SchemaError(
                f"store at {where} is at schema revision {before}, which this deepseek-search does not "
                f"know (its newest is {head}): it was migrated by a newer release. Run that release, "
                "or restore a backup taken before the upgrade"
            ) from None
    current = migrations.BASELINE if legacy else before
    if dry_run:  # a store from before alembic is pending until it is stamped
        return SchemaReport(before, None if legacy else current, head, legacy)
    if legacy and not migrate:
        raise MigrationPending(
            f"store at {where} was created before schema migrations. Run `dss migrate` (with the same "
            "--config/--data-dir) to stamp and upgrade it, or set store.migrate_on_start: true"
        )
    if legacy:
        log.info("stamping a store created before alembic", extra={"revision": migrations.BASELINE})
        command.stamp(config, migrations.BASELINE)
    if current is None:
        command.upgrade(config, "head")
    elif current != head:
        if not migrate:
            raise MigrationPending(
                f"store at {where} is at schema revision {current}; this deepseek-search needs {head}. "
                "Run `dss migrate` (with the same --config/--data-dir) to upgrade it, or set "
                "store.migrate_on_start: true"
            )
        log.warning("migrating the store's schema", extra={"from": current, "to": head})
        command.upgrade(config, "head")
    after = _current_revision(connection, where)
    _seed(connection, where)
    return SchemaReport(before, after, head, legacy)


def _current_revision(connection: Connection, where: str) -> str | None:
    """The revision in alembic's table (read directly: alembic's MigrationContext logs a line
    each time it is made, and this runs at every start)."""
    from search.migrations import VERSION_TABLE

    if not inspect(connection).has_table(VERSION_TABLE):
        return None
    found = list(connection.scalars(sql_text(f"SELECT version_num FROM {VERSION_TABLE}")))
    if len(found) > 1:
        raise SchemaError(f"store at {where} is at several schema revisions at once ({', '.join(found)})")
    return found[0] if found else None


def _is_legacy_store(connection: Connection, where: str) -> bool:
    """Whether a database without ``dss_alembic_version`` holds a store created before alembic."""
    ours = LEGACY_TABLES & set(inspect(connection).get_table_names())
    if not ours:
        return False
    if ours != LEGACY_TABLES:
        raise SchemaError(
            f"database at {where} has the table(s) {', '.join(sorted(ours))} but not "
            f"{', '.join(sorted(LEGACY_TABLES - ours))}, and no dss_alembic_version table: not a "
            "deepseek-search store this release recognises"
        )
    version = connection.scalar(select(MetaRow.value).where(MetaRow.key == "schema_version"))
    if version is not None and version != "1":
        raise SchemaError(f"store at {where} has schema version {version}; this deepseek-search expects 1")
    return True


def _seed(connection: Connection, where: str) -> None:
    """The rows every store has; and the check releases before alembic made."""
    version = connection.scalar(select(MetaRow.value).where(MetaRow.key == "schema_version"))
    if version is None:
        connection.execute(insert(MetaRow).values(key="schema_version", value=str(SCHEMA_VERSION)))
    elif version != str(SCHEMA_VERSION):
        raise SchemaError(
            f"store at {where} has schema version {version}; this deepseek-search expects {SCHEMA_VERSION}"
        )
    if connection.scalar(select(CounterRow.value).where(CounterRow.name == SEQUENCE)) is None:
        connection.execute(insert(CounterRow).values(name=SEQUENCE, value=0))
    if connection.scalar(select(MetaRow.value).where(MetaRow.key == "store_id")) is None:
        connection.execute(insert(MetaRow).values(key="store_id", value=uuid.uuid4().hex))


def _baseline() -> str:
    from search import migrations

    return migrations.BASELINE


def _migration_engine(url: str | URL) -> Engine:
    """An engine of one unpooled connection for ``_prepare``. On SQLite the whole migration
    is one transaction begun with BEGIN IMMEDIATE: pysqlite would otherwise run DDL outside
    any transaction, and begin deferred transactions that two processes could both enter."""
    engine = create_engine(url, poolclass=NullPool)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _connect(dbapi_connection: Any, record: Any) -> None:
            _sqlite_pragmas(dbapi_connection, record)
            dbapi_connection.isolation_level = None  # no implicit BEGIN: see below

        @event.listens_for(engine, "begin")
        def _begin(connection: Connection) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _is_sqlite_memory(engine: Engine) -> bool:
    url = engine.url
    return engine.dialect.name == "sqlite" and (url.database in (None, "", ":memory:") or "mode=memory" in str(url))


def _is_sqlite_file(engine: Engine) -> bool:
    """A plain SQLite file path (not in memory, no driver options such as ``uri=true``)."""
    url = engine.url
    return engine.dialect.name == "sqlite" and url.database not in (None, "", ":memory:") and not url.query


class _SqlitePageReader:
    """Hydration of result pages on an SQLite file through the bare sqlite3 module, on a
    connection of its own: it runs for every uncached query, and a pooled Core query costs
    much more, most of it holding the GIL the rest of the query path needs (see
    docs/architecture.md). It decodes the columns as the store's types
    do (JSON metadata; naive UTC timestamps returned aware). Autocommit: each read sees the
    latest commit and holds no snapshot open between reads."""

    _COLUMNS = "key, id, version, seq, title, text, metadata, category, created_at, updated_at, encoder"

    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA busy_timeout=30000")
        self._lock = threading.Lock()

    def get_by_keys(self, keys: Sequence[int]) -> dict[int, StoredDocument]:
        marks = ",".join("?" * len(keys))
        sql = f"SELECT {self._COLUMNS} FROM documents WHERE deleted = 0 AND key IN ({marks})"
        with self._lock:
            rows = self._db.execute(sql, [int(k) for k in keys]).fetchall()
        return {
            key: StoredDocument(
                key=key,
                id=id_,
                version=version,
                deleted=False,
                seq=seq,
                title=title or "",
                text=text or "",
                metadata=json.loads(meta) if meta else {},
                category=category,
                created_at=_utc(created_at),
                updated_at=_utc(updated_at),
                embedding=None,
                encoder=encoder,
            )
            for key, id_, version, seq, title, text, meta, category, created_at, updated_at, encoder in rows
        }

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _utc(stored: str | None) -> datetime | None:
    return datetime.fromisoformat(stored).replace(tzinfo=UTC) if stored else None


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")  # first: switching to WAL waits for other processes too
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
