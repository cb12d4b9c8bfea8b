"""Retrieval quality on BEIR-format collections (nDCG@10, Recall@100, MRR@10 via ir-measures)."""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass
from pathlib import Path

import ir_measures
from ir_measures import RR, R, nDCG

from search.engine import SearchEngine
from search.request import RankOptions, SearchRequest

MEASURES = {"ndcg@10": nDCG @ 10, "recall@100": R @ 100, "mrr@10": RR @ 10}
RUN_DEPTH = 100


@dataclass
class EvalResult:
    metrics: dict[str, float]
    queries: int
    search_seconds: float


def load_queries(beir_dir: Path) -> dict[str, str]:
    with (Path(beir_dir) / "queries.jsonl").open(encoding="utf-8") as handle:
        records = (json.loads(line) for line in handle if line.strip())
        return {str(r["_id"]): r["text"] for r in records}


def load_qrels(beir_dir: Path, split: str = "test") -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with (Path(beir_dir) / "qrels" / f"{split}.tsv").open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            qrels.setdefault(str(row["query-id"]), {})[str(row["corpus-id"])] = int(row["score"])
    return qrels


def evaluate(
    engine: SearchEngine,
    beir_dir: Path,
    mode: str,
    nprobe: int | None = None,
    batch_size: int = 64,
    options: RankOptions | None = None,
) -> EvalResult:
    """Run every judged query and score the top 100 against the qrels."""
    qrels = load_qrels(beir_dir)
    queries = {qid: text for qid, text in load_queries(beir_dir).items() if qid in qrels}
    ids = list(queries)
    run: dict[str, dict[str, float]] = {}
    started = time.perf_counter()
    for start in range(0, len(ids), batch_size):
        chunk = ids[start : start + batch_size]
        requests = [
            SearchRequest(queries[q], k=RUN_DEPTH, mode=mode, nprobe=nprobe, options=options or RankOptions())
            for q in chunk
        ]
        rankings = engine.rank_many(requests)
        keys = {key for ranking in rankings for key, _ in ranking.ranked}
        docs = engine.store.get_by_keys(list(keys))
        for qid, ranking in zip(chunk, rankings):
            run[qid] = {docs[key].id: score for key, score in ranking.ranked if key in docs}
    seconds = time.perf_counter() - started
    scores = ir_measures.calc_aggregate(list(MEASURES.values()), qrels, run)
    metrics = {name: round(float(scores[measure]), 4) for name, measure in MEASURES.items()}
    return EvalResult(metrics=metrics, queries=len(ids), search_seconds=seconds)
