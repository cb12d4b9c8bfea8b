"""Vector index layouts (index.factory strings) side by side on one collection's stored
embeddings, in one run: search time for one query at the engine's candidate depth and recall
against exact search, at the server's default nprobe (about sqrt(N) / 2) and at nlist/8 and
nlist/16, for each index.nlist_factor given (nlist as the server sets it); size on disk; the
time of an update batch (512 vectors removed and added again), and recall once more after it,
since an index that answers differently after an update that changed nothing is not fit for
streaming.

    python bench/index_factories.py /tmp/load/dss [--queries ../shared/data/cranfield] [--depth 100]
        [--nprobe-divisors 8,16] [--nlist-factors 4] [--vectors N] [--train-on N] [--collection-queries M]
        [--factories "IVF{nlist},Flat;IVF{nlist},SQfp16;IVF{nlist},SQ8"]

--train-on N trains each layout on the first N vectors only (lists and default nprobe sized for
N) and adds the rest afterwards, as a collection written batch by batch was trained when it
crossed index.train_threshold. --collection-queries M replaces the BEIR queries by M stored
vectors drawn from the whole collection, each moved a little (Gaussian noise, sigma 0.03 a
dimension, then normalised): queries spread over every region of the collection, where the
cranfield queries fall on one part of it.

The collection is a `dss` data directory (bench/query_load.py's work dir holds one with
100,000 documents: /tmp/load/dss). Queries are encoded with the configured query encoder
(DSS_ENCODER__* as for the server). One FAISS thread, as in the server. Writes JSON to
bench/results/index_factories.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from search.config import IndexSettings, load_settings
from search.encoders import load_encoder
from search.store import Store
from search.vector_index import VectorIndex

FACTORIES = "IVF{nlist},Flat;IVF{nlist},SQfp16;IVF{nlist},SQ8"


def stored_embeddings(store: Store) -> tuple[np.ndarray, np.ndarray]:
    keys, vectors = [], []
    for batch in store.live_documents(batch_size=10_000):
        for doc in batch:
            if doc.embedding is not None:
                keys.append(doc.key)
                vectors.append(np.frombuffer(doc.embedding, dtype=np.float32))
    return np.array(keys, dtype=np.int64), np.stack(vectors)


def recall(found: np.ndarray, exact: np.ndarray, k: int) -> float:
    return float(np.mean([len(set(f[:k]) & set(e[:k])) / k for f, e in zip(found, exact)]))


def measure(index: VectorIndex, queries: np.ndarray, exact: np.ndarray, depth: int, nprobe: int) -> dict:
    times, found = [], []
    index.search(queries[:5], depth, nprobe=nprobe)
    for query in queries:
        started = time.perf_counter()
        _, keys = index.search(query[None], depth, nprobe=nprobe)
        times.append(time.perf_counter() - started)
        found.append(keys[0])
    return {
        "nprobe": nprobe,
        "search_ms": round(1000 * statistics.median(times), 3),
        "recall@10": round(recall(np.array(found), exact, 10), 4),
        f"recall@{depth}": round(recall(np.array(found), exact, depth), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir", type=Path, help="a dss data directory with stored embeddings")
    parser.add_argument(
        "--queries", type=Path, default=Path(__file__).parents[1].parent / "shared" / "data" / "cranfield"
    )
    parser.add_argument("--depth", type=int, default=100, help="candidates per query (search.candidates)")
    parser.add_argument("--nprobe-divisors", default="8,16", help="nprobe = nlist // each")
    parser.add_argument("--factories", default=FACTORIES, help="index.factory strings, ';'-separated")
    parser.add_argument("--nlist-factors", default="4", help="index.nlist_factor values, ','-separated")
    parser.add_argument("--vectors", type=int, help="index only the first N stored embeddings (a smaller collection)")
    parser.add_argument("--train-on", type=int, help="train on the first N vectors, then add the rest")
    parser.add_argument("--collection-queries", type=int, help="M queries drawn from the stored vectors instead")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "index_factories.json")
    args = parser.parse_args()
    faiss.omp_set_num_threads(1)  # the server searches one query at a time on its ranking thread

    settings = load_settings(data_dir=args.data_dir)
    store = Store(settings.store_url, migrate_on_start=settings.store.migrate_on_start)
    keys, vectors = stored_embeddings(store)
    store.close()
    keys, vectors = keys[: args.vectors], vectors[: args.vectors]
    texts = [json.loads(line)["text"] for line in (args.queries / "queries.jsonl").open(encoding="utf-8")]
    encoder = load_encoder(settings.encoder)
    queries = encoder.encode_queries(texts)
    if args.collection_queries:
        rng = np.random.default_rng(0)
        drawn = vectors[rng.choice(len(vectors), args.collection_queries, replace=False)]
        queries = drawn + rng.normal(0, 0.03, drawn.shape).astype(np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    exact_index = faiss.IndexFlatIP(vectors.shape[1])
    exact_index.add(vectors)
    exact = keys[exact_index.search(queries, args.depth)[1]]
    print(f"{len(keys)} vectors, {len(queries)} queries, depth {args.depth}, {os.cpu_count()} cores", flush=True)

    rows = []
    divisors = [int(d) for d in args.nprobe_divisors.split(",")]
    layouts = [(f, float(n)) for f in args.factories.split(";") for n in args.nlist_factors.split(",")]
    for factory, nlist_factor in layouts:
        layout = IndexSettings(factory=factory, nlist_factor=nlist_factor, train_threshold=1)
        index = VectorIndex(layout, encoder.fingerprint)
        started = time.perf_counter()
        trained = args.train_on or len(keys)
        index.rebuild([(keys[:trained], vectors[:trained])])
        index.upsert(keys[trained:], vectors[trained:])
        build_s = time.perf_counter() - started
        with tempfile.TemporaryDirectory() as tmp:
            index.save(Path(tmp))
            size_mb = sum(f.stat().st_size for f in Path(tmp).glob("*.faiss")) / 2**20
        row = {
            "layout": index.state.kind,
            "trained_on": trained,
            "nlist_factor": nlist_factor,
            "build_s": round(build_s, 1),
            "size_mb": round(size_mb, 1),
        }
        probes = sorted({index.default_nprobe(), *(max(1, index.nlist // d) for d in divisors)}, reverse=True)
        row["before_update"] = measure(index, queries, exact, args.depth, index.default_nprobe())
        started = time.perf_counter()
        index.upsert(keys[:512], vectors[:512])  # an update batch that changes nothing
        row["update_512_ms"] = round(1000 * (time.perf_counter() - started), 1)
        row["after_update"] = [measure(index, queries, exact, args.depth, p) for p in probes]
        rows.append(row)
        print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "vectors": len(keys),
                "queries": len(queries),
                "collection_queries": bool(args.collection_queries),
                "depth": args.depth,
                "layouts": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
