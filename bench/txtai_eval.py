"""txtai's hybrid search scored on a BEIR collection, as a baseline for `dss eval`.

    /path/to/venv-with-txtai/bin/python bench/txtai_eval.py ../shared/data/cranfield ../shared/data/cisi

Needs `txtai` importable (it is not a project dependency: install it in a separate virtual
environment that sees this project's packages, e.g. `python -m venv --system-site-packages`).
Same model as ours (the packaged all-MiniLM-L6-v2), faiss backend, txtai's default hybrid
(dense + its BM25), title + text as one field, the top 100 scored with ir-measures.
Writes JSON to bench/results/txtai_eval.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import ir_measures
from ir_measures import RR, R, nDCG
from txtai import Embeddings

from search.encoders.sentence import resolve_model_path
from search.evaluation import load_qrels, load_queries

MEASURES = {"ndcg@10": nDCG @ 10, "recall@100": R @ 100, "mrr@10": RR @ 10}


def evaluate(beir_dir: Path) -> dict:
    with (beir_dir / "corpus.jsonl").open(encoding="utf-8") as handle:
        corpus = [json.loads(line) for line in handle if line.strip()]
    started = time.perf_counter()
    embeddings = Embeddings(path=resolve_model_path("all-MiniLM-L6-v2"), hybrid=True, backend="faiss")
    embeddings.index((str(d["_id"]), "\n".join(p for p in (d.get("title"), d["text"]) if p)) for d in corpus)
    index_seconds = time.perf_counter() - started
    qrels = load_qrels(beir_dir)
    queries = {q: t for q, t in load_queries(beir_dir).items() if q in qrels}
    ids = list(queries)
    results = embeddings.batchsearch([queries[q] for q in ids], 100)
    run = {qid: {str(doc_id): float(score) for doc_id, score in hits} for qid, hits in zip(ids, results)}
    scores = ir_measures.calc_aggregate(list(MEASURES.values()), qrels, run)
    return {
        "collection": beir_dir.name,
        "system": "txtai hybrid",
        **{name: round(float(scores[m]), 4) for name, m in MEASURES.items()},
        "queries": len(ids),
        "index_s": round(index_seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("beir_dirs", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "txtai_eval.json")
    args = parser.parse_args()
    rows = [evaluate(d) for d in args.beir_dirs]
    for row in rows:
        print(json.dumps(row))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
