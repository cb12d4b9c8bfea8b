"""Query load against the real `dss serve` (and txtai's API on the same data and model), with
an index of 100,000 documents, at concurrency 1 / 8 / 32 / 64, for an uncached mix (no query
repeats), a Zipf mix of repeating queries and a fully cached mix (every query answered once
before); plus the bare encoder's throughput at batch sizes 1-64 (torch fp32, ONNX fp32, the
server's query encoder), on the plain queries and on texts of the uncached mix, whose best is
the ceiling the uncached QPS is compared with, in one run.

    python bench/query_load.py ../shared/data/cranfield [--docs 100000] [--runtime auto]
        [--no-int8-queries] [--device cuda] [--txtai-python /opt/txtai-venv/bin/python]
        [--workers 1,2] [--seconds 6] [--runs 3]

The 100,000 documents are short (12-word windows, stride 4, over the cranfield and cisi texts
in ../shared/data), so the encoder indexes them in minutes on 2 cores. Queries are the
cranfield queries; the uncached mix appends a random 9-digit number to each, the Zipf mix
draws them with P(rank r) ∝ 1/r^1.1, the cached mix draws them uniformly after a warm-up pass.
The load generator is wrk (Debian package `wrk`) on the same
machine: one thread, one keep-alive connection per concurrent client, paths replayed from a
file. Every server is up at once: one for each --workers count (one process; a primary and
replicas behind the same port), each on its own copy of the data directory, and txtai's. They
take turns within each run, in an order that rotates from run to run, so that the machine's
drift over the minutes falls on all of them alike; each figure is the median of --runs runs.
The encoder ceilings are timed before the servers start and again after they stop, and the
better of the two is the ceiling. Writes JSON to bench/results/query_load.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import quote_plus, unquote_plus

import httpx
import numpy as np

DSS = [sys.executable, "-m", "api"]
CONCURRENCY = (1, 8, 32, 64)
MIXES = ("uncached", "zipf", "cached")
RUN_ID = os.urandom(4).hex()  # makes the uncached queries of this run new to every cache


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
        docs.append({"id": f"extra-{len(docs)}", "text": " ".join([*base["text"].split()[1:], "again"])})
    return docs[:n]


def query_paths(queries: list[str], mix: str, seed: str, count: int, template: str) -> list[str]:
    """Request paths: the uncached mix appends a random 9-digit number to each query, drawn
    afresh by every run of the bench (the caches persist between runs: a kept --work-dir,
    Redis); ~5 more tokens, where a longer unique tag had made uncached queries 1.7x as long as
    the ceiling's. The Zipf mix draws queries with P(rank r) ∝ 1/r^1.1 (a random permutation
    decides which query has which rank)."""
    rng = np.random.default_rng(list(f"{RUN_ID}-{seed}".encode()))
    if mix == "uncached":
        tags = rng.integers(10**8, 10**9, size=count)
        texts = [f"{queries[i % len(queries)]} {tag}" for i, tag in enumerate(tags)]
    elif mix == "cached":
        texts = [queries[i] for i in rng.integers(len(queries), size=count)]
    else:
        weights = 1 / np.arange(1, len(queries) + 1) ** 1.1
        ranked = [queries[i] for i in rng.permutation(len(queries))]
        texts = [ranked[r] for r in rng.choice(len(queries), size=count, p=weights / weights.sum())]
    return [template.format(q=quote_plus(t)) for t in texts]


# wrk replays the paths in order (uncached paths never repeat within a run) and reports
# requests, non-2xx/socket errors and latency percentiles as one JSON line.
WRK_SCRIPT = """
local paths, i = {}, 0
for line in io.lines(os.getenv("DSS_PATHS")) do paths[#paths + 1] = line end
request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests": %d, "seconds": %f, "errors": %d, "p50_ms": %f, "p99_ms": %f}\\n',
    summary.requests, summary.duration / 1e6, e.connect + e.read + e.write + e.timeout + e.status,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""


def busy_share(window_s: float) -> float:
    """The share of every core's time that was busy over the next ``window_s`` (/proc/stat)."""

    def ticks() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            fields = [int(f) for f in stat.readline().split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields[:8]) - idle, sum(fields[:8])

    busy, total = ticks()
    time.sleep(window_s)
    busy2, total2 = ticks()
    return (busy2 - busy) / max(1, total2 - total)


def settle(limit_s: float = 60, quiet: float = 0.1) -> None:
    """Until the machine is quiet: a server goes on with the requests a finished run left in
    flight (txtai with 64 clients: seconds of both cores), which must not fall on the next run."""
    started = time.monotonic()
    while busy_share(0.25) > quiet and time.monotonic() < started + limit_s:
        pass
    if (waited := time.monotonic() - started) > 2:
        print(f"    (waited {waited:.1f} s for the machine to quiet down)", flush=True)


def load(url: str, headers: dict, concurrency: int, seconds: float, paths: list[str], work: Path) -> dict:
    """One wrk run: one thread (it needs a fraction of a core) and ``concurrency`` connections,
    on a quiet machine."""
    settle()
    script, path_file = work / "load.lua", work / "paths.txt"
    script.write_text(WRK_SCRIPT)
    path_file.write_text("\n".join(paths) + "\n")
    command = [
        "nice",
        "-n",
        "-5",
        "wrk",
        "-t1",
        f"-c{concurrency}",
        f"-d{round(seconds)}s",
        "--timeout",
        "30s",
        "-s",
        str(script),
    ]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    out = subprocess.run(
        [*command, url], check=True, capture_output=True, text=True, env={**os.environ, "DSS_PATHS": str(path_file)}
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {"qps": result["requests"] / result["seconds"], **{k: result[k] for k in ("p50_ms", "p99_ms", "errors")}}


@dataclass(frozen=True)
class Target:
    """A server under load: its name in the report, URL, search path template and headers."""

    name: str
    url: str
    template: str
    headers: dict


def measure(
    targets: list[Target],
    queries: list[str],
    seconds: float,
    runs: int,
    work: Path,
    mixes: Sequence[str] = MIXES,
    concurrencies: Sequence[int] = CONCURRENCY,
) -> dict[str, list[dict]]:
    """Every mix at every concurrency on every server, the servers taking turns within each of
    the --runs runs (the order rotating from run to run), so that the machine's drift between
    minutes falls on all of them alike and their ratios are measured side by side. Each server
    seeds its own draws, so that none meets an uncached query that another answered (Redis is
    shared). A row holds the medians and every run's figures."""
    rows: dict[str, list[dict]] = {t.name: [] for t in targets}
    for mix in mixes:
        if mix == "cached":  # answer every query once, so that the mix is all hits
            for target in targets:
                with httpx.Client(base_url=target.url, headers=target.headers, timeout=60) as http:
                    for q in queries:
                        http.get(target.template.format(q=quote_plus(q))).raise_for_status()
        for concurrency in concurrencies:
            results: dict[str, list[dict]] = {t.name: [] for t in targets}
            for run in range(runs):
                turn = run % len(targets)
                for target in targets[turn:] + targets[:turn]:
                    # enough unique paths that the fastest run cannot wrap round
                    seed = f"{target.name}-{concurrency}-{run}"
                    paths = query_paths(queries, mix, seed=seed, count=int(seconds * 3000), template=target.template)
                    results[target.name].append(load(target.url, target.headers, concurrency, seconds, paths, work))
            for target in targets:
                runs_of = results[target.name]
                row = {
                    "mix": mix,
                    "concurrency": concurrency,
                    **{
                        key: round(statistics.median(r[key] for r in runs_of), 2) for key in ("qps", "p50_ms", "p99_ms")
                    },
                    "errors": sum(r["errors"] for r in runs_of),
                    "runs": runs_of,
                }
                rows[target.name].append(row)
                print(
                    f"  {target.name:8} {mix:8} c={concurrency:<3} {row['qps']:8.1f} QPS  p50 {row['p50_ms']:8.2f} ms  "
                    f"p99 {row['p99_ms']:8.2f} ms  errors {row['errors']}",
                    flush=True,
                )
    return rows


def stop(server: subprocess.Popen) -> None:
    """Ends a server's whole process group (its workers too), if any of it is left."""
    with suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=60)


def wait_ready(url: str, path: str, server: subprocess.Popen, log: IO[bytes], timeout: float = 600) -> None:
    """Until ``path`` answers 200; a server that exits first fails the bench at once, with its
    last lines of standard error (else a server that cannot start is waited for in silence)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            log.seek(0)
            tail = log.read().decode(errors="replace")[-3000:]
            raise RuntimeError(f"the server at {url} exited with {server.returncode} before it was ready:\n{tail}")
        try:
            if httpx.get(url + path, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not become ready")


def wait_workers(url: str, workers: int, server: subprocess.Popen, log: IO[bytes], timeout: float = 900) -> None:
    """Until every serving process answers /ready (each new connection lands on one of them)."""
    wait_ready(url, "/ready", server, log, timeout)
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(seen) < workers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(seen)} of {workers} workers became ready")
        with httpx.Client(base_url=url, timeout=5) as http:  # a new connection each time
            seen.add(http.get("/ready").json()["worker"]["pid"])
        time.sleep(0.05)


def reader_key(data_dir: Path, env: dict, cwd: Path | None = None) -> str:
    """A new reader API key for ``data_dir`` (``cwd``: the checkout whose `dss` makes it)."""
    return subprocess.run(
        [*DSS, "keys", "create", "--role", "reader", "--data-dir", str(data_dir)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
    ).stdout.strip()


@contextmanager
def dss_server(data_dir: Path, workers: int, env: dict, cwd: Path | None = None) -> Iterator[str]:
    """`dss serve` on a free port until the block ends; yields its URL once every worker answers."""
    port = free_port()
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(
            [*DSS, "serve", "--port", str(port), "--data-dir", str(data_dir), "--workers", str(workers)],
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
            env=env,
            cwd=cwd,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_workers(url, workers, server, log)
            yield url
        finally:
            stop(server)


BATCHES = (1, 8, 16, 32, 64)


def encoder_ceiling(settings: dict, queries: list[str], repeats: int = 3) -> dict[str, float]:
    """Queries per second of the bare encoder at each batch size (median of ``repeats``
    passes over the queries) and the best of them: the ceiling a server could reach."""
    from search.config import EncoderSettings
    from search.encoders import load_encoder

    encoder = load_encoder(EncoderSettings(**settings))
    rates: dict[str, float] = {}
    for batch in BATCHES:
        encoder.encode_queries(queries[:batch])
        passes = []
        for _ in range(repeats):
            started = time.perf_counter()
            for i in range(0, len(queries), batch):
                encoder.encode_queries(queries[i : i + batch])
            passes.append(len(queries) / (time.perf_counter() - started))
        rates[f"batch {batch}"] = round(statistics.median(passes), 1)
    return {"best": max(rates.values()), **rates}


def encoder_ceilings(
    ceilings: dict[str, dict], queries: list[str], tagged: list[str], when: str
) -> tuple[dict[str, dict], dict[str, dict]]:
    """Each encoder's ceiling on the plain queries and on texts of the uncached mix."""
    print(f"encoder ceiling, {when} the load (cranfield queries, q/s by batch size; best = the ceiling):", flush=True)
    plain, uncached = {}, {}
    for name, encoder_settings in ceilings.items():
        plain[name] = encoder_ceiling(encoder_settings, queries)
        print(f"  {name:10}", plain[name], flush=True)
        uncached[name] = encoder_ceiling(encoder_settings, tagged)
        print(f"  {name:10} (uncached-mix texts)", uncached[name], flush=True)
    return plain, uncached


# What serving processes make in a data directory (replicas, metrics, sockets): never copied.
SERVED = shutil.ignore_patterns("replicas", "metrics", "*.sock")


def fresh_copy(source: Path, target: Path) -> Path:
    """A new copy of a data directory, without what its serving processes made."""
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, ignore=SERVED)
    return target


@contextmanager
def txtai_server(python: Path, work: Path, corpus: Path, report: dict) -> Iterator[str]:
    """txtai's API (hybrid, one uvicorn worker) over the same documents, its index built once."""
    index_dir = work / "txtai-index"
    if not index_dir.exists():
        from search.encoders.sentence import resolve_model_path

        started = time.perf_counter()
        model = resolve_model_path("all-MiniLM-L6-v2")
        subprocess.run([str(python), "-c", TXTAI_BUILD, str(corpus), model, str(index_dir)], check=True)
        report["txtai_index_s"] = round(time.perf_counter() - started, 1)
    config = work / "txtai.yml"
    config.write_text(f"path: {index_dir}\nwritable: false\nembeddings:\n")  # the key enables the router
    port = free_port()
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(
            [str(python), "-m", "uvicorn", "txtai.api:app", "--port", str(port), "--log-level", "warning"],
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
            env={**os.environ, "CONFIG": str(config), "HF_HUB_OFFLINE": "1"},
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(url, "/search?query=wing&limit=1", server, log)
            yield url
        finally:
            stop(server)


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
    parser.add_argument(
        "--runtime",
        default="auto",
        help="encoder.runtime for the server (default auto, the default config: on the CPU the int8 query model)",
    )
    parser.add_argument(
        "--int8-queries",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="encoder.int8_queries for the server (runtime onnx only)",
    )
    parser.add_argument("--device", default="auto", help="encoder.device for the server (cuda: the GPU figures)")
    parser.add_argument(
        "--workers",
        default="1,2",
        help="api.workers of the server, comma-separated: each is measured in turn, side by side",
    )
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--txtai-python", type=Path, help="a Python with txtai[api]; omitted: no txtai")
    parser.add_argument("--work-dir", type=Path, help="keep the indexes here (reused when present)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "query_load.json")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench/query_load.py drives the load with wrk: install it first (apt-get install wrk)")

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="dss-load-"))
    work.mkdir(parents=True, exist_ok=True)
    queries = [json.loads(line)["text"] for line in (args.queries_from / "queries.jsonl").open(encoding="utf-8")]
    corpus = work / "corpus.jsonl"
    if not corpus.is_file():
        docs = short_documents(args.queries_from.parent, args.docs)
        corpus.write_text("".join(json.dumps(d) + "\n" for d in docs))
    int8_queries = args.int8_queries and args.runtime == "onnx"
    server_encoder = {"runtime": args.runtime, "int8_queries": int8_queries, "device": args.device}
    env = {**os.environ, **{f"DSS_ENCODER__{k.upper()}": str(v).lower() for k, v in server_encoder.items()}}
    data_dir = work / "dss"
    report: dict = {"docs": args.docs, "encoder": server_encoder, "cpu_count": os.cpu_count()}
    started = time.perf_counter()  # idempotent: a kept --work-dir only checks what is there
    subprocess.run([*DSS, "ingest", str(corpus), "--data-dir", str(data_dir)], check=True, env=env)
    report["dss_ingest_s"] = round(time.perf_counter() - started, 1)

    # fp32 ceilings use the runtime's own thread count (all cores): the best the bare model does.
    ceilings = {"torch fp32": {"runtime": "torch", "device": args.device}, "server": server_encoder}
    if not args.device.startswith("cuda"):  # ONNX Runtime here is the CPU path
        ceilings["onnx fp32"] = {"runtime": "onnx", "query_threads": None}
    # ...and on texts of the uncached mix, which the server encodes: the like-for-like ceiling.
    tagged = [unquote_plus(path) for path in query_paths(queries, "uncached", "ceiling", len(queries), "{q}")]
    # Timed before the servers start and again after they stop: the ceiling is the better of the two.
    report["ceiling_qps"], report["ceiling_qps_uncached_texts"] = encoder_ceilings(ceilings, queries, tagged, "before")

    worker_counts = [int(w) for w in args.workers.split(",")]
    with ExitStack() as servers:
        targets = []
        for workers in worker_counts:
            # A data directory of its own for each server (they serve at the same time).
            data = data_dir if workers == worker_counts[0] else fresh_copy(data_dir, work / f"dss-{workers}-workers")
            key = reader_key(data, env)
            started = time.perf_counter()  # a replica's first start builds its index copy from the store
            url = servers.enter_context(dss_server(data, workers, env))
            report.setdefault("dss_ready_s", {})[str(workers)] = round(time.perf_counter() - started, 1)
            targets.append(Target(f"dss{workers}", url, "/search?q={q}&k=10", {"X-API-Key": key}))
        if args.txtai_python:
            url = servers.enter_context(txtai_server(args.txtai_python, work, corpus, report))
            targets.append(Target("txtai", url, "/search?query={q}&limit=10", {}))
        print(
            f"query load, the servers taking turns in each run: dss1 = deepseek-search ({args.docs} docs, runtime "
            f"{args.runtime}, 1 process), dssN = N processes, txtai = txtai's API (hybrid, one uvicorn worker):",
            flush=True,
        )
        rows = measure(targets, queries, args.seconds, args.runs, work)
    report["dss"] = {str(w): rows[f"dss{w}"] for w in worker_counts}

    after = encoder_ceilings(ceilings, queries, tagged, "after")
    report["ceiling_qps_after"], report["ceiling_qps_uncached_texts_after"] = after
    if "txtai" in rows:
        report["txtai"] = rows["txtai"]
        report["ratio_to_txtai"] = {}
        for workers, ours_rows in report["dss"].items():
            ours = {(r["mix"], r["concurrency"]): r["qps"] for r in ours_rows}
            report["ratio_to_txtai"][workers] = {
                f"{r['mix']}@{r['concurrency']}": round(ours[(r["mix"], r["concurrency"])] / r["qps"], 2)
                for r in report["txtai"]
                if r["qps"]
            }
            print(
                f"QPS ratio, deepseek-search ({workers} worker(s)) / txtai:",
                report["ratio_to_txtai"][workers],
                flush=True,
            )
    for suffix in ("", "_uncached_texts"):
        fp32 = max(
            timing[name]["best"]
            for timing in (report[f"ceiling_qps{suffix}"], report[f"ceiling_qps{suffix}_after"])
            for name in ("torch fp32", "onnx fp32")
            if name in timing
        )
        report[f"fp32_ceiling_qps{suffix}"] = fp32
        shares = report[f"uncached_share_of_fp32_ceiling{suffix}"] = {}
        for workers, ours_rows in report["dss"].items():
            shares[workers] = {
                str(r["concurrency"]): round(r["qps"] / fp32, 3) for r in ours_rows if r["mix"] == "uncached"
            }
            texts = "uncached-mix texts" if suffix else "the queries"
            print(
                f"uncached QPS / best fp32 ceiling on {texts} ({fp32} q/s, the better of before and after), "
                f"{workers} worker(s):",
                shares[workers],
                flush=True,
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
