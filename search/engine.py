"""The query path: encode, retrieve candidates from the vector and lexical indexes, weigh the
relevance signals for this query, fuse, rerank for freshness and diversity, hydrate.

Modes: ``dense`` and ``lexical`` (one signal), ``hybrid`` (fixed linear weights from config),
``rrf`` (reciprocal rank fusion), ``dynamic`` (weights per query from the learned weight model,
plus category affinity), and ``default`` = the configured one (``dynamic``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import numpy as np

from search.attributes import DocumentAttributes
from search.config import SearchSettings
from search.encoders import Encoder
from search.fusion import linear_fusion, max_scaled, min_max, reciprocal_rank_fusion, top
from search.lexical import LexicalIndex
from search.matching.features import TEMPORAL, QueryFeatures, analyse_query
from search.matching.weights import WeightModel
from search.ranking.rerank import RerankWeights, rerank
from search.request import RankOptions, SearchRequest
from search.snippets import snippet
from search.store import Store
from search.vector_index import VectorIndex

FUSED_MODES = ("hybrid", "rrf", "dynamic")
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
    weights: dict[str, float] = field(default_factory=dict)  # relevance weight per signal
    rerank: dict[str, float] = field(default_factory=dict)  # freshness, diversity, half-life
    features: dict[str, Any] = field(default_factory=dict)  # what the query analyser saw


@dataclass
class Ranking:
    """Keys with final scores, best first, and what produced them."""

    ranked: list[tuple[int, float]]
    signals: dict[str, dict[int, float]]  # raw score per signal per candidate
    weights: dict[str, float] = field(default_factory=dict)
    rerank: RerankWeights | None = None
    features: QueryFeatures | None = None


@dataclass
class Candidates:
    """One query's candidates with every signal's raw scores: the input of fusion."""

    signals: dict[str, dict[int, float]]
    features: QueryFeatures | None  # dynamic mode only
    categories: dict[str, float]  # the query's category distribution (dynamic mode only)


@dataclass
class LexicalCandidates:
    """The half of retrieval that needs no query embedding: the filter's allowed keys, BM25
    hits on body and title, and the query analyser's features. ``search_async`` computes it
    while the query is being encoded."""

    allowed: list[int] | None
    lexical: list[dict[int, float]]
    title: list[dict[int, float]]
    features: list[QueryFeatures | None]
    timings: dict[str, float] = field(default_factory=dict)


class SearchEngine:
    def __init__(
        self,
        settings: SearchSettings,
        store: Store,
        encoder: Encoder,
        vectors: VectorIndex,
        lexical: LexicalIndex,
        attributes: DocumentAttributes | None = None,
        weight_model: WeightModel | None = None,
        generation: str = "",
    ) -> None:
        self.settings = settings
        self.generation = generation  # the index generation's name (part of cache keys)
        self.store = store
        self.encoder = encoder
        self.vectors = vectors
        self.lexical = lexical
        self.attributes = attributes or DocumentAttributes(encoder.dimension)
        self.weight_model = weight_model or WeightModel.load(settings.weight_model_path())
        self._ranker: ThreadPoolExecutor | None = None  # search_async's ranking thread, made on first use
        # Everything fixed at start-up that shapes a ranking (result-cache keys hold it): a
        # refitted weight model at the same path must not be answered by pages of the old one.
        self.ranking_fingerprint = hashlib.sha256(
            json.dumps(
                [settings.model_dump(mode="json"), encoder.query_identity, self.weight_model.to_json()],
                sort_keys=True,
            ).encode()
        ).hexdigest()

    @property
    def state(self) -> tuple[str, str, int, int, str]:
        """What a cached answer depends on besides the request: the store, the index generation,
        the change sequence each index reflects (any applied write moves it on) and the ranking
        configuration."""
        return (self.store.store_id, self.generation, self.vectors.seq, self.lexical.seq, self.ranking_fingerprint)

    def resolved(self, request: SearchRequest) -> SearchRequest:
        """The request with mode "default" replaced by the configured mode."""
        if request.mode != "default":
            return request
        return replace(request, mode=self.settings.default_mode)

    def search(
        self,
        request: SearchRequest,
        query_vector: np.ndarray | None = None,
        lexical_half: LexicalCandidates | None = None,
    ) -> SearchResult:
        """One page of results. ``query_vector``: the query's embedding when the caller has
        it already (the async path encodes without blocking); else it is encoded here.
        ``lexical_half``: the query's lexical candidates when the caller has them already."""
        request = self.resolved(request)
        timings: dict[str, float] = {}
        vectors = None if query_vector is None else query_vector.reshape(1, -1)
        ranking = self.rank_many([request], timings, vectors, lexical_half)[0]
        page = ranking.ranked[request.offset : request.depth]
        started = time.perf_counter()
        docs = self.store.get_by_keys([key for key, _ in page])
        terms = set(self.lexical.query_terms(request.query))
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
        rerank_info = {}
        if ranking.rerank is not None:
            rerank_info = {
                "freshness": ranking.rerank.freshness,
                "diversity": ranking.rerank.diversity,
                "half_life_days": ranking.rerank.half_life_days,
            }
        features = ranking.features.to_dict() if ranking.features else {}
        return SearchResult(request.query, request.mode, hits, timings, ranking.weights, rerank_info, features)

    async def search_async(self, request: SearchRequest, embedding: Future[np.ndarray] | None = None) -> SearchResult:
        """``search`` for an event loop, as a pipeline of three threads. The ranking thread
        retrieves the lexical candidates while the encoder embeds the query (a micro-batch of
        concurrent queries); the encoder's completion hands the query straight back to the
        ranking thread for the dense half, fusion and reranking, and the loop only awaits the
        page. One ranking thread, since ranking is mostly Python and more would only contend
        for the GIL; the loop stays free for HTTP, cached answers and health checks even when
        the store is slow. ``embedding``: the query's embedding when the caller has asked for
        it already; else it is asked of the encoder here."""
        request = self.resolved(request)
        ranker = self._ranking_thread()
        depth = self.depth(request, self.rerank_weights(request).active)
        # FIFO on one thread: the lexical half is done before the rest of the query is ranked.
        lexical_half = ranker.submit(self.lexical_candidates, [request], depth)
        page: Future[SearchResult] = Future()

        def rank(vector: np.ndarray | None, encode_ms: float | None) -> None:
            if not page.set_running_or_notify_cancel():
                return  # the client went away while the query was being encoded
            try:
                result = self.search(request, vector, lexical_half.result())
            except BaseException as exc:
                page.set_exception(exc)
                return
            if encode_ms is not None:
                result.timings_ms = {"encode": encode_ms, **result.timings_ms}
            page.set_result(result)

        def encoded(vectors: Future[np.ndarray]) -> None:  # on the encoder's thread
            try:
                ranker.submit(rank, vectors.result()[0], _ms(started))
            except BaseException as exc:  # the encoder failed, or the engine was closed
                if page.set_running_or_notify_cancel():
                    page.set_exception(exc)

        if request.mode == "lexical":
            ranker.submit(rank, None, None)
        else:
            started = time.perf_counter()
            (embedding or self.encoder.submit_queries([request.query])).add_done_callback(encoded)
        return await asyncio.wrap_future(page)

    def _ranking_thread(self) -> ThreadPoolExecutor:
        if self._ranker is None:
            self._ranker = ThreadPoolExecutor(1, thread_name_prefix="ranker")
        return self._ranker

    def close(self) -> None:
        """Let the ranking thread end once it has finished what it was given."""
        if self._ranker is not None:
            self._ranker.shutdown(wait=False)

    # -- ranking ---------------------------------------------------------------------------

    def rank_many(
        self,
        requests: Sequence[SearchRequest],
        timings: dict[str, float] | None = None,
        vectors: np.ndarray | None = None,
        lexical_half: LexicalCandidates | None = None,
    ) -> list[Ranking]:
        """Rank keys for several requests that differ only in their query, each down to its
        ``depth``, at once (one batched encoder call, unless ``vectors`` holds the queries'
        embeddings already; ``lexical_half``: their lexical candidates, when retrieved
        already)."""
        requests = [self.resolved(r) for r in requests]
        first = requests[0]
        if not all(first.same_but_query(r) for r in requests[1:]):
            raise ValueError("requests ranked together must differ only in their query")
        mode, k = first.mode, first.depth
        timings = timings if timings is not None else {}
        reranking = [self.rerank_weights(r) for r in requests]
        depth = self.depth(first, any(r.active for r in reranking))
        candidates = self.candidates(requests, depth, timings, vectors, lexical_half)
        started = time.perf_counter()
        rankings = []
        for found, rerank_weights in zip(candidates, reranking):
            weights = self.relevance_weights(mode, found, first.options)
            signals = dict(found.signals)
            if "category" in weights:
                signals["category"] = self._category_signal(found)
            if mode == "rrf":
                orders = [[key for key, _ in top(s, len(s))] for s in signals.values() if s]
                fused = reciprocal_rank_fusion(orders, self.settings.rrf_k)
            elif mode in FUSED_MODES:
                # hybrid is the classic min-max fusion; the weight model was fitted on
                # max-scaled signals (better across collections, see search/matching).
                fused = linear_fusion(signals, weights, max_scaled if mode == "dynamic" else min_max)
            else:
                fused = signals[mode]
            ranked = top(fused, depth if rerank_weights.active else k)
            if rerank_weights.active:
                ranked, objectives = self._rerank(ranked, rerank_weights, k)
                signals.update(objectives)
            rankings.append(
                Ranking(
                    ranked[:k],
                    {n: s for n, s in signals.items() if s},
                    weights,
                    rerank_weights if rerank_weights.active else None,
                    found.features,
                )
            )
        timings["rank"] = _ms(started)
        return rankings

    def depth(self, request: SearchRequest, reranked: bool) -> int:
        """How many candidates each signal retrieves for a request: the configured pool when
        they are fused or reranked, else just what the page needs."""
        fused = request.mode in FUSED_MODES or reranked
        return max(request.depth, self.settings.candidates) if fused else request.depth

    def lexical_candidates(self, requests: Sequence[SearchRequest], depth: int) -> LexicalCandidates:
        """The filter's allowed keys, and each query's BM25 hits and features as the mode needs
        (``requests`` differ only in their query, and their mode is resolved)."""
        mode, filters = requests[0].mode, requests[0].filters
        queries = [r.query for r in requests]
        timings: dict[str, float] = {}
        allowed = None
        if filters:
            started = time.perf_counter()
            allowed = self.store.keys_matching(filters)
            timings["filter"] = _ms(started)
        lexical: list[dict[int, float]] = [{} for _ in queries]
        title: list[dict[int, float]] = [{} for _ in queries]
        if mode != "dense":
            started = time.perf_counter()
            lexical = [dict(self.lexical.search(q, depth, allowed=allowed)) for q in queries]
            if mode == "dynamic":
                title = [dict(self.lexical.search(q, depth, "title", allowed)) for q in queries]
            timings["lexical"] = _ms(started)
        features: list[QueryFeatures | None] = [None] * len(queries)
        if mode == "dynamic":
            documents = self.lexical.count
            features = [
                analyse_query(q, self.lexical.query_terms(q), self.lexical.document_frequency, documents)
                for q in queries
            ]
        return LexicalCandidates(allowed, lexical, title, features, timings)

    def candidates(
        self,
        requests: Sequence[SearchRequest],
        depth: int,
        timings: dict[str, float] | None = None,
        vectors: np.ndarray | None = None,
        lexical_half: LexicalCandidates | None = None,
    ) -> list[Candidates]:
        """Each request's candidates from every signal its mode uses, with raw scores
        (``requests`` differ only in their query; ``lexical_half``: retrieved already for
        them at this depth)."""
        requests = [self.resolved(r) for r in requests]
        mode, nprobe = requests[0].mode, requests[0].nprobe
        timings = timings if timings is not None else {}
        lexical_half = lexical_half or self.lexical_candidates(requests, depth)
        timings.update(lexical_half.timings)
        allowed, lexical, title = lexical_half.allowed, lexical_half.lexical, lexical_half.title
        n = len(requests)
        dense: list[dict[int, float]] = [{} for _ in requests]
        if mode == "lexical":
            vectors = None
        else:
            if vectors is None:
                started = time.perf_counter()
                vectors = self.encoder.encode_queries([r.query for r in requests])
                timings["encode"] = _ms(started)
            started = time.perf_counter()
            scores, keys = self.vectors.search(vectors, depth, nprobe=nprobe, allowed=allowed)
            timings["vector"] = _ms(started)
            dense = [_as_scores(keys[i], scores[i]) for i in range(n)]
        categories: list[dict[str, float]] = [{} for _ in requests]
        if mode == "dynamic" and vectors is not None:
            started = time.perf_counter()
            for i in range(n):
                self._complete_dense(dense[i], vectors[i], lexical[i].keys() | title[i].keys())
            timings["dense_fill"] = _ms(started)
            categories = [self.category_distribution(v) for v in vectors]
        return [
            Candidates(
                signals={"dense": dense[i], "lexical": lexical[i], "title": title[i]},
                features=lexical_half.features[i],
                categories=categories[i],
            )
            for i in range(n)
        ]

    def _complete_dense(self, dense: dict[int, float], query: np.ndarray, keys: set[int]) -> None:
        """Exact cosine for lexical-only candidates, so fusion compares like with like
        instead of scoring a document the vector search did not reach as the worst."""
        missing = [key for key in keys if key not in dense]
        if not missing:
            return
        stored, found = self.vectors.reconstruct(missing)
        scores = stored @ query
        for key, score, ok in zip(missing, scores, found):
            if ok:
                dense[key] = float(score)

    def relevance_weights(self, mode: str, found: Candidates, options: RankOptions) -> dict[str, float]:
        if mode in ("dense", "lexical"):
            return {mode: 1.0}
        if mode == "rrf":  # ranks, not scores: per-request weights do not apply
            return {"dense": 1.0, "lexical": 1.0}
        if options.weights is not None:
            return dict(options.weights)
        if mode == "hybrid":
            w = self.settings.hybrid_dense_weight
            return {"dense": w, "lexical": 1 - w}
        assert found.features is not None  # analysed in dynamic mode, the only one left
        weights = self.weight_model.weights(found.features.vector())
        affinity = self.category_weight(found.categories)
        if affinity > 0:
            weights = {s: w * (1 - affinity) for s, w in weights.items()}
            weights["category"] = affinity
        return weights

    # -- category affinity -----------------------------------------------------------------

    def category_distribution(self, query_vector: np.ndarray | None) -> dict[str, float]:
        """The query's soft distribution over document categories: a softmax of its cosine to
        each category centroid (temperature from config)."""
        names, centroids = self.attributes.centroids()
        if query_vector is None or len(names) < 2:
            return {}
        logits = centroids @ query_vector / self.settings.category_temperature
        p = np.exp(logits - logits.max())
        p /= p.sum()
        return {name: float(v) for name, v in zip(names, p)}

    def category_weight(self, distribution: dict[str, float]) -> float:
        """The configured weight scaled by how focused the query's category distribution is
        (1 - normalised entropy): a query about no category in particular gets none."""
        p = np.array(list(distribution.values()))
        if len(p) < 2 or self.settings.category_weight == 0:
            return 0.0
        entropy = -float(np.sum(p * np.log(np.maximum(p, 1e-12))))
        focus = max(0.0, 1 - entropy / float(np.log(len(p))))
        return round(self.settings.category_weight * focus, 6)

    def _category_signal(self, found: Candidates) -> dict[int, float]:
        """Each candidate scores the query's probability of its category."""
        keys = list(set().union(*(s.keys() for s in found.signals.values())))
        return {
            key: found.categories.get(a.category, 0.0) if a and a.category else 0.0
            for key, a in zip(keys, self.attributes.get(keys))
        }

    # -- reranking -------------------------------------------------------------------------

    def rerank_weights(self, request: SearchRequest) -> RerankWeights:
        s, options = self.settings, request.options
        freshness = options.freshness
        if freshness is None:
            freshness = s.temporal_freshness_weight if TEMPORAL.search(request.query) else s.freshness_weight
        diversity = s.diversity if options.diversity is None else options.diversity
        half_life = s.half_life_days if options.half_life_days is None else options.half_life_days
        return RerankWeights(freshness, diversity, half_life)

    def _rerank(
        self, ranked: list[tuple[int, float]], weights: RerankWeights, picks: int
    ) -> tuple[list[tuple[int, float]], dict[str, dict[int, float]]]:
        """The reranked order and each document's freshness and redundancy (for explain)."""
        pool = ranked[: self.settings.rerank_depth]
        keys = [key for key, _ in pool]
        timestamps = [a.timestamp if a else None for a in self.attributes.get(keys)]
        if weights.diversity == 0 and all(t is None for t in timestamps):
            return ranked, {}  # no document has an age: nothing to rerank by
        vectors = self.vectors.reconstruct(keys)[0] if weights.diversity > 0 else None
        result = rerank(keys, [s for _, s in pool], weights, timestamps, vectors, time.time(), picks)
        objectives = {"freshness": result.freshness}
        if weights.diversity > 0:
            objectives["redundancy"] = result.redundancy
        return list(zip(result.keys, result.scores)) + ranked[len(pool) :], objectives


def _as_scores(keys: np.ndarray, scores: np.ndarray) -> dict[int, float]:
    return {int(key): float(score) for key, score in zip(keys, scores) if key >= 0}


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
