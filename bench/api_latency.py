"""/search latency against the real `dss serve` process on loopback.

    python bench/api_latency.py ../shared/data/cranfield [--data-dir D] [--requests 400] [--mode default]

Ingests the collection (skipped when --data-dir already holds it), starts `dss serve` with
auth on, and replays the collection's queries at concurrency 1 and 8 (threads, one keep-alive
connection each). Prints p50 / p99 latency and QPS per concurrency and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from query_load import DSS, dss_server, reader_key


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_load(url: str, key: str, queries: list[str], concurrency: int, total: int, mode: str) -> dict:
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    counter = iter(range(total))

    def worker() -> None:
        nonlocal errors
        with httpx.Client(base_url=url, timeout=60, headers={"X-API-Key": key}) as client:
            for i in counter:
                started = time.perf_counter()
                r = client.get("/search", params={"q": queries[i % len(queries)], "k": 10, "mode": mode})
                elapsed = (time.perf_counter() - started) * 1000
                with lock:
                    latencies.append(elapsed)
                    errors += r.status_code != 200

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": errors,
        "qps": round(len(latencies) / wall, 1),
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("collection", type=Path)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--mode", default="default")
    parser.add_argument("--out", type=Path, default=Path("bench/results/api_latency.json"))
    args = parser.parse_args()

    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="dss-bench-"))
    if not (data_dir / "store.sqlite").exists():
        subprocess.run([*DSS, "ingest", str(args.collection), "--data-dir", str(data_dir)], check=True)
    key = reader_key(data_dir, dict(os.environ))
    queries = [json.loads(line)["text"] for line in (args.collection / "queries.jsonl").open()]
    with dss_server(data_dir, 1, dict(os.environ)) as url:
        run_load(url, key, queries, 2, 40, args.mode)  # warm-up
        results = [run_load(url, key, queries, c, args.requests, args.mode) for c in (1, 8)]
    report = {"collection": args.collection.name, "mode": args.mode, "cpu_count": os.cpu_count(), "runs": results}
    for r in results:
        print(
            f"concurrency {r['concurrency']}: {r['qps']} QPS, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, errors {r['errors']}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
