"""Freshness and diversity trade-off curves on a judged collection.

    python bench/rerank_tradeoff.py ../shared/data/cranfield [--data-dir D] [--duplicates 300]

The collection gets synthetic ages (uniform over three years, seeded) and near-duplicates: for
``--duplicates`` documents that some query judges relevant, a copy with one sentence dropped
and the same judgement (so diversifying away from it costs nDCG, as it would in practice).
Then, in one run on one index, the default mode is scored at several freshness weights
(nDCG@10 against the mean age of the top 10) and several diversity values (nDCG@10 against
the intra-list similarity: the mean pairwise cosine of the top 10, and duplicate pairs in it).
Prints a table per curve and writes JSON to bench/results/rerank_tradeoff.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from itertools import combinations
from pathlib import Path

import ir_measures
import numpy as np
from ir_measures import nDCG

sys.path.insert(0, str(Path(__file__).parent))
from synthetic import aged_collection, near_duplicates

from indexer.collection import open_collection
from search.config import load_settings
from search.evaluation import load_qrels, load_queries
from search.request import RankOptions, SearchRequest

FRESHNESS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)
DIVERSITY = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7)


def synthetic_collection(beir_dir: Path, duplicates: int):
    """The aged collection plus near-duplicates of judged-relevant documents, which inherit
    their originals' judgements."""
    qrels = load_qrels(beir_dir)
    judged = sorted({doc for judged in qrels.values() for doc, grade in judged.items() if grade > 0})
    copies, twins = near_duplicates(beir_dir, judged, duplicates)
    for judged_docs in qrels.values():
        for twin, original in twins.items():
            if original in judged_docs:
                judged_docs[twin] = judged_docs[original]
    return aged_collection(beir_dir) + copies, qrels, twins


def score(engine, queries, qrels, options: RankOptions, twins: dict[str, str]) -> dict:
    run, ages, similarities, duplicate_pairs = {}, [], [], []
    now = time.time()
    ids = list(queries)
    for start in range(0, len(ids), 64):
        chunk = ids[start : start + 64]
        rankings = engine.rank_many([SearchRequest(queries[q], k=100, options=options) for q in chunk])
        keys = {key for r in rankings for key, _ in r.ranked}
        docs = engine.store.get_by_keys(list(keys))
        for qid, ranking in zip(chunk, rankings):
            top = [key for key, _ in ranking.ranked]
            run[qid] = {docs[key].id: float(100 - rank) for rank, key in enumerate(top) if key in docs}
            top10 = top[:10]
            ages.append(statistics.mean((now - docs[k].updated_at.timestamp()) / 86_400 for k in top10))
            vectors, _ = engine.vectors.reconstruct(top10)
            sim = vectors @ vectors.T
            similarities.append(float(np.mean([sim[i, j] for i, j in combinations(range(len(top10)), 2)])))
            names = {docs[k].id for k in top10}
            duplicate_pairs.append(sum(1 for twin, original in twins.items() if twin in names and original in names))
    ndcg = ir_measures.calc_aggregate([nDCG @ 10], qrels, run)[nDCG @ 10]
    return {
        "ndcg@10": round(float(ndcg), 4),
        "mean_age_days": round(statistics.mean(ages), 1),
        "intra_list_similarity": round(statistics.mean(similarities), 4),
        "duplicate_pairs_per_query": round(statistics.mean(duplicate_pairs), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("beir_dir", type=Path)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--duplicates", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "rerank_tradeoff.json")
    args = parser.parse_args()

    docs, qrels, twins = synthetic_collection(args.beir_dir, args.duplicates)
    queries = {q: t for q, t in load_queries(args.beir_dir).items() if q in qrels}
    with tempfile.TemporaryDirectory(prefix="dss-tradeoff-") as tmp:
        settings = load_settings(data_dir=args.data_dir or Path(tmp))
        with open_collection(settings) as collection:
            for start in range(0, len(docs), 256):
                collection.write(docs[start : start + 256])
            engine = collection.engine
            freshness = []
            for f in FRESHNESS:
                freshness.append(
                    {"freshness": f, **score(engine, queries, qrels, RankOptions(freshness=f, diversity=0.0), twins)}
                )
                print("freshness", freshness[-1], flush=True)
            diversity = []
            for d in DIVERSITY:
                diversity.append(
                    {"diversity": d, **score(engine, queries, qrels, RankOptions(freshness=0.0, diversity=d), twins)}
                )
                print("diversity", diversity[-1], flush=True)
    result = {
        "collection": args.beir_dir.name,
        "documents": len(docs),
        "near_duplicates": len(twins),
        "queries": len(queries),
        "half_life_days": settings.search.half_life_days,
        "freshness_curve": freshness,
        "diversity_curve": diversity,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"\n{args.beir_dir.name}: {len(docs)} documents ({len(twins)} near-duplicates), {len(queries)} queries")
    print(f"{'freshness':>9} {'nDCG@10':>8} {'mean age (days)':>16}")
    for row in freshness:
        print(f"{row['freshness']:>9} {row['ndcg@10']:>8} {row['mean_age_days']:>16}")
    print(f"{'diversity':>9} {'nDCG@10':>8} {'intra-list sim':>15} {'dup pairs/query':>16}")
    for row in diversity:
        print(
            f"{row['diversity']:>9} {row['ndcg@10']:>8} {row['intra_list_similarity']:>15} {row['duplicate_pairs_per_query']:>16}"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
