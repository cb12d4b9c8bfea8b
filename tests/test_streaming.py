"""Kafka streaming against a real broker: produce -> consume -> search."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import faiss
import numpy as np
import pytest
from fastapi.testclient import TestClient
from kafka import KafkaConsumer, KafkaProducer

from api.app import create_app
from indexer.collection import open_collection
from indexer.versioning import Outcome, VersionState, decide
from search.config import Settings, load_settings
from streaming.consumer import DocumentConsumer
from streaming.producer import make_producer, publish
from streaming.schema import BadEvent, DocumentEvent, parse_event
from tests.broker import Broker
from tests.conftest import HashEncoder, refuse_writes_of


@pytest.fixture(scope="module")
def broker() -> Iterator[Broker]:
    b = Broker().start()
    yield b
    b.stop()


def _settings(tmp_path: Path, bootstrap: str, **kafka) -> Settings:
    name = uuid.uuid4().hex[:8]
    return load_settings(
        data_dir=tmp_path / "data",
        api={"auth": False},
        kafka={
            "bootstrap_servers": bootstrap,
            "topic": f"docs-{name}",
            "dead_letter_topic": f"docs-{name}-dlq",
            "group_id": f"group-{name}",
            "max_wait_ms": 50,
            "retry_max_ms": 1000,
            "max_poll_interval_ms": 15_000,
            **kafka,
        },
    )


def _event(id: str, version: int, op: str = "upsert", text: str = "") -> DocumentEvent:
    return DocumentEvent.model_validate({"schema": 1, "op": op, "id": id, "version": version, "text": text})


def _wait(condition: Callable[[], bool], timeout: float = 60, what: str = "condition") -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@contextmanager
def _consuming(settings: Settings, kind: type[DocumentConsumer] = DocumentConsumer) -> Iterator[tuple]:
    """A running consumer of ``kind`` over a fresh collection, and a producer to feed it."""
    collection = open_collection(settings, encoder=HashEncoder())
    consumer = kind(settings, collection)
    consumer.start()
    producer = make_producer(settings.kafka)
    try:
        yield collection, consumer, producer
    finally:
        consumer.stop()
        producer.close()
        collection.close()


def test_event_schema() -> None:
    good = _event("a", 3, text="x").to_json()
    assert parse_event(b"a", good, 10_000, 100).version == 3
    for key, value, reason in [
        (b"a", b"{oops", "invalid JSON"),
        (b"a", b"[1]", "JSON object"),
        (b"a", json.dumps({"schema": 1, "op": "upsert", "id": "a"}).encode(), "version"),
        (b"a", json.dumps({"schema": 1, "op": "upsert", "id": "a", "version": "3"}).encode(), "version"),
        (b"a", json.dumps({"schema": 2, "op": "upsert", "id": "a", "version": 3}).encode(), "schema"),
        (b"a", json.dumps({"schema": 1, "op": "merge", "id": "a", "version": 3}).encode(), "op"),
        (
            b"a",
            json.dumps({"schema": 1, "op": "upsert", "id": "a", "version": 3, "text": "y" * 200}).encode(),
            "character limit",
        ),
        (b"a", b"x" * 20_000, "byte limit"),
        (b"a", json.dumps({"schema": 1, "op": "upsert", "id": "a", "version": 3, "text": "\x00"}).encode(), "NUL"),
        (b"a", b'{"schema": 1, "op": "upsert", "id": "a", "version": 3, "metadata": {"x": Infinity}}', "infinity"),
        (
            b"a",
            b'{"schema": 1, "op": "upsert", "id": "a", "version": 3, "metadata": {"x": '
            + b"[" * 3000
            + b"]" * 3000
            + b"}}",
            "nested too deeply",
        ),
        (
            b"a",
            json.dumps(
                {"schema": 1, "op": "upsert", "id": "a", "version": 3, "updated_at": "9999-12-31T23:00:00-05:00"}
            ).encode(),
            "out of range",
        ),
        (b"b", good, "does not match"),
        (None, None, "empty"),
    ]:
        with pytest.raises(BadEvent, match=reason):
            parse_event(key, value, 10_000, 100)


def test_produce_consume_search_and_delete_through_the_api(tmp_path: Path, broker: Broker, minilm) -> None:
    settings = _settings(tmp_path, broker.bootstrap)
    with TestClient(create_app(settings, open_collection(settings, encoder=minilm), consume=True)) as client:
        _wait(lambda: client.get("/ready").json()["checks"]["broker"] == "ok", what="consumer ready")
        producer = make_producer(settings.kafka)
        publish(
            producer,
            settings.kafka.topic,
            [
                DocumentEvent.model_validate(
                    {
                        "schema": 1,
                        "op": "upsert",
                        "id": "k1",
                        "version": 1,
                        "title": "Ornithopters",
                        "text": "flapping wing aircraft",
                        "category": "aviation",
                    }
                ),
            ],
        )
        search = lambda mode: [
            h["id"]
            for h in client.get("/search", params={"q": "flapping wing ornithopter", "mode": mode}).json()["hits"]
        ]
        _wait(lambda: "k1" in search("lexical"), what="event visible in search")
        assert search("dense")[0] == "k1" and search("hybrid")[0] == "k1"
        publish(producer, settings.kafka.topic, [_event("k1", 2, op="delete")])
        _wait(lambda: client.get("/documents/k1").status_code == 404, what="delete applied")
        for mode in ("dense", "lexical", "hybrid"):
            assert "k1" not in search(mode)
        metrics = client.app.state.services.metrics.registry
        _wait(
            lambda: metrics.get_sample_value("dss_consumer_events_total", {"outcome": "applied"}) == 2, what="metrics"
        )
        producer.close()


def test_duplicates_reordering_and_no_resurrection(tmp_path: Path, broker: Broker) -> None:
    settings = _settings(tmp_path, broker.bootstrap)
    with _consuming(settings) as (collection, consumer, producer):
        publish(
            producer,
            settings.kafka.topic,
            [
                _event("a", 1, text="first"),
                _event("a", 1, text="first"),  # duplicate delivery
                _event("a", 3, text="third"),
                _event("a", 2, text="second"),  # out of order
                _event("b", 1, text="bee"),
                _event("b", 2, op="delete"),
                _event("b", 1, text="bee again"),  # late older upsert
                _event("c", 5, op="delete"),
                _event("c", 4, text="never"),  # delete before the upsert arrives
                _event("done", 1, text="marker"),
            ],
        )
        events = consumer.metrics.registry.get_sample_value
        counted = lambda: sum(
            events("dss_consumer_events_total", {"outcome": o}) or 0 for o in ("applied", "unchanged", "stale")
        )
        _wait(lambda: counted() == 10, what="all events")
        assert collection.store.get("a").text == "third" and collection.store.get("a").version == 3
        assert collection.store.get("b") is None and collection.store.get("c") is None
        assert collection.lexical.search("never", 10) == [] and collection.lexical.search("bee", 10) == []
        assert events("dss_consumer_events_total", {"outcome": "applied"}) == 6
        assert events("dss_consumer_events_total", {"outcome": "unchanged"}) == 1
        assert events("dss_consumer_events_total", {"outcome": "stale"}) == 3


def test_poison_events_go_to_the_dead_letter_topic(tmp_path: Path, broker: Broker, monkeypatch) -> None:
    settings = _settings(tmp_path, broker.bootstrap, max_event_bytes=4096)
    collection = open_collection(settings, encoder=HashEncoder())
    refuse_writes_of(monkeypatch, collection, "p8", "the store refused it: ValueError: not this one")
    consumer = DocumentConsumer(settings, collection)
    consumer.start()
    raw = KafkaProducer(bootstrap_servers=broker.bootstrap)
    head = {"schema": 1, "op": "upsert", "version": 1}
    poison = [
        (b"p1", b"{not json"),
        (b"p2", json.dumps({"schema": 1, "op": "upsert", "id": "p2"}).encode()),
        (b"p3", json.dumps({**head, "id": "p3", "metadata": "x"}).encode()),
        (b"p4", json.dumps({**head, "id": "p4", "text": "z" * 5000}).encode()),
        # What no store could hold; each had failed its whole batch, again and again.
        (b"p5", json.dumps({**head, "id": "p5", "text": "nul \x00 inside"}).encode()),
        (b"p6", b'{"schema": 1, "op": "upsert", "version": 1, "id": "p6", "metadata": {"x": NaN}}'),
        (
            b"p7",
            b'{"schema": 1, "op": "upsert", "version": 1, "id": "p7", "metadata": {"x": '
            + b"[" * 1500
            + b"]" * 1500
            + b"}}",
        ),
        (b"p8", _event("p8", 1, text="refused by the store").to_json()),
    ]
    for key, value in poison:
        raw.send(settings.kafka.topic, key=key, value=value)
        raw.send(settings.kafka.topic, key=b"ok" + key, value=_event("ok" + key.decode(), 1, text="fine").to_json())
    raw.flush()
    dead = lambda: consumer.metrics.registry.get_sample_value("dss_consumer_events_total", {"outcome": "dead_lettered"})
    good = [f"okp{i}" for i in range(1, 9)]
    _wait(
        lambda: all(collection.store.get(i) is not None for i in good) and dead() == 8,
        what="the good events beside the poison",
    )
    dlq = KafkaConsumer(
        settings.kafka.dead_letter_topic,
        bootstrap_servers=broker.bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=10_000,
    )
    letters = {}
    for record in dlq:
        letters[record.key] = json.loads(record.value)
        if len(letters) == 8:
            break
    dlq.close()
    assert set(letters) == {f"p{i}".encode() for i in range(1, 9)}
    assert "invalid JSON" in letters[b"p1"]["error"] and letters[b"p1"]["payload"] == "{not json"
    assert "version" in letters[b"p2"]["error"]
    assert "metadata" in letters[b"p3"]["error"]
    assert "byte limit" in letters[b"p4"]["error"]
    assert "text" in letters[b"p5"]["error"] and "NUL" in letters[b"p5"]["error"]
    assert "metadata" in letters[b"p6"]["error"] and "NaN" in letters[b"p6"]["error"]
    assert "nested too deeply" in letters[b"p7"]["error"]
    assert letters[b"p8"]["error"] == "the store refused it: ValueError: not this one"
    assert letters[b"p2"]["topic"] == settings.kafka.topic and isinstance(letters[b"p2"]["offset"], int)
    assert all(collection.store.get(f"p{i}") is None for i in range(1, 9))
    assert consumer.metrics.registry.get_sample_value("dss_consumer_events_total", {"outcome": "dead_lettered"}) == 8
    assert consumer.metrics.registry.get_sample_value("dss_consumer_events_total", {"outcome": "applied"}) == 8
    consumer.stop()
    raw.close()
    collection.close()


class _StuckClientConsumer(DocumentConsumer):
    """Its first Kafka client stops fetching by itself, as kafka-python 3.0.12 once did."""

    first_client = None

    def poll_batch(self) -> list:
        if self.first_client is None:
            self.first_client = self._consumer
        if self._consumer is self.first_client and self.collection.store.get("first") is not None:
            self._consumer.pause(*self._consumer.assignment())
        return super().poll_batch()


def test_a_stalled_client_is_replaced_and_the_waiting_events_are_applied(
    tmp_path: Path, broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _settings(tmp_path, broker.bootstrap, stall_timeout_ms=3000)
    with _consuming(settings, _StuckClientConsumer) as (collection, consumer, producer):
        publish(producer, settings.kafka.topic, [_event("first", 1, text="before the stall")])
        _wait(lambda: collection.store.get("first") is not None, what="the first event")
        publish(producer, settings.kafka.topic, [_event("second", 1, text="while stuck")])
        restarts = lambda: consumer.metrics.registry.get_sample_value("dss_consumer_restarts_total")
        _wait(lambda: restarts() == 1, timeout=30, what="the stall to be noticed")
        stalls = [r for r in caplog.records if r.getMessage() == "consumer stalled; replacing the Kafka client"]
        assert [r.reason.split(",")[0] for r in stalls] == ["1 records waiting"]
        _wait(lambda: collection.store.get("second") is not None, timeout=30, what="the event that waited")
        _wait(lambda: consumer.status.state == "ok", timeout=10, what="healthy again")
        assert consumer._consumer is not consumer.first_client and restarts() == 1


def test_a_quiet_topic_is_not_a_stall(tmp_path: Path, broker: Broker) -> None:
    settings = _settings(tmp_path, broker.bootstrap, stall_timeout_ms=1000)
    with _consuming(settings) as (collection, consumer, producer):
        publish(producer, settings.kafka.topic, [_event("only", 1, text="then nothing")])
        _wait(lambda: collection.store.get("only") is not None, what="the event")
        time.sleep(4)  # several stall timeouts with nothing waiting
        assert consumer.metrics.registry.get_sample_value("dss_consumer_restarts_total") == 0
        assert consumer.status.state == "ok"


def _consumer_env(settings: Settings) -> dict[str, str]:
    env = {**os.environ, "DSS_DATA_DIR": str(settings.data_dir)}
    for key, value in settings.kafka.model_dump().items():
        env[f"DSS_KAFKA__{key.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


@pytest.mark.integration  # starts a broker of its own
def test_broker_stopped_and_restarted_while_consuming(tmp_path: Path) -> None:
    """Against the deployed shape: a `dss consume` process, watched through its metrics."""
    import httpx

    from search.store import Store
    from tests.broker import free_port

    broker = Broker().start()
    settings = _settings(tmp_path, broker.bootstrap, stall_timeout_ms=10_000)
    port = free_port()
    log = (tmp_path / "consumer.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "api", "consume", "--metrics-port", str(port)],
        env=_consumer_env(settings),
        stdout=log,
        stderr=subprocess.STDOUT,
    )

    def up() -> float | None:
        try:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
        except httpx.HTTPError:
            return None
        lines = [line for line in text.splitlines() if line.startswith("dss_consumer_up ")]
        return float(lines[0].split()[1]) if lines else None

    def stored(doc: str) -> bool:
        if not (settings.data_dir / "store.sqlite").exists():
            return False
        store = Store(settings.store_url)
        try:
            return store.get(doc) is not None
        finally:
            store.close()

    try:
        _wait(lambda: up() == 1.0, timeout=60, what="consumer up")
        producer = make_producer(settings.kafka)
        publish(producer, settings.kafka.topic, [_event("before", 1, text="before the outage")])
        producer.close()
        _wait(lambda: stored("before"), what="first event")
        broker.stop()
        _wait(lambda: up() == 0.0, timeout=30, what="consumer degraded")
        assert process.poll() is None  # no crash
        broker.start()  # same port
        # Tansu keeps topics in memory; a real Kafka restarts with them. Restore them at once,
        # before the consumer's metadata request lets the broker auto-create them differently.
        # The consumer's own recovery restores them too (create_topics is on): whichever is first wins.
        from kafka import KafkaAdminClient
        from kafka.admin import NewTopic
        from kafka.errors import TopicAlreadyExistsError

        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        try:
            admin.create_topics([NewTopic(settings.kafka.topic, settings.kafka.partitions, 1)])
        except TopicAlreadyExistsError:
            pass
        finally:
            admin.close()
        _wait(lambda: up() == 1.0, timeout=60, what="recovery")
        producer = make_producer(settings.kafka)
        publish(producer, settings.kafka.topic, [_event("after", 1, text="after the outage")])
        producer.close()
        _wait(lambda: stored("after"), timeout=90, what="event after restart")
        assert '"consumer degraded"' in (tmp_path / "consumer.log").read_text()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        broker.stop()


def _expected_state(events: list[DocumentEvent]) -> dict[str, str | None]:
    """Apply the version rules to the events in order: id -> text (None when deleted)."""
    state: dict[str, VersionState] = {}
    text: dict[str, str | None] = {}
    for e in events:
        content = e.to_write().content_hash() if e.op == "upsert" else None
        d = decide(state.get(e.id), e.op, e.version, content)
        if d.outcome is Outcome.APPLIED:
            state[e.id] = VersionState(d.version, e.op == "delete", content)
            text[e.id] = e.text if e.op == "upsert" else None
    return text


def test_kill_9_mid_batch_then_restart_converges_exactly(tmp_path: Path, broker: Broker) -> None:
    settings = _settings(tmp_path, broker.bootstrap, max_batch=40)
    rng = np.random.default_rng(3)
    events = []
    versions: dict[str, int] = {}
    for i in range(1500):
        doc = f"d{rng.integers(0, 300)}"
        versions[doc] = versions.get(doc, 0) + 1
        version = int(versions[doc] - (rng.random() < 0.1))  # some stale / duplicate versions
        op = "delete" if rng.random() < 0.15 else "upsert"
        events.append(_event(doc, version, op=op, text=f"text {doc} v{version} token{i}"))
    expected = _expected_state(events)

    env = _consumer_env(settings)
    log = (tmp_path / "consumer.log").open("w")
    consume = lambda: subprocess.Popen(
        [sys.executable, "-m", "api", "consume"], env=env, stdout=log, stderr=subprocess.STDOUT
    )

    producer = make_producer(settings.kafka)
    first = consume()
    publish(producer, settings.kafka.topic, events)
    store_url = settings.store_url
    from search.store import Store

    probe = lambda: Store(store_url).last_seq() if (settings.data_dir / "store.sqlite").exists() else 0
    _wait(lambda: probe() > 100, timeout=120, what="the consumer to apply some batches")
    os.kill(first.pid, signal.SIGKILL)  # in the middle of a run of batches
    first.wait()
    applied_at_kill = probe()

    second = consume()
    live = {doc: text for doc, text in expected.items() if text is not None}
    store = Store(store_url)
    current = lambda: {d.id: d.text for docs in store.live_documents() for d in docs}
    _wait(lambda: current() == live, timeout=180, what="the restarted consumer to converge")
    store.close()
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=60) == 0
    producer.close()

    assert applied_at_kill < len(events)  # the kill really interrupted the stream
    with open_collection(settings) as collection:
        store_live = {d.id: d.text for docs in collection.store.live_documents() for d in docs}
        assert store_live == live  # no loss, no resurrection (and a stable state after SIGTERM)
        tombstones = {d.id for docs in collection.store.changes_since(0) for d in docs if d.deleted}
        assert tombstones == {doc for doc, text in expected.items() if text is None}
        keys = {collection.store.get(doc).key for doc in live}
        assert set(faiss.vector_to_array(collection.vectors.index.id_map).tolist()) == keys
        assert collection.lexical.count == len(live)
        for doc, text in list(live.items())[:25]:
            token = text.split()[-1]
            assert [collection.store.get_by_keys([k])[k].id for k, _ in collection.lexical.search(token, 5)] == [doc]
