"""The document store: the source of truth that every index follows.

SQLAlchemy 2.x over SQLite (default, WAL mode) or PostgreSQL. Each applied write gets the
next value of one change sequence; the indexes record the sequence they reflect and catch up
with ``changes_since(seq)``. Writers serialise on the sequence counter's row for the whole
transaction, so sequence order is commit order and a reader never skips a change that
commits late.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    bindparam,
    DateTime,
    Integer,
    LargeBinary,
    String,
    Text,
    create_engine,
    event,
    exists,
    func,
    insert,
    select,
    type_coerce,
    update,
)
from sqlalchemy import text as sql_text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError, ProgrammingError, StatementError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeDecorator

from search.documents import DocumentWrite, StoredDocument, as_utc, utcnow
from search.filters import Filters, Scalar

SCHEMA_VERSION = 1
SEQUENCE = "change_seq"


class SchemaError(RuntimeError):
    """The database was written by an incompatible version of deepseek-search."""


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
        return value.replace(tzinfo=timezone.utc) if value else None


class Base(DeclarativeBase):
    pass


class DocumentRow(Base):
    __tablename__ = "documents"

    # SQLite only auto-increments an INTEGER PRIMARY KEY; it is 64-bit there as well.
    key: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    id: Mapped[str] = mapped_column(String(512), unique=True)
    version: Mapped[int] = mapped_column(BigInteger)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    seq: Mapped[int] = mapped_column(BigInteger, index=True)
    title: Mapped[str | None] = mapped_column(Text)
    text: Mapped[str | None] = mapped_column(Text)
    meta: Mapped[dict | None] = mapped_column(
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
).where(
    DocumentRow.key.in_(bindparam("keys", expanding=True)), DocumentRow.deleted.is_(False)
)


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


def _to_document(row: DocumentRow, with_embedding: bool = True) -> StoredDocument:
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
        values = dict(
            version=version,
            deleted=False,
            seq=self._next_seq(),
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
        return values["seq"]

    def delete(self, doc_id: str, version: int) -> int:
        """A tombstone: keeps id, version and sequence; erases content and embedding."""
        values = dict(
            version=version,
            deleted=True,
            seq=self._next_seq(),
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
        return values["seq"]

    def _put(self, doc_id: str, values: dict[str, Any]) -> None:
        self._pending.pop(doc_id, None)  # a later write of the same id wins, in sequence order
        self._pending[doc_id] = values

    def flush(self) -> None:
        if not self._pending:
            return
        unknown = [doc_id for doc_id in self._pending if doc_id not in self._keys]
        if unknown:  # the writer looks every id up through states(); others are found here
            self._keys.update(dict.fromkeys(unknown))
            rows = self._session.execute(
                select(DocumentRow.id, DocumentRow.key).where(DocumentRow.id.in_(unknown))
            )
            self._keys.update({doc_id: key for doc_id, key in rows})
        updates = [{"key": self._keys[i], **v} for i, v in self._pending.items() if self._keys[i] is not None]
        inserts = [{"id": i, **v} for i, v in self._pending.items() if self._keys[i] is None]
        if updates:
            self._session.execute(update(DocumentRow), updates)
        if inserts:
            self._session.execute(insert(DocumentRow), inserts)
        self._pending.clear()


class Store:
    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        # A pooled server connection may have been dropped: check it out with a ping. An
        # SQLite file has no connection to lose (the ping was 3% of the ranking thread).
        self.engine: Engine = create_engine(url, echo=echo, pool_pre_ping=not url.startswith("sqlite"))
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._store_id: str | None = None
        self._initialise()
        self._page_reader = _SqlitePageReader(self.engine.url.database) if _is_sqlite_file(self.engine) else None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        if self._page_reader is not None:
            self._page_reader.close()
        self.engine.dispose()

    def _initialise(self, attempts: int = 5) -> None:
        """Create the tables and check the schema version, safe against another process (a
        consumer and a query service starting together) doing the same at the same moment."""
        for attempt in range(attempts):
            try:
                with self.engine.begin() as connection:
                    if self.dialect == "postgresql":  # serialise concurrent CREATE TABLEs
                        connection.execute(sql_text("SELECT pg_advisory_xact_lock(7305917)"))
                    Base.metadata.create_all(connection)
                self._check_schema()
                return
            except (IntegrityError, OperationalError, ProgrammingError):
                # The other process won a race (a table or the schema row appeared under us).
                if attempt == attempts - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))

    def _check_schema(self) -> None:
        with Session(self.engine) as session, session.begin():
            row = session.get(MetaRow, "schema_version")
            if row is None:
                session.add(MetaRow(key="schema_version", value=str(SCHEMA_VERSION)))
            elif int(row.value) != SCHEMA_VERSION:
                raise SchemaError(
                    f"store at {self.engine.url.render_as_string(hide_password=True)} has schema "
                    f"version {row.value}; this deepseek-search expects {SCHEMA_VERSION}"
                )
            if session.get(CounterRow, SEQUENCE) is None:
                session.add(CounterRow(name=SEQUENCE, value=0))
            if session.get(MetaRow, "store_id") is None:
                session.add(MetaRow(key="store_id", value=uuid.uuid4().hex))

    @property
    def store_id(self) -> str:
        """A random id given to this store when it was created: tells caches shared by
        several services apart, and a re-created database from its previous life."""
        if self._store_id is None:
            with Session(self.engine) as session:
                self._store_id = session.get(MetaRow, "store_id").value
        return self._store_id

    @contextmanager
    def writing(self) -> Iterator[WriteBatch]:
        """A transaction that holds the sequence counter's lock until it commits. Raises
        ``WriteRefused`` (and commits nothing) when the database refuses a value in it."""
        try:
            with Session(self.engine) as session, session.begin():
                # Touching the counter row first takes SQLite's write lock / PostgreSQL's row lock.
                session.execute(
                    update(CounterRow).where(CounterRow.name == SEQUENCE).values(value=CounterRow.value)
                )
                first = session.scalar(select(CounterRow.value).where(CounterRow.name == SEQUENCE))
                batch = WriteBatch(session, int(first))
                yield batch
                batch.flush()
                session.execute(
                    update(CounterRow).where(CounterRow.name == SEQUENCE).values(value=batch.last_seq)
                )
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
            row = session.scalar(
                select(DocumentRow).where(DocumentRow.id == doc_id, DocumentRow.deleted.is_(False))
            )
            return _to_document(row, with_embedding=False) if row else None

    def get_by_keys(self, keys: Sequence[int]) -> dict[int, StoredDocument]:
        if not keys:
            return {}
        if self._page_reader is not None:
            return self._page_reader.get_by_keys(keys)
        # Core, not the ORM: this runs for every uncached query, and ORM rows cost ~3x more.
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
            return int(session.scalar(select(CounterRow.value).where(CounterRow.name == SEQUENCE)))

    def stats(self) -> StoreStats:
        with Session(self.engine) as session:
            counts = dict(
                session.execute(
                    select(DocumentRow.deleted, func.count()).group_by(DocumentRow.deleted)
                ).all()
            )
        return StoreStats(
            live=int(counts.get(False, 0)), deleted=int(counts.get(True, 0)), last_seq=self.last_seq()
        )

    def encoders_in_use(self) -> dict[str, int]:
        """How many live documents carry an embedding from each encoder fingerprint."""
        with Session(self.engine) as session:
            rows = session.execute(
                select(DocumentRow.encoder, func.count())
                .where(DocumentRow.deleted.is_(False))
                .group_by(DocumentRow.encoder)
            ).all()
        return {str(enc): int(n) for enc, n in rows}


def _is_sqlite_file(engine: Engine) -> bool:
    """A plain SQLite file path (not in memory, no driver options such as ``uri=true``)."""
    url = engine.url
    return engine.dialect.name == "sqlite" and url.database not in (None, "", ":memory:") and not url.query


class _SqlitePageReader:
    """Hydration of result pages on an SQLite file through the bare sqlite3 module, on a
    connection of its own: it runs for every uncached query, and a pooled Core query cost
    2.6x as much (207 vs 80 µs for a page of 10 on 100,000 documents), most of it holding
    the GIL the rest of the query path needs. It decodes the columns as the store's types
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
    return datetime.fromisoformat(stored).replace(tzinfo=timezone.utc) if stored else None


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
