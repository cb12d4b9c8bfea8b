"""The serving process's assembly: the collection with its query path (caches, encoder,
engine), API keys, reindex jobs, metrics and the response pages of the fast lane."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from api.front import ResponsePages
from api.jobs import ReindexJobs
from api.keys import KeyStore
from api.metrics import Metrics
from indexer.collection import Collection, open_collection
from search.config import Settings
from streaming.consumer import DocumentConsumer


@dataclass
class Services:
    settings: Settings
    collection: Collection
    keys: KeyStore
    jobs: ReindexJobs
    metrics: Metrics
    pages: ResponsePages | None = None  # finished GET /search bodies for the front (api/front.py)
    consumer: DocumentConsumer | None = None
    primary_dir: Path | None = None  # set on a replica: the data directory its primary serves


def open_services(settings: Settings) -> Services:
    """Open the collection under ``settings.data_dir`` (caught up) and what serves it."""
    return services_for(settings, open_collection(settings))


def services_for(settings: Settings, collection: Collection, primary_dir: Path | None = None) -> Services:
    """What serves an open ``collection``; on a replica, the keys are its primary's."""
    metrics = Metrics()
    if collection.cache is not None:
        collection.cache.observer = metrics.observe_cache
    cache = settings.cache
    pages = ResponsePages(cache.memory_entries, cache.ttl_s) if cache.enabled and cache.memory_entries else None
    keys = KeyStore(primary_dir or settings.data_dir)  # one set of keys for every worker
    return Services(settings, collection, keys, ReindexJobs(collection), metrics, pages, primary_dir=primary_dir)
