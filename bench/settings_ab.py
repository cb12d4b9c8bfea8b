"""Uncached query load on one build under several settings, the servers up at once and taking
turns run by run: the way to decide a setting on a host that drifts within minutes.

    python bench/settings_ab.py ../shared/data/cranfield --work-dir /tmp/load \
        --setting "0.5ms:" --setting "0.1ms:DSS_API__SWITCH_INTERVAL_MS=0.1" \
        [--workers 1] [--concurrency 8,32] [--runs 6] [--seconds 5]

Each --setting is LABEL:NAME=VALUE,NAME=VALUE... (environment for that server; nothing after
the colon: the configuration as it is). Every server gets its own copy of the work dir's `dss`
data directory (made once, reused). At each concurrency, each of --runs runs loads every server
once with `wrk` on the uncached mix, the order rotating from run to run (query_load.py's
`measure`), so that the machine's drift falls on all of them alike (bench/query_ab.py, which
compares commits, serves one version at a time). Prints the median QPS and p99 of each server with every run's figures,
and writes JSON to bench/results/settings_ab.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from query_ab import data_copy
from query_load import Target, dss_server, measure, reader_key


def parse_setting(text: str) -> tuple[str, dict[str, str]]:
    label, _, pairs = text.partition(":")
    if not label:
        raise argparse.ArgumentTypeError(f"--setting {text!r}: LABEL:NAME=VALUE,... with a label")
    try:
        return label, dict(pair.split("=", 1) for pair in pairs.split(",") if pair)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--setting {text!r}: each variable as NAME=VALUE") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("queries_from", type=Path, help="a BEIR folder whose queries.jsonl is replayed")
    parser.add_argument("--work-dir", type=Path, required=True, help="a query_load.py work dir (holds dss/)")
    parser.add_argument("--setting", type=parse_setting, action="append", required=True, metavar="LABEL:NAME=VALUE,...")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--concurrency", type=lambda s: [int(c) for c in s.split(",")], default=[8, 32])
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "settings_ab.json")
    args = parser.parse_args()
    if len(args.setting) < 2:
        parser.error("give at least two --setting")
    if not (args.work_dir / "dss").is_dir():
        sys.exit(f"{args.work_dir}/dss is missing: run bench/query_load.py --work-dir {args.work_dir} first")
    queries = [json.loads(line)["text"] for line in (args.queries_from / "queries.jsonl").open(encoding="utf-8")]

    with ExitStack() as servers:
        targets = []
        for i, (label, extra) in enumerate(args.setting):
            data = data_copy(args.work_dir / "dss", args.work_dir / f"settings-ab-{i}")
            env = {**os.environ, **extra}
            url = servers.enter_context(dss_server(data, args.workers, env))
            targets.append(Target(label, url, "/search?q={q}&k=10", {"X-API-Key": reader_key(data, env)}))
        rows = measure(targets, queries, args.seconds, args.runs, args.work_dir, ("uncached",), args.concurrency)
    print("every run's QPS and p99, by setting:")
    for label, rows_of in rows.items():
        for row in rows_of:
            print(
                f"  c={row['concurrency']:<3} {label:12} QPS {[round(r['qps']) for r in row['runs']]}  "
                f"p99 ms {[round(r['p99_ms']) for r in row['runs']]}",
                flush=True,
            )
    report = {"workers": args.workers, "settings": dict(args.setting), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
