"""Publishing document-change events, keyed by document id."""

from __future__ import annotations

from collections.abc import Iterable

from kafka import KafkaProducer

from search.config import KafkaSettings
from streaming.schema import DocumentEvent


def make_producer(settings: KafkaSettings) -> KafkaProducer:
    return KafkaProducer(
        bootstrap_servers=settings.bootstrap_servers.split(","),
        acks="all",  # a write is acknowledged once the broker has it durably
        retries=5,
        max_in_flight_requests_per_connection=1,  # retries must not reorder a document's events
        linger_ms=5,
    )


def publish(producer: KafkaProducer, topic: str, events: Iterable[DocumentEvent]) -> int:
    """Send events and wait until the broker has acknowledged all of them."""
    sent = 0
    for event in events:
        producer.send(topic, key=event.id.encode(), value=event.to_json())
        sent += 1
    producer.flush()
    return sent
