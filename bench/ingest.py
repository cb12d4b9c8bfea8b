"""Ingest throughput next to the raw encoder rate, measured side by side in one run.

    python bench/ingest.py ../shared/data/cranfield --repeats 3 [--limit N] [--out bench/results/ingest.json]

Each repeat encodes the corpus once with the bare encoder (one encode_documents call, as a
user would batch it) and then ingests it into a fresh data dir through `indexer.ingest`
(store transaction, vector and lexical index updates included). Prints medians and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from indexer.collection import open_collection
from indexer.ingest import ingest, read_documents
from search.config import load_settings
from search.encoders import load_encoder


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, default=0, help="use only the first N documents")
    parser.add_argument("--out", type=Path, default=Path("bench/results/ingest.json"))
    args = parser.parse_args()

    settings = load_settings()
    docs = [d for _, d in read_documents(args.corpus, settings.ingest.max_text_chars) if not hasattr(d, "error")]
    if args.limit:
        docs = docs[: args.limit]
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "corpus.jsonl"
        source.write_text("\n".join(d.model_dump_json() for d in docs))
        encoder = load_encoder(settings.encoder)
        encoder.encode_documents([d.embedding_text() for d in docs[:64]])  # warm-up
        raw, ingested = [], []
        for repeat in range(args.repeats):
            started = time.perf_counter()
            encoder.encode_documents([d.embedding_text() for d in docs])
            raw.append(len(docs) / (time.perf_counter() - started))
            run_settings = load_settings(data_dir=Path(tmp) / f"data{repeat}")
            collection = open_collection(run_settings, encoder=encoder)
            report = ingest(collection, source, settings.ingest.batch_size, settings.ingest.max_text_chars)
            collection.close()
            ingested.append(report.docs_per_s)
            print(f"repeat {repeat + 1}: encoder {raw[-1]:.1f} docs/s, ingest {ingested[-1]:.1f} docs/s", flush=True)
    result = {
        "corpus": str(args.corpus),
        "docs": len(docs),
        "encoder": str(encoder.fingerprint),
        "repeats": args.repeats,
        "encoder_docs_per_s_median": round(statistics.median(raw), 2),
        "ingest_docs_per_s_median": round(statistics.median(ingested), 2),
        "ingest_over_encoder_median": round(statistics.median(i / r for i, r in zip(ingested, raw)), 3),
        "encoder_docs_per_s": [round(x, 2) for x in raw],
        "ingest_docs_per_s": [round(x, 2) for x in ingested],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
