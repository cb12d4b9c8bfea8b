"""Prometheus metrics, one registry per app (so tests can run several apps side by side).

With several serving processes (api/workers.py) every process writes its samples to files
under PROMETHEUS_MULTIPROC_DIR (prometheus_client's multiprocess mode, chosen when that
variable is set before the library is imported) and /metrics, on whichever process answers,
exports the sum over all of them: counters and histograms add up, and the gauges set when
scraped take the scraping process's value.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector


def multiprocess_metrics() -> bool:
    """Whether samples go to PROMETHEUS_MULTIPROC_DIR (set by `dss serve --workers N`)."""
    return "PROMETHEUS_MULTIPROC_DIR" in os.environ


LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Histogram(
            "dss_http_request_duration_seconds",
            "HTTP request latency by route and status.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.search_stage = Histogram(
            "dss_search_stage_seconds",
            "Search latency by stage (filter, encode, vector, lexical, dense_fill, rank, hydrate).",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.cache_requests = Counter(
            "dss_cache_requests_total",
            "Cache lookups and writes by level (memory, redis, sqlite) and outcome (hit, miss, set, error).",
            ["level", "outcome"],
            registry=self.registry,
        )
        self.cache_seconds = Histogram(
            "dss_cache_seconds",
            "Cache operation latency by level.",
            ["level"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        # Set when scraped ("livemostrecent": with several processes, the scraping one's value).
        self.cache_hit_ratio = Gauge(
            "dss_cache_hit_ratio",
            "Hits / lookups since start, by level.",
            ["level"],
            registry=self.registry,
            multiprocess_mode="livemostrecent",
        )
        self.documents = Gauge(
            "dss_documents",
            "Documents in the store.",
            ["state"],
            registry=self.registry,
            multiprocess_mode="livemostrecent",
        )
        self.index_size = Gauge(
            "dss_index_documents",
            "Documents in each index.",
            ["index"],
            registry=self.registry,
            multiprocess_mode="livemostrecent",
        )
        self.writes = Counter(
            "dss_document_writes_total", "Document writes by outcome.", ["outcome"], registry=self.registry
        )
        # Jobs run on the primary: with several processes, the highest value any has set.
        self.reindex_jobs = Gauge(
            "dss_reindex_jobs", "Reindex jobs by state.", ["state"], registry=self.registry, multiprocess_mode="livemax"
        )
        self.reindex_progress = Gauge(
            "dss_reindex_progress_ratio",
            "Progress of the running reindex job (0-1).",
            registry=self.registry,
            multiprocess_mode="livemax",
        )
        self._children: dict[tuple[Counter | Histogram, tuple[str, ...]], Any] = {}

    def _labelled(self, metric: Counter | Histogram, *labels: str) -> Any:
        # Several calls per request: the labelled children are kept, not looked up each time
        # (labels() takes a lock and builds a key, on the query path's GIL time).
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def observe_request(self, method: str, route: str, status: str, seconds: float) -> None:
        self._labelled(self.requests, method, route, status).observe(seconds)

    def observe_stage(self, stage: str, seconds: float) -> None:
        self._labelled(self.search_stage, stage).observe(seconds)

    def observe_cache(self, level: str, outcome: str, seconds: float) -> None:
        self._labelled(self.cache_requests, level, outcome).inc()
        self._labelled(self.cache_seconds, level).observe(seconds)

    def export(self) -> bytes:
        """The exposition text: this process's registry, or every serving process's samples."""
        return generate_latest(self._exported())

    def _exported(self) -> CollectorRegistry:
        if not multiprocess_metrics():
            return self.registry
        combined = CollectorRegistry()
        MultiProcessCollector(combined)
        return combined

    def update_cache_ratios(self) -> None:
        counts: dict[tuple[str, str], float] = {}
        # Every process's counts when there are several; else just this counter (not the registry).
        metrics = self._exported().collect() if multiprocess_metrics() else self.cache_requests.collect()
        for metric in metrics:
            if metric.name != "dss_cache_requests":
                continue
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    counts[(sample.labels["level"], sample.labels["outcome"])] = sample.value
        for level in {level for level, _ in counts}:
            lookups = counts.get((level, "hit"), 0) + counts.get((level, "miss"), 0)
            if lookups:
                self.cache_hit_ratio.labels(level).set(counts.get((level, "hit"), 0) / lookups)
