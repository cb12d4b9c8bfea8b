"""tantivy vs SQLite FTS5 for the BM25 lexical index, side by side at 100k documents.

    python bench/lexical_backends.py --docs 100000 [--out bench/results/lexical_backends.json]

Documents are synthetic but shaped like the evaluation corpora: words drawn from the
cranfield + cisi vocabulary with its real frequencies, 60-160 words each; queries are the
collections' real queries. Both backends index the same analyzed terms (our Analyzer:
stopwords, Snowball stemming, jieba), so only the engines differ. Measured: bulk build,
incremental single-document updates (each committed), batched updates (100 per commit),
and top-100 query latency. Medians and p99 over the same operations in one run.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from search.config import LexicalSettings
from search.lexical import LexicalEntry, LexicalIndex
from search.text import Analyzer

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def load_corpora() -> tuple[list[str], list[str]]:
    texts, queries = [], []
    for name in ("cranfield", "cisi"):
        for line in (SHARED / name / "corpus.jsonl").open():
            record = json.loads(line)
            texts.append(f"{record.get('title', '')} {record['text']}")
        for line in (SHARED / name / "queries.jsonl").open():
            queries.append(json.loads(line)["text"])
    return texts, queries


def synthetic_docs(texts: list[str], n: int, seed: int = 7) -> list[str]:
    counts = Counter(word for text in texts for word in text.lower().split())
    words, weights = zip(*counts.items())
    rng = random.Random(seed)
    return [" ".join(rng.choices(words, weights, k=rng.randint(60, 160))) for _ in range(n)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(values_ms: list[float]) -> dict[str, float]:
    return {"p50_ms": round(statistics.median(values_ms), 3), "p99_ms": round(percentile(values_ms, 0.99), 3)}


class Fts5Index:
    """A minimal FTS5 BM25 index over pre-analyzed terms (bench only)."""

    def __init__(self, path: Path, analyzer: Analyzer) -> None:
        self.analyzer = analyzer
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE VIRTUAL TABLE fts USING fts5(body, tokenize='unicode61')")

    def _terms(self, text: str) -> str:
        return " ".join(self.analyzer.terms(text))

    def apply(self, upserts: list[LexicalEntry], deletes: list[int]) -> None:
        self.db.execute("BEGIN")
        keys = [(e.key,) for e in upserts] + [(k,) for k in deletes]
        self.db.executemany("DELETE FROM fts WHERE rowid = ?", keys)
        self.db.executemany(
            "INSERT INTO fts(rowid, body) VALUES (?, ?)", [(e.key, self._terms(e.body)) for e in upserts]
        )
        self.db.execute("COMMIT")

    def search(self, text: str, k: int) -> list[tuple[int, float]]:
        terms = list(dict.fromkeys(self.analyzer.terms(text)))
        if not terms:
            return []
        match = " OR ".join(f'"{t}"' for t in terms)
        rows = self.db.execute(
            "SELECT rowid, bm25(fts) FROM fts WHERE fts MATCH ? ORDER BY bm25(fts) LIMIT ?", (match, k)
        ).fetchall()
        return [(int(r), -float(s)) for r, s in rows]


class TantivyIndex:
    def __init__(self, path: Path) -> None:
        self.index = LexicalIndex(path, LexicalSettings())
        self.seq = 0

    def apply(self, upserts: list[LexicalEntry], deletes: list[int]) -> None:
        self.seq += 1
        self.index.apply(upserts, deletes, self.seq)

    def search(self, text: str, k: int) -> list[tuple[int, float]]:
        return self.index.search(text, k)


def measure(backend, docs: list[str], queries: list[str], rng: random.Random) -> dict:
    result: dict = {}
    entries = [LexicalEntry(i + 1, "", text) for i, text in enumerate(docs)]
    started = time.perf_counter()
    for start in range(0, len(entries), 5000):
        backend.apply(entries[start : start + 5000], [])
    result["bulk_build_s"] = round(time.perf_counter() - started, 2)

    single = []
    for _ in range(200):
        key = rng.randint(1, len(docs))
        entry = LexicalEntry(key, "", rng.choice(docs))
        started = time.perf_counter()
        backend.apply([entry], [])
        single.append((time.perf_counter() - started) * 1000)
    result["single_update_committed"] = summary(single)

    batched = []
    for _ in range(20):
        batch = [LexicalEntry(rng.randint(1, len(docs)), "", rng.choice(docs)) for _ in range(100)]
        batch = list({e.key: e for e in batch}.values())
        started = time.perf_counter()
        backend.apply(batch, [])
        batched.append((time.perf_counter() - started) * 1000)
    result["batch_100_updates"] = summary(batched)

    for q in queries[:20]:
        backend.search(q, 100)  # warm caches
    latencies = []
    for q in queries:
        started = time.perf_counter()
        backend.search(q, 100)
        latencies.append((time.perf_counter() - started) * 1000)
    result["query_top100"] = summary(latencies)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=Path("bench/results/lexical_backends.json"))
    args = parser.parse_args()
    texts, queries = load_corpora()
    docs = synthetic_docs(texts, args.docs)
    analyzer = Analyzer(LexicalSettings())
    results = {"docs": args.docs, "queries": len(queries)}
    with tempfile.TemporaryDirectory() as tmp:
        for name, backend in (
            ("tantivy", TantivyIndex(Path(tmp) / "tantivy")),
            ("sqlite_fts5", Fts5Index(Path(tmp) / "fts.sqlite", analyzer)),
        ):
            results[name] = measure(backend, docs, queries, random.Random(1))
            print(name, json.dumps(results[name]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
