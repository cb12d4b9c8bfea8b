"""The one write path (ingest, HTTP and Kafka all come through here).

A batch of writes is folded in order against the stored versions (indexer.versioning),
the surviving upserts are encoded in one encoder call, and everything is committed to the
store in one transaction that allocates change sequence numbers. The indexes then catch up
from the store's change log: the same code runs after every write and at start-up, so an
index that fell behind (a crash between the store commit and an index update, a missing
snapshot) heals the same way.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from indexer.versioning import Decision, Outcome, VersionState, decide
from search.attributes import DocumentAttributes
from search.config import Settings
from search.documents import DocumentWrite, StoredDocument, embedding_text
from search.encoders import Encoder
from search.lexical import LexicalEntry, LexicalIndex
from search.store import DocumentState, Store
from search.vector_index import MANIFEST_FILE, VectorIndex

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (done, total)


@dataclass(frozen=True)
class WriteResult:
    id: str
    op: str
    outcome: Outcome
    version: int | None
    reason: str = ""


@dataclass
class WriteReport:
    results: list[WriteResult] = field(default_factory=list)
    last_seq: int = 0

    def count(self, outcome: Outcome) -> int:
        return sum(1 for r in self.results if r.outcome is outcome)

    @property
    def applied(self) -> int:
        return self.count(Outcome.APPLIED)

    @property
    def unchanged(self) -> int:
        return self.count(Outcome.UNCHANGED)

    @property
    def stale(self) -> list[WriteResult]:
        return [r for r in self.results if r.outcome is Outcome.STALE]


class Indexer:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        encoder: Encoder,
        vectors: VectorIndex,
        lexical: LexicalIndex,
        vector_dir: Path,
        attributes: DocumentAttributes,
    ) -> None:
        self.settings = settings
        self.store = store
        self.encoder = encoder
        self.vectors = vectors
        self.lexical = lexical
        self.vector_dir = vector_dir
        self.attributes = attributes
        self._lock = threading.Lock()
        self._since_snapshot = 0
        self._bulk = False

    # -- writes ---------------------------------------------------------------------------

    def write(self, changes: Sequence[DocumentWrite]) -> WriteReport:
        """Apply a batch of upserts and deletes in order; returns what happened to each."""
        with self._lock:
            report = self._commit(changes)
            self._catch_up_locked()
            erased = any(r.op == "delete" and r.outcome is Outcome.APPLIED for r in report.results)
            if erased and self.settings.index.snapshot_on_delete:
                self.snapshot()
            return report

    def _commit(self, changes: Sequence[DocumentWrite]) -> WriteReport:
        fingerprint = str(self.encoder.fingerprint)
        report = WriteReport()
        with self.store.writing() as batch:
            stored = batch.states(list({c.id for c in changes}))
            current = {doc_id: _version_state(s) for doc_id, s in stored.items()}
            final: dict[str, tuple[DocumentWrite, Decision, str | None]] = {}
            for change in changes:
                content_hash = change.content_hash() if change.op == "upsert" else None
                decision = decide(current.get(change.id), change.op, change.version, content_hash)
                report.results.append(
                    WriteResult(change.id, change.op, decision.outcome, decision.version, decision.reason)
                )
                if decision.outcome is Outcome.APPLIED:
                    assert decision.version is not None  # an applied write stores a version
                    current[change.id] = VersionState(decision.version, change.op == "delete", content_hash)
                    final.pop(change.id, None)  # keep dict order = order of the last write
                    final[change.id] = (change, decision, content_hash)

            embeddings = self._embeddings_for(
                [(c, h) for c, _, h in final.values() if c.op == "upsert"], stored, fingerprint
            )
            for doc_id, (change, decision, content_hash) in final.items():
                assert decision.version is not None  # applied writes only
                if change.op == "delete":
                    batch.delete(doc_id, decision.version)
                    continue
                assert content_hash is not None  # an upsert's
                previous = stored.get(doc_id)
                batch.upsert(
                    change,
                    version=decision.version,
                    content_hash=content_hash,
                    embedding=embeddings[doc_id],
                    encoder=fingerprint,
                    created_at=previous.created_at if previous else None,
                )
            report.last_seq = batch.last_seq
        for stale in report.stale:
            log.info("ignored stale write", extra={"doc_id": stale.id, "reason": stale.reason})
        return report

    def _embeddings_for(
        self,
        upserts: list[tuple[DocumentWrite, str | None]],
        stored: dict[str, DocumentState],
        fingerprint: str,
    ) -> dict[str, bytes]:
        """Encode what changed; a version bump with identical content keeps its embedding."""
        out: dict[str, bytes] = {}
        to_encode: list[DocumentWrite] = []
        for change, content_hash in upserts:
            previous = stored.get(change.id)
            if (
                previous is not None
                and previous.embedding is not None
                and previous.encoder == fingerprint
                and previous.content_hash == content_hash
            ):
                out[change.id] = previous.embedding
            else:
                to_encode.append(change)
        if to_encode:
            vectors = self.encoder.encode_documents([c.embedding_text() for c in to_encode])
            for change, vector in zip(to_encode, vectors):
                out[change.id] = vector.astype(np.float32).tobytes()
        return out

    @contextmanager
    def bulk(self) -> Iterator[None]:
        """Writes whose vector index is (re)trained once, when the block ends, for everything
        written: a bulk load into an empty collection would otherwise be trained on its first
        ``train_threshold`` documents, with far fewer lists than its size asks for
        (docs/architecture.md#vector-index), and retrained anyway by a write a few hundred
        documents later, in the serving process. A block that fails leaves the
        training to the next catch-up (an interrupted load is not kept waiting for it)."""
        self._bulk = True
        try:
            yield
        finally:
            self._bulk = False
        with self._lock:
            if self.vectors.wants_rebuild():
                self.rebuild_vectors()

    # -- keeping the indexes in step with the store ----------------------------------------

    def catch_up(self, progress: Progress | None = None) -> int:
        """Bring both indexes up to the store's latest change; returns changes applied."""
        with self._lock:
            return self._catch_up_locked(progress)

    def _catch_up_locked(self, progress: Progress | None = None) -> int:
        start = min(self.vectors.seq, self.lexical.seq)
        total = max(0, self.store.last_seq() - start)
        applied = 0
        for docs in self.store.changes_since(start):
            self._apply_to_indexes(docs)
            applied += len(docs)
            if progress:
                progress(applied, total)
        if not self._bulk and self.vectors.wants_rebuild():
            self.rebuild_vectors()
        if not self.attributes.loaded:  # first catch-up: from here on, kept per batch
            self.attributes.rebuild(self.store, self.vectors)
        self._since_snapshot += applied
        if self._since_snapshot >= self.settings.index.snapshot_every:
            self.snapshot()
        return applied

    def _apply_to_indexes(self, docs: list[StoredDocument]) -> None:
        last = docs[-1].seq
        fresh = [d for d in docs if d.seq > self.vectors.seq]
        live = self._with_current_embeddings([d for d in fresh if not d.deleted])
        self.attributes.apply(fresh, self.vectors)  # before the vectors change: reads the old ones
        if live:
            keys = np.array([d.key for d in live], dtype=np.int64)
            self.vectors.upsert(keys, _stack(live, self.encoder.dimension))
        self.vectors.remove(np.array([d.key for d in fresh if d.deleted], dtype=np.int64))
        self.vectors.seq = max(self.vectors.seq, last)

        fresh = [d for d in docs if d.seq > self.lexical.seq]
        entries = [_lexical_entry(d) for d in fresh if not d.deleted]
        removed = [d.key for d in fresh if d.deleted]
        if entries or removed or last > self.lexical.seq:
            self.lexical.apply(entries, removed, last)

    def _with_current_embeddings(self, docs: list[StoredDocument]) -> list[StoredDocument]:
        """Re-encode documents whose stored embedding came from another encoder."""
        fingerprint = str(self.encoder.fingerprint)
        outdated = [d for d in docs if d.encoder != fingerprint or d.embedding is None]
        if outdated:
            vectors = self.encoder.encode_documents([embedding_text(d.title, d.text) for d in outdated])
            updates = []
            for doc, vector in zip(outdated, vectors):
                doc.embedding, doc.encoder = vector.astype(np.float32).tobytes(), fingerprint
                updates.append((doc.key, doc.embedding))
            self.store.set_embeddings(updates, fingerprint)
        return docs

    def rebuild_vectors(self) -> None:
        """Rebuild (and train, when big enough) the vector index from the store's embeddings."""
        seq = self.store.last_seq()
        # Said before the work: training takes minutes at 100,000 documents and more.
        log.info(
            "rebuilding the vector index",
            extra={"vectors": self.vectors.count, "layout_changed": self.vectors.layout_changed},
        )
        batches = (
            (np.array([d.key for d in docs], dtype=np.int64), _stack(docs, self.encoder.dimension))
            for docs in map(self._with_current_embeddings, self.store.live_documents())
        )
        self.vectors.rebuild(batches)
        self.vectors.seq = max(self.vectors.seq, seq)
        log.info("vector index rebuilt", extra={"state": str(self.vectors.state)})
        self.snapshot()

    def snapshot(self) -> None:
        """Persist the vector index (the lexical index persists at every commit)."""
        self.vectors.save(self.vector_dir)
        self._since_snapshot = 0

    def save_changes(self) -> None:
        """``snapshot``, where the one on disk lacks what is in memory. Every change to the
        vector index is an applied change or a rebuild (which snapshots), so a collection that
        only answered queries writes nothing when it closes (a `dss search` had rewritten the
        whole index on its way out)."""
        if self._since_snapshot or not (self.vector_dir / MANIFEST_FILE).is_file():
            self.snapshot()


def _version_state(state: DocumentState) -> VersionState:
    return VersionState(state.version, state.deleted, state.content_hash)


def _stack(docs: list[StoredDocument], dimension: int) -> np.ndarray:
    if not docs:
        return np.zeros((0, dimension), dtype=np.float32)
    rows = []
    for d in docs:
        assert d.embedding is not None  # live documents, read with their embeddings
        rows.append(np.frombuffer(d.embedding, dtype=np.float32))
    return np.vstack(rows)


def _lexical_entry(doc: StoredDocument) -> LexicalEntry:
    return LexicalEntry(doc.key, doc.title, embedding_text(doc.title, doc.text))
