"""Uncached query load on two versions of the server side by side: a base commit and the
working tree, alternating, on copies of the same data directory, in one run.

    python bench/query_ab.py ../shared/data/cranfield --base d67e9fb --work-dir /tmp/load
        [--base-env NAME=VALUE ...] [--workers 1] [--concurrency 1,8] [--mixes uncached]
        [--rounds 2] [--runs 3] [--seconds 6]

--work-dir is a query_load.py work dir (its `dss` data directory is copied once per version, so
that neither version's index layout, e.g. another default index factory, touches the other's).
The base commit is checked out with `git worktree` beside it and served from there, with
--base-env added to its environment (so `--base HEAD --base-env DSS_API__SWITCH_INTERVAL_MS=5`
compares a setting on one build). Each round serves both, the base first in odd rounds and
second in even ones: first 300 sequential uncached queries (medians of the response's
`timings_ms` and of the client's wall time), then `wrk` at each concurrency on each of --mixes,
query_load.py's mixes (uncached, zipf, cached; the cached mix after one pass over every query),
medians of --runs runs. Prints each round and writes JSON to
bench/results/query_ab.json. The machine drifts between rounds and within them: compare within
a round, and across rounds of both orders.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote_plus

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from query_load import SERVED, dss_server, load, query_paths, reader_key

ROOT = Path(__file__).resolve().parent.parent
SEQUENTIAL = 300
WARM_UP = 30  # queries answered before the sequential figures count (the process's first)


def checkout(base: str, work: Path) -> Path:
    """The base commit's tree, in a git worktree under ``work``."""
    tree = work / f"ab-{base}"
    if not tree.is_dir():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), base], check=True)
    return tree


def data_copy(source: Path, target: Path) -> Path:
    """A copy of the data directory, made once and reused; made beside it and renamed, so that
    a run stopped mid-copy leaves no partial copy for the next run to serve."""
    if not target.is_dir():
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(source, partial, ignore=SERVED)
        partial.rename(target)
    return target


def serve_and_measure(
    tree: Path,
    data: Path,
    label: str,
    queries: list[str],
    args: argparse.Namespace,
    work: Path,
    extra_env: dict[str, str],
) -> dict:
    env = {
        **os.environ,
        "PYTHONPATH": str(tree),  # this version's packages before the installed ones
        "DSS_ENCODER__RUNTIME": "onnx",
        "DSS_ENCODER__INT8_QUERIES": "true",
        **extra_env,
    }
    headers = {"X-API-Key": reader_key(data, env, tree)}
    with dss_server(data, args.workers, env, tree) as url:
        stages: dict[str, list[float]] = {}
        walls = []
        with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
            for path in query_paths(
                queries, "uncached", f"{label}-sequential", WARM_UP + SEQUENTIAL, "/search?q={q}&k=10"
            ):
                started = time.perf_counter()
                response = http.get(path)
                response.raise_for_status()
                walls.append((time.perf_counter() - started) * 1000)
                for stage, ms in response.json()["timings_ms"].items():
                    stages.setdefault(stage, []).append(ms)
            if "cached" in args.mixes:  # every query answered once: the cached mix finds them all
                for query in queries:  # the raw query strings the mix sends (the fast lane's keys)
                    http.get(f"/search?q={quote_plus(query)}&k=10").raise_for_status()
        row: dict = {
            "stages_ms": {s: round(statistics.median(v[WARM_UP:]), 3) for s, v in stages.items()},
            "wall_ms": round(statistics.median(walls[WARM_UP:]), 3),
        }
        for mix in args.mixes:
            for concurrency in args.concurrency:
                results = [
                    load(
                        url,
                        headers,
                        concurrency,
                        args.seconds,
                        query_paths(
                            queries,
                            mix,
                            f"{label}-{mix}-{concurrency}-{run}",
                            int(args.seconds * 3000),
                            "/search?q={q}&k=10",
                        ),
                        work,
                    )
                    for run in range(args.runs)
                ]
                name = f"c{concurrency}" if mix == "uncached" else f"{mix} c{concurrency}"
                row[name] = {k: round(statistics.median(r[k] for r in results), 2) for k in ("qps", "p50_ms", "p99_ms")}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("queries_from", type=Path, help="a BEIR folder whose queries.jsonl is replayed")
    parser.add_argument("--base", required=True, help="the commit to compare the working tree with")
    parser.add_argument(
        "--base-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="environment for the base's server only (repeatable)",
    )
    parser.add_argument("--work-dir", type=Path, required=True, help="a query_load.py work dir (holds dss/)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--concurrency", type=lambda s: [int(c) for c in s.split(",")], default=[1, 8])
    parser.add_argument("--mixes", type=lambda s: s.split(","), default=["uncached"])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "query_ab.json")
    args = parser.parse_args()
    if not (args.work_dir / "dss").is_dir():
        sys.exit(f"{args.work_dir}/dss is missing: run bench/query_load.py --work-dir {args.work_dir} first")
    queries = [json.loads(line)["text"] for line in (args.queries_from / "queries.jsonl").open(encoding="utf-8")]
    base_env = dict(pair.split("=", 1) for pair in args.base_env)
    base_label = " ".join([args.base, *args.base_env])
    versions = {
        base_label: (
            checkout(args.base, args.work_dir),
            data_copy(args.work_dir / "dss", args.work_dir / f"ab-data-{args.base}"),
            base_env,
        ),
        "working tree": (ROOT, data_copy(args.work_dir / "dss", args.work_dir / "ab-data-head"), {}),
    }
    report: dict = {"base": base_label, "workers": args.workers, "rounds": []}
    for round_number in range(args.rounds):
        rows = {}
        order = list(versions.items())
        for label, (tree, data, extra_env) in order if round_number % 2 == 0 else order[::-1]:
            rows[label] = serve_and_measure(
                tree, data, f"{label}-{round_number}", queries, args, args.work_dir, extra_env
            )
            print(f"round {round_number + 1}, {label}: {json.dumps(rows[label])}", flush=True)
        report["rounds"].append(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
