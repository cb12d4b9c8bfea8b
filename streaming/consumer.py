"""The Kafka consumer: applies document-change events through the one write path.

At-least-once delivery made exactly-once in effect: a micro-batch is polled, bad records go
to the dead-letter topic (acknowledged by the broker first), the rest are written to the
store in one transaction (one at a time if the store refuses a value in it; what it refuses
is dead-lettered too) and the indexes are updated, and only then are the offsets
committed. A crash anywhere before the commit redelivers the batch, and the version rules
turn every redelivered or reordered event into a no-op.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, OffsetAndMetadata
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.structs import TopicPartition

from indexer.collection import Collection
from indexer.versioning import Outcome
from search.config import Settings
from streaming.metrics import StreamMetrics
from streaming.producer import make_producer
from streaming.schema import BadEvent, DocumentEvent, parse_event

if TYPE_CHECKING:  # kafka-python's record type lives in an internal module
    from kafka.consumer.fetcher import ConsumerRecord

log = logging.getLogger(__name__)
COMMIT_TIMEOUT_MS = 15_000  # past this the batch stays uncommitted and is redelivered later


@dataclass
class ConsumerStatus:
    state: str = "starting"  # starting | ok | degraded
    reason: str = ""
    batches: int = 0
    last_batch_at: datetime | None = None
    lag: dict[int, int] = field(default_factory=dict)


class DocumentConsumer:
    def __init__(self, settings: Settings, collection: Collection, metrics: StreamMetrics | None = None) -> None:
        self.settings = settings
        self.kafka = settings.kafka
        self.collection = collection
        self.metrics = metrics or StreamMetrics()
        self.status = ConsumerStatus()
        self._consumer: KafkaConsumer | None = None
        self._watcher: KafkaConsumer | None = None  # a group-less client that reads end offsets
        self._producer: KafkaProducer | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lag_checked = 0.0
        self._probed_at = 0.0
        self._reachable = True
        self._rewind_pending = False
        self._received_at = 0.0  # when records last arrived (or the client was made)
        self._stall_checked = 0.0

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="dss-consumer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        """Consume until stopped; never raises for broker trouble, retries with back-off.

        One consumer (one group member) lives for the whole run: kafka-python reconnects by
        itself, and a fresh member would make the group wait for the lost one to time out.
        Only a client that stalls (records waiting, none arriving) is replaced.
        After an outage or a failed batch, positions go back to the committed offsets, so an
        uncommitted batch is delivered again (and resolved by version).
        """
        backoff = self.kafka.retry_min_ms / 1000
        while not self._stop.is_set():
            try:
                self._connect()
                if self._rewind_pending and self._brokers_reachable():
                    self._rewind_to_committed()
                if self.process_batch():
                    self._healthy()
                elif self._brokers_reachable():
                    if stall := self._stall():
                        self._replace_client(stall)
                    else:
                        self._healthy()
                else:
                    self._degraded("broker unreachable: " + self.kafka.bootstrap_servers)
                    self._rewind_pending = True
                backoff = self.kafka.retry_min_ms / 1000
            except Exception as exc:
                if isinstance(exc, KafkaError):
                    self._degraded(f"broker: {type(exc).__name__}: {exc}")
                else:  # store or index trouble: the batch stays uncommitted and comes again
                    log.exception("applying a batch failed; it will be redelivered")
                    self._degraded(f"apply: {type(exc).__name__}: {exc}")
                self._rewind_pending = True
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.kafka.retry_max_ms / 1000)
        self._disconnect()

    def _rewind_to_committed(self) -> None:
        assert self._consumer is not None
        if self.kafka.create_topics:
            self._ensure_topics(self.kafka.bootstrap_servers.split(","))  # an emptied broker lost them
        for tp in self._consumer.assignment():
            committed = self._consumer.committed(tp, timeout_ms=5000)
            if committed is None:
                self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, committed)
        self._rewind_pending = False

    def _stall(self) -> str | None:
        """Why the client looks stuck: records wait past its position and none arrived lately.

        kafka-python recovers from broker trouble by itself, yet once (3.0.12, in a test that
        restarts the broker) it reported healthy and never fetched again. The broker's end
        offsets, asked for at most every few seconds and only after stall_timeout without a
        record, tell such a stuck client from a quiet topic. They come through a client of
        their own: a stuck client's connections cannot vouch for the broker, and when that
        client cannot reach the broker either, the trouble is the broker's, which a new
        member would not mend.
        """
        assert self._consumer is not None
        now = time.monotonic()
        timeout = self.kafka.stall_timeout_ms / 1000
        if now - self._received_at < timeout or now - self._stall_checked < min(5.0, timeout / 2):
            return None
        self._stall_checked = now
        assignment = list(self._consumer.assignment())
        if not assignment:
            return None  # rejoining, or more members than partitions
        try:
            positions = {tp: self._consumer.position(tp, timeout_ms=1000) for tp in assignment}
        except KafkaError:
            return None  # still resolving its positions: the client is busy, not stuck
        try:
            if self._watcher is None:
                self._watcher = KafkaConsumer(
                    bootstrap_servers=self.kafka.bootstrap_servers.split(","), request_timeout_ms=10_000
                )
            ends = self._watcher.end_offsets(assignment, timeout_ms=5000)
        except KafkaError as exc:  # broker trouble: not the client's; start the watcher afresh next time
            log.debug("stall check failed: %s", exc)
            self._close_watcher()
            return None
        waiting = sum(max(0, ends[tp] - pos) for tp, pos in positions.items() if pos is not None and tp in ends)
        if not waiting:
            return None
        return f"{waiting} records waiting, none received for {now - self._received_at:.0f} s"

    def _replace_client(self, stall: str) -> None:
        """A fresh client and group member, resuming from the committed offsets."""
        log.warning("consumer stalled; replacing the Kafka client", extra={"reason": stall})
        self._degraded("stalled: " + stall)
        self.metrics.restarts.inc()
        self._disconnect()
        self._rewind_pending = False  # a new member starts from the committed offsets anyway

    def _brokers_reachable(self) -> bool:
        """An idle poll cannot tell a quiet topic from a dead broker: probe, at most every 2 s."""
        now = time.monotonic()
        if now - self._probed_at < 2.0:
            return self._reachable
        self._probed_at = now
        self._reachable = False
        for server in self.kafka.bootstrap_servers.split(","):
            host, _, port = server.strip().rpartition(":")
            try:
                socket.create_connection((host.strip("[]"), int(port)), timeout=1).close()
                self._reachable = True
                break
            except (OSError, ValueError):
                continue
        return self._reachable

    def _ensure_topics(self, servers: list[str]) -> None:
        admin = KafkaAdminClient(bootstrap_servers=servers, request_timeout_ms=10_000)
        try:
            existing = set(admin.list_topics())
            missing = [t for t in (self.kafka.topic, self.kafka.dead_letter_topic) if t not in existing]
            if missing:
                admin.create_topics(
                    [NewTopic(t, num_partitions=self.kafka.partitions, replication_factor=1) for t in missing]
                )
        except TopicAlreadyExistsError:
            pass  # another consumer created it first
        finally:
            admin.close()

    def _connect(self) -> None:
        if self._consumer is not None:
            return
        servers = self.kafka.bootstrap_servers.split(",")
        if self.kafka.create_topics:
            self._ensure_topics(servers)
        self._consumer = KafkaConsumer(
            self.kafka.topic,
            bootstrap_servers=servers,
            group_id=self.kafka.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=self.kafka.session_timeout_ms,
            heartbeat_interval_ms=self.kafka.heartbeat_interval_ms,
            max_partition_fetch_bytes=max(self.kafka.max_event_bytes * 2, 1_048_576),
            fetch_max_bytes=max(self.kafka.max_event_bytes * 4, 52_428_800),
            reconnect_backoff_max_ms=self.kafka.retry_max_ms,
            max_poll_interval_ms=self.kafka.max_poll_interval_ms,
            metadata_max_age_ms=10_000,  # notice new partitions (and a re-created topic) within seconds
            # The broker may hold a fetch this long waiting for data: it bounds freshness.
            fetch_max_wait_ms=min(50, max(self.kafka.max_wait_ms, 1)),
        )
        self._producer = make_producer(self.kafka)
        self._received_at = time.monotonic()
        log.info("consumer connected", extra={"topic": self.kafka.topic, "group": self.kafka.group_id})

    def _disconnect(self) -> None:
        # Bounded: kafka-python's defaults would wait minutes for a dead broker. Nothing is lost
        # by giving up; offsets are only ever committed after a batch was applied.
        if self._consumer is not None:
            _close_quietly(self._consumer.close, autocommit=False, timeout_ms=5000)
        if self._producer is not None:
            _close_quietly(self._producer.close, timeout=5)
        self._consumer = self._producer = None
        self._close_watcher()

    def _close_watcher(self) -> None:
        if self._watcher is not None:
            _close_quietly(self._watcher.close, autocommit=False, timeout_ms=2000)
        self._watcher = None

    def _healthy(self) -> None:
        if self.status.state != "ok":
            log.info("consumer healthy")
        self.status.state, self.status.reason = "ok", ""
        self.metrics.up.set(1)

    def _degraded(self, reason: str) -> None:
        if self.status.reason != reason:
            log.warning("consumer degraded", extra={"reason": reason})
        self.status.state, self.status.reason = "degraded", reason
        self.metrics.up.set(0)

    # -- one micro-batch --------------------------------------------------------------------

    def poll_batch(self) -> list[ConsumerRecord]:
        """Up to max_batch records, or what arrived within max_wait_ms of the first."""
        assert self._consumer is not None
        records: list[ConsumerRecord] = []
        deadline: float | None = None
        while len(records) < self.kafka.max_batch and not self._stop.is_set():
            remaining_ms = 500 if deadline is None else int(max(0.0, deadline - time.monotonic()) * 1000)
            polled = self._consumer.poll(timeout_ms=remaining_ms, max_records=self.kafka.max_batch - len(records))
            for partition_records in polled.values():
                records.extend(partition_records)
            if deadline is None:
                if not records:
                    return records  # idle: let the caller check for a stop and come back
                self._received_at = time.monotonic()
                deadline = time.monotonic() + self.kafka.max_wait_ms / 1000
            elif time.monotonic() >= deadline:
                break
        return records

    def process_batch(self) -> bool:
        """Poll, apply and commit one micro-batch; False when nothing arrived."""
        records = self.poll_batch()
        self._update_lag()
        if not records:
            return False
        started = time.perf_counter()
        events: list[tuple[ConsumerRecord, DocumentEvent]] = []
        dead: list[tuple[ConsumerRecord, str]] = []
        for record in records:
            try:
                event = parse_event(
                    record.key, record.value, self.kafka.max_event_bytes, self.settings.ingest.max_text_chars
                )
            except BadEvent as exc:
                dead.append((record, str(exc)))
                continue
            events.append((record, event))
        if dead:
            self._dead_letter(dead)
        if events:
            # An event the store refuses is dead-lettered too: redelivering it would only
            # hold up its partition. A store that is down fails the batch, which comes again.
            report, refused = self.collection.write_skipping_refused([event.to_write() for _, event in events])
            if refused:
                self._dead_letter([(events[position][0], reason) for position, reason in refused.items()])
            for outcome in Outcome:
                if n := report.count(outcome):
                    self.metrics.events.labels(outcome.value).inc(n)
        self._commit(records)
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        self.status.batches += 1
        self.status.last_batch_at = datetime.now(UTC)
        return True

    def _dead_letter(self, dead: list[tuple[ConsumerRecord, str]]) -> None:
        assert self._producer is not None
        for record, reason in dead:
            payload = record.value.decode("utf-8", "replace") if record.value is not None else None
            letter = {
                "error": reason,
                "payload": payload,
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "timestamp": record.timestamp,
                "group": self.kafka.group_id,
            }
            self._producer.send(self.kafka.dead_letter_topic, key=record.key, value=json.dumps(letter).encode())
            log.warning(
                "event dead-lettered", extra={"offset": record.offset, "partition": record.partition, "reason": reason}
            )
        self._producer.flush()  # acknowledged before the offsets move past them
        self.metrics.events.labels("dead_lettered").inc(len(dead))

    def _commit(self, records: list[ConsumerRecord]) -> None:
        assert self._consumer is not None
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            if tp not in offsets or offsets[tp].offset <= record.offset:
                offsets[tp] = OffsetAndMetadata(record.offset + 1, "", -1)
        self._consumer.commit(offsets, timeout_ms=COMMIT_TIMEOUT_MS)

    def _update_lag(self) -> None:
        """Lag from the high-water marks that fetch responses carry: no extra round trip."""
        assert self._consumer is not None
        if time.monotonic() - self._lag_checked < 1.0:
            return
        self._lag_checked = time.monotonic()
        for tp in self._consumer.assignment():
            highwater = self._consumer.highwater(tp)
            try:
                position = self._consumer.position(tp, timeout_ms=100)
            except KafkaError:
                continue
            if highwater is None or position is None:
                continue
            lag = max(0, highwater - position)
            self.status.lag[tp.partition] = lag
            self.metrics.lag.labels(str(tp.partition)).set(lag)


def _close_quietly(close: Callable[..., object], **kwargs: object) -> None:
    with contextlib.suppress(Exception):  # closing a client of a dead broker may fail; it is gone anyway
        close(**kwargs)
