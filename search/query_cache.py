"""Caching on the query path: query embeddings, and whole result pages.

A result page's key holds the normalised query, every parameter that changes the results,
and the state of what answered it: the store's id, the index generation, the change sequence
the indexes reflect, and a fingerprint of the ranking configuration (settings, encoder, weight
model). Any applied write moves
the sequence on, so a page cached before it can no longer be looked up: a change visible in
search is never hidden by a cached page. Pages expire after ``ttl_s`` too (freshness scores
move with the clock).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from concurrent.futures import Future
from datetime import datetime
from typing import Any

import numpy as np
import orjson

from search.caches import TieredCache
from search.encoders.base import Encoder
from search.engine import Hit, SearchEngine, SearchResult
from search.request import SearchRequest

log = logging.getLogger(__name__)


def _digest(parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class CachedQueryEncoder(Encoder):
    """Query embeddings from the cache; the misses of a call are encoded together."""

    def __init__(self, inner: Encoder, cache: TieredCache, ttl_s: int) -> None:
        self.inner = inner
        self.fingerprint = inner.fingerprint
        self.query_setup = inner.query_setup
        self.device = getattr(inner, "device", "cpu")
        self.cache = cache
        self.ttl_s = ttl_s

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self.inner.encode_documents(texts)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.submit_queries(texts).result()

    def key(self, text: str) -> str:
        return "emb:" + _digest([self.query_identity, text])

    def submit_queries(self, texts: Sequence[str]) -> Future[np.ndarray]:
        """Cached vectors at once; the misses go to the inner encoder together, and the
        future completes (and the cache learns them) when it has encoded them."""
        return self.complete(texts, self.cache.get_many([(self.key(text), self.ttl_s) for text in texts]))

    def complete(self, texts: Sequence[str], cached: Sequence[bytes | None]) -> Future[np.ndarray]:
        """``submit_queries`` after the cache lookup: ``cached`` holds what the cache had for
        each text (a caller may have looked them up together with other keys)."""
        found = {
            i: np.frombuffer(value, dtype=np.float32)
            for i, value in enumerate(cached)
            if value is not None and len(value) == 4 * self.dimension
        }
        missing = [i for i in range(len(texts)) if i not in found]
        result: Future[np.ndarray] = Future()
        if not missing:
            result.set_result(self._stack(found, len(texts)))
            return result

        def learn(encoded: Future[np.ndarray]) -> None:
            try:
                found.update(zip(missing, encoded.result()))
                result.set_result(self._stack(found, len(texts)))
            except Exception as exc:
                result.set_exception(exc)
                return
            for i in missing:  # after the caller has its answer: a cache fault is not its problem
                self.cache.set(
                    self.key(texts[i]), np.ascontiguousarray(found[i], dtype=np.float32).tobytes(), self.ttl_s
                )

        self.inner.submit_queries([texts[i] for i in missing]).add_done_callback(learn)
        return result

    @staticmethod
    def _stack(found: dict[int, np.ndarray], n: int) -> np.ndarray:
        return np.stack([found[i] for i in range(n)]).astype(np.float32, copy=False)


class ResultCache:
    """Result pages in the cache levels, keyed on the request and the engine's state. Pages
    and query embeddings share the levels (``embeddings``, when the query path caches them),
    so that a miss looks both up in one round trip per level."""

    def __init__(self, cache: TieredCache, ttl_s: int) -> None:
        self.cache = cache
        self.ttl_s = ttl_s

    def key(self, engine: SearchEngine, request: SearchRequest) -> str:
        return "page:" + _digest([engine.state, engine.resolved(request).cache_key()])

    def set(self, key: str, result: SearchResult) -> None:
        try:
            value = _encode(result)
        except TypeError as exc:  # e.g. an integer past 64 bits, stored before such were refused
            log.warning("a result page was not cached: %s", exc)
            return
        self.cache.set(key, value, self.ttl_s)

    def lookup(self, engine: SearchEngine, request: SearchRequest) -> tuple[str, SearchResult | None]:
        """The page's key, and the page when it is cached (timed as "cache")."""
        started = time.perf_counter()
        key = self.key(engine, request)
        return key, _cached_page(self.cache.get(key, self.ttl_s), started)

    def search(self, engine: SearchEngine, request: SearchRequest) -> tuple[SearchResult, bool]:
        """The page from the cache, else from the engine (and cached); True when cached."""
        key, cached = self.lookup(engine, request)
        if cached is not None:
            return cached, True
        result = engine.search(request)
        self.set(key, result)
        return result, False

    async def search_async(
        self, engine: SearchEngine, request: SearchRequest, embeddings: CachedQueryEncoder | None = None
    ) -> tuple[SearchResult, bool]:
        """``search`` for an event loop (see ``SearchEngine.search_async``). ``embeddings``: the
        engine's cached query encoder, when it caches in these levels: the page and the query's
        embedding are then looked up together."""
        started = time.perf_counter()
        request = engine.resolved(request)
        key = self.key(engine, request)
        lookups = [(key, self.ttl_s)]
        if request.mode == "lexical" or embeddings is not engine.encoder or embeddings.cache is not self.cache:
            embeddings = None  # only the engine's own encoder, caching in these levels, may answer
        if embeddings is not None:
            lookups.append((embeddings.key(request.query), embeddings.ttl_s))
        found = self.cache.get_many(lookups, first_decides=True)
        if (cached := _cached_page(found[0], started)) is not None:
            return cached, True
        embedding = embeddings.complete([request.query], found[1:]) if embeddings is not None else None
        result = await engine.search_async(request, embedding=embedding)
        self.set(key, result)
        return result, False


def _cached_page(value: bytes | None, started: float) -> SearchResult | None:
    """A page from the cache, timed as "cache" since ``started``."""
    if value is None:
        return None
    page = _decode(value)
    page.timings_ms = {"cache": round((time.perf_counter() - started) * 1000, 3)}
    return page


def _encode(result: SearchResult) -> bytes:
    # orjson writes dataclasses and datetimes itself, many times faster than asdict + json.dumps:
    # this runs once per uncached query, on the event loop.
    return orjson.dumps(result, default=_plain, option=orjson.OPT_SERIALIZE_NUMPY)


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot cache a {type(value).__name__} in a result page")


def _decode(value: bytes) -> SearchResult:
    data = orjson.loads(value)
    hits = []
    for h in data.pop("hits"):
        if h.get("updated_at"):
            h["updated_at"] = datetime.fromisoformat(h["updated_at"])
        hits.append(Hit(**h))
    return SearchResult(hits=hits, **data)
