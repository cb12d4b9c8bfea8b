"""The query path: encode, retrieve from the vector and lexical indexes, fuse, hydrate."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np

from search.config import SearchSettings
from search.encoders import Encoder
from search.filters import Filters
from search.fusion import linear_fusion, top
from search.lexical import LexicalIndex
from search.snippets import snippet
from search.store import Store
from search.vector_index import VectorIndex

Mode = Literal["dense", "lexical", "hybrid", "default"]
MODES: tuple[str, ...] = ("dense", "lexical", "hybrid", "default")
SNIPPET_CHARS = 240


@dataclass
class Hit:
    id: str
    score: float
    title: str
    snippet: str
    category: str | None = None
    updated_at: datetime | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    signals: dict[str, float] = field(default_factory=dict)  # raw score per signal


@dataclass
class SearchResult:
    query: str
    mode: str
    hits: list[Hit]
    timings_ms: dict[str, float]
    weights: dict[str, float] = field(default_factory=dict)  # weight per signal in the fusion


@dataclass
class Ranking:
    """Keys with fused scores, best first, and each candidate's raw signal scores."""

    ranked: list[tuple[int, float]]
    signals: dict[str, dict[int, float]]


class SearchEngine:
    def __init__(
        self,
        settings: SearchSettings,
        store: Store,
        encoder: Encoder,
        vectors: VectorIndex,
        lexical: LexicalIndex,
    ) -> None:
        self.settings = settings
        self.store = store
        self.encoder = encoder
        self.vectors = vectors
        self.lexical = lexical

    def resolve_mode(self, mode: str | None) -> str:
        mode = mode or "default"
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
        return self.settings.default_mode if mode == "default" else mode

    def search(
        self,
        query: str,
        k: int = 10,
        mode: str | None = None,
        nprobe: int | None = None,
        offset: int = 0,
        filters: Filters | None = None,
    ) -> SearchResult:
        mode = self.resolve_mode(mode)
        timings: dict[str, float] = {}
        depth = offset + k
        ranking = self.rank_many([query], depth, mode, nprobe, timings, filters)[0]
        page = ranking.ranked[offset:depth]
        started = time.perf_counter()
        docs = self.store.get_by_keys([key for key, _ in page])
        terms = set(self.lexical.query_terms(query))
        hits = [
            Hit(
                id=docs[key].id,
                score=score,
                title=docs[key].title,
                snippet=snippet(docs[key].text, terms, self.lexical.analyzer.terms, SNIPPET_CHARS),
                category=docs[key].category,
                updated_at=docs[key].updated_at,
                metadata=docs[key].metadata,
                signals={name: scores[key] for name, scores in ranking.signals.items() if key in scores},
            )
            for key, score in page
            if key in docs  # a document deleted since retrieval is dropped, never shown
        ]
        timings["hydrate"] = _ms(started)
        return SearchResult(query, mode, hits, timings, self.weights(mode))

    def weights(self, mode: str) -> dict[str, float]:
        if mode == "dense":
            return {"dense": 1.0}
        if mode == "lexical":
            return {"lexical": 1.0}
        w = self.settings.hybrid_dense_weight
        return {"dense": w, "lexical": 1 - w}

    def rank_many(
        self,
        queries: Sequence[str],
        k: int,
        mode: str | None = None,
        nprobe: int | None = None,
        timings: dict[str, float] | None = None,
        filters: Filters | None = None,
    ) -> list[Ranking]:
        """Rank keys for many queries at once (one batched encoder call)."""
        mode = self.resolve_mode(mode)
        timings = timings if timings is not None else {}
        allowed = None
        if filters:
            started = time.perf_counter()
            allowed = self.store.keys_matching(filters)
            timings["filter"] = _ms(started)
        depth = max(k, self.settings.candidates) if mode == "hybrid" else k
        dense: list[dict[int, float]] = [{} for _ in queries]
        lexical: list[dict[int, float]] = [{} for _ in queries]
        if mode in ("dense", "hybrid"):
            started = time.perf_counter()
            vectors = self.encoder.encode_queries(list(queries))
            timings["encode"] = _ms(started)
            started = time.perf_counter()
            scores, keys = self.vectors.search(vectors, depth, nprobe=nprobe, allowed=allowed)
            timings["vector"] = _ms(started)
            dense = [_as_scores(keys[i], scores[i]) for i in range(len(queries))]
        if mode in ("lexical", "hybrid"):
            started = time.perf_counter()
            lexical = [dict(self.lexical.search(q, depth, allowed=allowed)) for q in queries]
            timings["lexical"] = _ms(started)
        started = time.perf_counter()
        rankings = []
        for dense_scores, lexical_scores in zip(dense, lexical):
            signals = {"dense": dense_scores, "lexical": lexical_scores}
            if mode == "dense":
                fused = dense_scores
            elif mode == "lexical":
                fused = lexical_scores
            else:
                fused = linear_fusion(signals, self.weights(mode))
            rankings.append(Ranking(top(fused, k), {n: s for n, s in signals.items() if s}))
        timings["fuse"] = _ms(started)
        return rankings


def _as_scores(keys: np.ndarray, scores: np.ndarray) -> dict[int, float]:
    return {int(key): float(score) for key, score in zip(keys, scores) if key >= 0}


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
