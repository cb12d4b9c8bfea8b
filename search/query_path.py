"""The query path's assembly: the cache levels, the query encoder as the engine calls it
(micro-batched, embeddings cached) and each index generation's engine.

One ``QueryPath`` serves a data directory for its lifetime: its cache levels and result pages
are shared by every generation (their keys carry the generation and the encoder), while each
generation gets an engine and a query encoder of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from search.attributes import DocumentAttributes
from search.caches import TieredCache, build_cache
from search.config import Settings
from search.encoders import Encoder
from search.encoders.batching import MicroBatchingEncoder
from search.engine import SearchEngine
from search.lexical import LexicalIndex
from search.query_cache import CachedQueryEncoder, ResultCache
from search.store import Store
from search.vector_index import VectorIndex


@dataclass
class QueryPath:
    cache: TieredCache | None = None  # the levels; None when caching is off
    results: ResultCache | None = None  # result pages in those levels
    embedding_ttl_s: int = 0

    @classmethod
    def build(cls, settings: Settings) -> QueryPath:
        """The configured cache levels under ``settings.data_dir``."""
        cache = build_cache(settings.cache, settings.data_dir)
        results = ResultCache(cache, settings.cache.ttl_s) if cache is not None else None
        return cls(cache, results, settings.cache.embedding_ttl_s)

    def engine(
        self,
        settings: Settings,
        store: Store,
        encoder: Encoder,
        vectors: VectorIndex,
        lexical: LexicalIndex,
        attributes: DocumentAttributes,
        generation: str,
    ) -> tuple[SearchEngine, CachedQueryEncoder | None]:
        """One generation's engine, and its query-embedding cache (None when caching is off).

        Queries always go through the micro-batcher, ``micro_batch_max`` 1 included: its thread
        keeps the encoder off the event loop that submits them. Cached embeddings come first."""
        query_encoder: Encoder = MicroBatchingEncoder(
            encoder, settings.encoder.micro_batch_max, settings.encoder.micro_batch_wait_ms
        )
        embeddings = None
        if self.cache is not None:
            query_encoder = embeddings = CachedQueryEncoder(query_encoder, self.cache, self.embedding_ttl_s)
        engine = SearchEngine(
            settings.search, store, query_encoder, vectors, lexical, attributes, generation=generation
        )
        return engine, embeddings

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()
