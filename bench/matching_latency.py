"""What dynamic-weight matching and reranking add to a query's latency over dense-only
retrieval, at k = 10 from 100 candidates.

    python bench/matching_latency.py ../shared/data/cranfield [--rounds 5]

The collection is indexed with synthetic ages (so freshness reranking has work to do). Query
embeddings are computed once up front and served from memory, so both paths pay the same
(zero) encoder cost and the difference is what matching and reranking add: BM25 on body and
title, query features, exact dense scores for lexical-only candidates, fusion, freshness and
MMR over the 100 candidates, then hydration of the 10 hits (which both paths pay). The two
paths run interleaved, query by query, in one process. Prints p50 / p99 of each and of the
per-query difference; writes JSON to bench/results/matching_latency.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from synthetic import aged_collection

from indexer.collection import open_collection
from search.config import load_settings
from search.encoders.base import Encoder
from search.evaluation import load_queries
from search.request import RankOptions, SearchRequest


class PrecomputedQueries(Encoder):
    """Serves query vectors computed once, so the encoder drops out of the comparison."""

    def __init__(self, inner: Encoder, queries: Sequence[str]) -> None:
        self.inner = inner
        self.fingerprint = inner.fingerprint
        self._vectors = dict(zip(queries, inner.encode_queries(list(queries))))

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self.inner.encode_documents(texts)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self._vectors[t] for t in texts])


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("beir_dir", type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--freshness", type=float, default=0.3)
    parser.add_argument("--diversity", type=float, default=0.3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "matching_latency.json")
    args = parser.parse_args()

    queries = list(load_queries(args.beir_dir).values())
    docs = aged_collection(args.beir_dir)
    options = RankOptions(freshness=args.freshness, diversity=args.diversity)
    with (
        tempfile.TemporaryDirectory(prefix="dss-latency-") as tmp,
        open_collection(load_settings(data_dir=Path(tmp))) as collection,
    ):
        for start in range(0, len(docs), 256):
            collection.write(docs[start : start + 256])
        engine = collection.engine
        started = time.perf_counter()
        for q in queries[:50]:
            engine.encoder.encode_queries([q])
        encode_ms = (time.perf_counter() - started) * 1000 / 50
        engine.encoder = PrecomputedQueries(engine.encoder, queries)
        for q in queries[:20]:  # warm-up
            engine.search(SearchRequest(q, k=10, mode="dense"))
            engine.search(SearchRequest(q, k=10, options=options))
        dense, full, added = [], [], []
        for _ in range(args.rounds):
            for q in queries:
                t0 = time.perf_counter()
                engine.search(SearchRequest(q, k=10, mode="dense"))
                t1 = time.perf_counter()
                engine.search(SearchRequest(q, k=10, options=options))
                t2 = time.perf_counter()
                dense.append((t1 - t0) * 1000)
                full.append((t2 - t1) * 1000)
                added.append(full[-1] - dense[-1])
    result = {
        "collection": args.beir_dir.name,
        "documents": len(docs),
        "queries": len(queries),
        "samples": len(added),
        "k": 10,
        "candidates": collection.settings.search.candidates,
        "freshness": args.freshness,
        "diversity": args.diversity,
        "dense_ms": {"p50": percentile(dense, 50), "p99": percentile(dense, 99)},
        "default_ms": {"p50": percentile(full, 50), "p99": percentile(full, 99)},
        "added_ms": {"p50": percentile(added, 50), "p99": percentile(added, 99), "mean": statistics.mean(added)},
        "encoder_ms_per_query": encode_ms,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(
        f"{args.beir_dir.name}: {len(docs)} docs, {len(added)} query pairs, k=10 from {result['candidates']} candidates"
    )
    for name in ("dense_ms", "default_ms", "added_ms"):
        print(f"  {name:<11} p50 {result[name]['p50']:7.2f}  p99 {result[name]['p99']:7.2f}")
    print(f"  (for scale: the encoder alone, one query: {encode_ms:.1f} ms)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
