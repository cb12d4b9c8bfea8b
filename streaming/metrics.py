"""Consumer metrics (registered on the API's registry when the consumer runs in `dss serve`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class StreamMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.events = Counter(
            "dss_consumer_events_total",
            "Events by outcome: applied, unchanged (duplicate), stale (older version), dead_lettered.",
            ["outcome"],
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "dss_consumer_batch_seconds",
            "Time to apply and commit one micro-batch.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.lag = Gauge(
            "dss_consumer_lag", "Records behind the end of each partition.", ["partition"], registry=self.registry
        )
        self.restarts = Counter(
            "dss_consumer_restarts_total",
            "Kafka clients replaced because records waited on the broker and none arrived.",
            registry=self.registry,
        )
        self.up = Gauge("dss_consumer_up", "1 while the consumer is connected and applying.", registry=self.registry)
