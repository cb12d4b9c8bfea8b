"""Opening everything a data directory holds, wired together and caught up."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from indexer.layout import current_generation
from indexer.writer import Indexer, Progress, WriteReport
from search.attributes import DocumentAttributes
from search.caches import TieredCache
from search.config import Settings
from search.documents import DocumentWrite
from search.encoders import Encoder, load_encoder
from search.engine import SearchEngine
from search.lexical import LexicalIndex
from search.query_cache import CachedQueryEncoder, ResultCache
from search.query_path import QueryPath
from search.store import Store, WriteRefused
from search.vector_index import EncoderMismatch, VectorIndex

log = logging.getLogger(__name__)
ENCODER_FILE = "encoder.json"  # the encoder settings a generation was built with


@dataclass
class Indexes:
    """One generation of indexes, the engine reading them and the indexer feeding them."""

    generation: Path
    encoder: Encoder
    vectors: VectorIndex
    lexical: LexicalIndex
    indexer: Indexer
    engine: SearchEngine
    embeddings: CachedQueryEncoder | None = None  # the engine's cached query embeddings

    def close(self) -> None:
        self.engine.close()
        self.indexer.save_changes()
        self.lexical.close()


@dataclass
class Collection:
    """A data directory in use. Readers take ``collection.indexes`` once per request; a
    reindex replaces it in one assignment, so a query runs wholly on the old or the new."""

    settings: Settings
    store: Store
    indexes: Indexes
    query_path: QueryPath = field(default_factory=QueryPath)  # caches shared by every generation
    _write_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def cache(self) -> TieredCache | None:
        return self.query_path.cache

    @property
    def results(self) -> ResultCache | None:
        return self.query_path.results

    # Shorthands for the live generation.
    @property
    def engine(self) -> SearchEngine:
        return self.indexes.engine

    @property
    def indexer(self) -> Indexer:
        return self.indexes.indexer

    @property
    def encoder(self) -> Encoder:
        return self.indexes.encoder

    @property
    def vectors(self) -> VectorIndex:
        return self.indexes.vectors

    @property
    def lexical(self) -> LexicalIndex:
        return self.indexes.lexical

    @property
    def generation(self) -> Path:
        return self.indexes.generation

    def write(self, changes: Sequence[DocumentWrite]) -> WriteReport:
        """The write path for every producer (HTTP, Kafka, ingest). Raises ``WriteRefused``,
        writing nothing, when the store refuses a value in the batch."""
        with self._write_lock:
            return self.indexes.indexer.write(changes)

    def write_skipping_refused(self, changes: Sequence[DocumentWrite]) -> tuple[WriteReport, dict[int, str]]:
        """``write``, except that one change the store refuses does not hold up the others: a
        refused batch is written again one change at a time, in order. Returns the report of
        what was written and, by position in ``changes``, why each refused change was."""
        try:
            return self.write(changes), {}
        except WriteRefused:
            pass
        report, refused = WriteReport(), {}
        for position, change in enumerate(changes):
            try:
                written = self.write([change])
            except WriteRefused as exc:
                refused[position] = str(exc)
                continue
            report.results.extend(written.results)
            report.last_seq = max(report.last_seq, written.last_seq)
        return report, refused

    def catch_up(self) -> int:
        """Apply changes that other processes committed to the store (a follower's poll)."""
        with self._write_lock:
            return self.indexes.indexer.catch_up()

    @contextmanager
    def writes_paused(self) -> Iterator[None]:
        with self._write_lock:
            yield

    def close(self) -> None:
        with self._write_lock:
            self.indexes.close()
            self.store.close()
            self.query_path.close()

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_indexes(
    settings: Settings, store: Store, encoder: Encoder, generation: Path, query_path: QueryPath | None = None
) -> Indexes:
    """The indexes of one generation, the indexer that keeps them in step with the store and
    the engine that reads them (through ``query_path``'s caches, if any)."""
    try:
        vectors = VectorIndex.load(generation / "vectors", settings.index, encoder.fingerprint)
    except EncoderMismatch as exc:
        recorded = generation / ENCODER_FILE
        if recorded.is_file():
            raise EncoderMismatch(f"{exc} The index was built with encoder settings {recorded.read_text()}") from None
        raise
    lexical = LexicalIndex(generation / "lexical", settings.lexical)
    attributes = DocumentAttributes(encoder.dimension)
    indexer = Indexer(settings, store, encoder, vectors, lexical, generation / "vectors", attributes)
    engine, embeddings = (query_path or QueryPath()).engine(
        settings, store, encoder, vectors, lexical, attributes, generation.name
    )
    (generation / ENCODER_FILE).write_text(settings.encoder.model_dump_json())
    return Indexes(generation, encoder, vectors, lexical, indexer, engine, embeddings)


def open_collection(
    settings: Settings,
    encoder: Encoder | None = None,
    progress: Progress | None = None,
    query_path: QueryPath | None = None,
) -> Collection:
    """Open the store and the current indexes under ``settings.data_dir`` and catch them up.
    ``query_path``: the caches queries go through; None = those configured.

    Raises ``EncoderMismatch`` when the saved vector index was built by another encoder.
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    encoder = encoder or load_encoder(settings.encoder)
    store = Store(settings.store_url, migrate_on_start=settings.store.migrate_on_start)
    generation = current_generation(settings.data_dir)
    generation.mkdir(parents=True, exist_ok=True)
    query_path = query_path or QueryPath.build(settings)
    indexes = open_indexes(settings, store, encoder, generation, query_path)
    caught_up = indexes.indexer.catch_up(progress)
    if caught_up:
        log.info("indexes caught up with the store", extra={"changes": caught_up})
    return Collection(settings, store, indexes, query_path)
