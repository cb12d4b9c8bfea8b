"""What reranking needs to know of every indexed document, held in memory: its category and
age, and the centroid of each category's embeddings (for category affinity).

Kept in step by the indexer: rebuilt from the store once the indexes have caught up, then
updated with every applied batch. Centroids are running sums, so an update subtracts the
document's previous vector (read back from the vector index before it is replaced).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from search.documents import StoredDocument
from search.store import Store
from search.vector_index import VectorIndex


@dataclass(frozen=True)
class Attributes:
    category: str | None
    timestamp: float | None  # updated_at (else created_at), seconds since the epoch


def attributes_of(doc: StoredDocument) -> Attributes:
    return make_attributes(doc.category, doc.updated_at, doc.created_at)


def make_attributes(category: str | None, updated_at: datetime | None, created_at: datetime | None) -> Attributes:
    moment = updated_at or created_at
    return Attributes(category, moment.timestamp() if moment else None)


class DocumentAttributes:
    def __init__(self, dimension: int) -> None:
        self.dimension = dimension
        self.loaded = False
        self._by_key: dict[int, Attributes] = {}
        self._sums: dict[str, np.ndarray] = {}
        self._counts: dict[str, int] = {}
        self._centroids: tuple[list[str], np.ndarray] | None = None  # cached, normalised
        self._lock = threading.Lock()

    def rebuild(self, store: Store, vectors: VectorIndex) -> None:
        """Replace everything with the store's live documents (vectors must be caught up)."""
        by_key = {key: make_attributes(c, u, cr) for key, c, u, cr in store.attributes()}
        sums: dict[str, np.ndarray] = {}
        counts: dict[str, int] = {}
        categorised = [key for key, a in by_key.items() if a.category is not None]
        for start in range(0, len(categorised), 10_000):
            keys = categorised[start : start + 10_000]
            found_vectors, found = vectors.reconstruct(keys)
            for key, vector, ok in zip(keys, found_vectors, found):
                category = by_key[key].category
                if ok and category is not None:  # always set here: categorised keys only
                    _add(sums, counts, category, vector, self.dimension)
        with self._lock:
            self._by_key, self._sums, self._counts = by_key, sums, counts
            self._centroids, self.loaded = None, True

    def apply(self, docs: Sequence[StoredDocument], vectors: VectorIndex) -> None:
        """Record a batch of changes; call before ``vectors`` takes them."""
        if not self.loaded or not docs:
            return
        previous_vectors, found = vectors.reconstruct([d.key for d in docs])
        with self._lock:
            for doc, old_vector, had_vector in zip(docs, previous_vectors, found):
                old = self._by_key.pop(doc.key, None)
                if old is not None and old.category is not None and had_vector:
                    _add(self._sums, self._counts, old.category, -old_vector, self.dimension, -1)
                if doc.deleted:
                    continue
                new = attributes_of(doc)
                self._by_key[doc.key] = new
                if new.category is not None and doc.embedding is not None:
                    vector = np.frombuffer(doc.embedding, dtype=np.float32)
                    _add(self._sums, self._counts, new.category, vector, self.dimension)
            self._centroids = None

    def get(self, keys: Sequence[int]) -> list[Attributes | None]:
        by_key = self._by_key
        return [by_key.get(key) for key in keys]

    def centroids(self) -> tuple[list[str], np.ndarray]:
        """Category names and their unit-length centroids ``[C, d]``."""
        with self._lock:
            if self._centroids is None:
                names = sorted(c for c, n in self._counts.items() if n > 0)
                matrix = np.array([self._sums[c] / self._counts[c] for c in names], dtype=np.float32)
                matrix = matrix.reshape(len(names), self.dimension)
                norms = np.linalg.norm(matrix, axis=1, keepdims=True)
                self._centroids = (names, matrix / np.maximum(norms, 1e-12))
            return self._centroids


def _add(
    sums: dict[str, np.ndarray],
    counts: dict[str, int],
    category: str,
    vector: np.ndarray,
    dimension: int,
    count: int = 1,
) -> None:
    total = sums.get(category)
    if total is None:
        total = sums[category] = np.zeros(dimension, dtype=np.float64)
    total += vector
    counts[category] = counts.get(category, 0) + count
    if counts[category] <= 0:
        del sums[category], counts[category]
