"""Query load against the real `dss serve` (and txtai's API on the same data and model), with
an index of 100,000 documents, at concurrency 1 / 8 / 32 / 64, for an uncached mix (no query
repeats) and a Zipf mix of repeating queries; plus the encoder's batched ceiling, in one run.

    python bench/query_load.py ../shared/data/cranfield [--docs 100000] [--runtime onnx]
        [--txtai-python /opt/txtai-venv/bin/python] [--seconds 6] [--runs 3]

The 100,000 documents are short (12-word windows, stride 4, over the cranfield and cisi texts
in ../shared/data), so the encoder indexes them in minutes on 2 cores. Queries are the
cranfield queries; the uncached mix appends a unique number to each, the Zipf mix draws them
with P(rank r) ∝ 1/r^1.1. The load generator is an asyncio httpx client on the same machine,
one keep-alive connection per concurrent client. Each figure is the median of --runs runs.
Writes JSON to bench/results/query_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx
import numpy as np

DSS = [sys.executable, "-m", "api"]
CONCURRENCY = (1, 8, 32, 64)
_unique = itertools.count()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def short_documents(shared: Path, n: int, width: int = 12, stride: int = 4) -> list[dict]:
    docs: list[dict] = []
    for name in ("cranfield", "cisi"):
        with (shared / name / "corpus.jsonl").open(encoding="utf-8") as handle:
            for line in handle:
                words = json.loads(line)["text"].split()
                for start in range(0, max(1, len(words) - width + 1), stride):
                    docs.append({"id": f"{name}-{len(docs)}", "text": " ".join(words[start : start + width])})
    while len(docs) < n:  # not enough windows: shift by one word and go round again
        base = docs[len(docs) % len(docs)]
        docs.append({"id": f"extra-{len(docs)}", "text": " ".join(base["text"].split()[1:] + ["again"])})
    return docs[:n]


def query_stream(queries: list[str], mix: str, seed: int):
    if mix == "uncached":
        while True:
            for q in queries:
                yield f"{q} {next(_unique)}"
    rng = np.random.default_rng(seed)
    weights = 1 / np.arange(1, len(queries) + 1) ** 1.1
    order = rng.permutation(len(queries))
    while True:
        yield queries[order[rng.choice(len(queries), p=weights / weights.sum())]]


async def load(url: str, path: str, params, headers: dict, concurrency: int, seconds: float, queries) -> dict:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal errors
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    response = await http.get(path, params=params(next(queries)))
                    errors += response.status_code != 200
                except httpx.HTTPError:
                    errors += 1
                latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    return {
        "qps": len(latencies) / wall,
        "p50_ms": float(np.percentile(latencies, 50)),
        "p99_ms": float(np.percentile(latencies, 99)),
        "errors": errors,
    }


def measure(url, path, params, headers, queries: list[str], seconds: float, runs: int) -> list[dict]:
    rows = []
    for mix in ("uncached", "zipf"):
        for concurrency in CONCURRENCY:
            results = [
                asyncio.run(load(url, path, params, headers, concurrency, seconds, query_stream(queries, mix, run)))
                for run in range(runs)
            ]
            row = {
                "mix": mix,
                "concurrency": concurrency,
                **{key: round(statistics.median(r[key] for r in results), 2) for key in ("qps", "p50_ms", "p99_ms")},
                "errors": sum(r["errors"] for r in results),
            }
            rows.append(row)
            print(f"  {mix:8} c={concurrency:<3} {row['qps']:8.1f} QPS  p50 {row['p50_ms']:8.2f} ms  p99 {row['p99_ms']:8.2f} ms  errors {row['errors']}", flush=True)
    return rows


def wait_ready(url: str, path: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + path, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not become ready")


def encoder_ceiling(runtime: str, queries: list[str], repeats: int = 3) -> float:
    from search.config import EncoderSettings
    from search.encoders import load_encoder

    encoder = load_encoder(EncoderSettings(runtime=runtime))
    encoder.encode_queries(queries[:64])
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        for i in range(0, len(queries), 64):
            encoder.encode_queries(queries[i : i + 64])
        rates.append(len(queries) / (time.perf_counter() - started))
    return statistics.median(rates)


TXTAI_BUILD = textwrap.dedent(
    """
    import json, sys
    from txtai import Embeddings
    corpus, model, target = sys.argv[1:4]
    embeddings = Embeddings(path=model, content=True, hybrid=True, backend="faiss")
    with open(corpus, encoding="utf-8") as handle:
        embeddings.index((d["id"], d["text"]) for d in map(json.loads, handle))
    embeddings.save(target)
    """
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("queries_from", type=Path, help="a BEIR folder whose queries.jsonl is replayed")
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--runtime", default="onnx", help="encoder.runtime for the server")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--txtai-python", type=Path, help="a Python with txtai[api]; omitted: no txtai")
    parser.add_argument("--work-dir", type=Path, help="keep the indexes here (reused when present)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "query_load.json")
    args = parser.parse_args()

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="dss-load-"))
    work.mkdir(parents=True, exist_ok=True)
    queries = [json.loads(line)["text"] for line in (args.queries_from / "queries.jsonl").open(encoding="utf-8")]
    corpus = work / "corpus.jsonl"
    if not corpus.is_file():
        docs = short_documents(args.queries_from.parent, args.docs)
        corpus.write_text("".join(json.dumps(d) + "\n" for d in docs))
    env = {**os.environ, "DSS_ENCODER__RUNTIME": args.runtime}
    data_dir = work / "dss"
    report: dict = {"docs": args.docs, "runtime": args.runtime, "cpu_count": os.cpu_count()}
    started = time.perf_counter()  # idempotent: a kept --work-dir only checks what is there
    subprocess.run([*DSS, "ingest", str(corpus), "--data-dir", str(data_dir)], check=True, env=env)
    report["dss_ingest_s"] = round(time.perf_counter() - started, 1)

    print("encoder ceiling (batched, cranfield queries):", flush=True)
    report["ceiling_qps"] = {r: round(encoder_ceiling(r, queries), 1) for r in dict.fromkeys(("torch", args.runtime))}
    print(" ", report["ceiling_qps"], flush=True)

    key = subprocess.run(
        [*DSS, "keys", "create", "--role", "reader", "--data-dir", str(data_dir)],
        check=True, capture_output=True, text=True, env=env,
    ).stdout.strip()
    port = free_port()
    server = subprocess.Popen(
        [*DSS, "serve", "--port", str(port), "--data-dir", str(data_dir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, "/ready")
        print(f"deepseek-search ({args.docs} docs, runtime {args.runtime}):", flush=True)
        report["dss"] = measure(url, "/search", lambda q: {"q": q, "k": 10}, {"X-API-Key": key}, queries, args.seconds, args.runs)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)

    if args.txtai_python:
        index_dir = work / "txtai-index"
        if not index_dir.exists():
            from search.encoders.sentence import resolve_model_path

            started = time.perf_counter()
            model = resolve_model_path("all-MiniLM-L6-v2")
            subprocess.run([str(args.txtai_python), "-c", TXTAI_BUILD, str(corpus), model, str(index_dir)], check=True)
            report["txtai_index_s"] = round(time.perf_counter() - started, 1)
        config = work / "txtai.yml"
        config.write_text(f"path: {index_dir}\nwritable: false\nembeddings:\n")  # the key enables the router
        port = free_port()
        server = subprocess.Popen(
            [str(args.txtai_python), "-m", "uvicorn", "txtai.api:app", "--port", str(port), "--log-level", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, "CONFIG": str(config), "HF_HUB_OFFLINE": "1"},
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(url, "/search?query=wing&limit=1")
            print("txtai API (hybrid, one uvicorn worker):", flush=True)
            report["txtai"] = measure(url, "/search", lambda q: {"query": q, "limit": 10}, {}, queries, args.seconds, args.runs)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)
        ours = {(r["mix"], r["concurrency"]): r["qps"] for r in report["dss"]}
        report["ratio_to_txtai"] = {
            f"{r['mix']}@{r['concurrency']}": round(ours[(r["mix"], r["concurrency"])] / r["qps"], 2) for r in report["txtai"] if r["qps"]
        }
        print("QPS ratio, deepseek-search / txtai:", report["ratio_to_txtai"], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
