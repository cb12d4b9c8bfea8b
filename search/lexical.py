"""BM25 lexical index on tantivy, updated incrementally and persisted on disk.

Why tantivy (measured in bench/lexical_backends.py, 100k documents): block-max WAND top-k
keeps long OR queries fast where SQLite FTS5's bm25() ranks every matching row, and
batched updates cost a commit per batch, which the write path already batches.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import tantivy

from search.config import LexicalSettings
from search.snapshots import atomic_write_text
from search.text import Analyzer

ANALYZER_NAME = "dss"
FIELDS = ("title", "body")


@dataclass(frozen=True)
class LexicalEntry:
    key: int
    title: str
    body: str  # title and text, the field BM25 ranks by default


def _schema() -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    builder.add_integer_field("key", stored=True, indexed=True, fast=True)
    for name in FIELDS:
        builder.add_text_field(name, tokenizer_name=ANALYZER_NAME, index_option="freq")
    return builder.build()


class LexicalIndex:
    def __init__(self, path: Path, settings: LexicalSettings) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.settings = settings
        self.analyzer = Analyzer(settings)
        self._manifest_path = self.path / "manifest.json"
        manifest = self._read_manifest()
        if manifest and manifest.get("analyzer") != self._analyzer_signature():
            raise RuntimeError(
                f"lexical index at {self.path} was built with analyzer {manifest.get('analyzer')}, "
                f"settings now ask for {self._analyzer_signature()}: run `dss reindex`"
            )
        self.seq = int(manifest["seq"]) if manifest else 0
        self.schema = _schema()
        self.index = tantivy.Index(self.schema, path=str(self.path), reuse=True)
        self.index.register_tokenizer(ANALYZER_NAME, self.analyzer.tantivy_analyzer)
        self._writer = self.index.writer(heap_size=64_000_000, num_threads=1)
        self._lock = threading.Lock()
        # One query is analysed by both field searches, the query features and the snippets.
        self._query_terms = functools.lru_cache(maxsize=4096)(self._analyse_query)
        self.index.reload()

    def _analyzer_signature(self) -> dict[str, Any]:
        return self.settings.model_dump()

    def _read_manifest(self) -> dict[str, Any] | None:
        if not self._manifest_path.is_file():
            return None
        manifest: dict[str, Any] = json.loads(self._manifest_path.read_text())
        return manifest

    def apply(self, upserts: Sequence[LexicalEntry], deletes: Sequence[int], seq: int) -> None:
        """Replace or remove documents by key and commit; ``seq`` is the change they reach."""
        with self._lock:
            for key in list(deletes) + [e.key for e in upserts]:
                self._writer.delete_documents_by_term("key", int(key))
            for entry in upserts:
                self._writer.add_document(
                    tantivy.Document(
                        key=[int(entry.key)],
                        title=[self.analyzer.prepare(entry.title)],
                        body=[self.analyzer.prepare(entry.body)],
                    )
                )
            self._writer.commit()
            self.index.reload()
            self.seq = max(self.seq, seq)
            self._write_manifest()

    def clear(self) -> None:
        with self._lock:
            self._writer.delete_all_documents()
            self._writer.commit()
            self.index.reload()
            self.seq = 0
            self._write_manifest()

    def _write_manifest(self) -> None:
        manifest = {"seq": self.seq, "count": self.count, "analyzer": self._analyzer_signature()}
        atomic_write_text(self._manifest_path, json.dumps(manifest))

    @property
    def count(self) -> int:
        return self.index.searcher().num_docs

    def query_terms(self, text: str) -> list[str]:
        """The distinct index terms of a query, in order of first appearance."""
        return list(self._query_terms(text))

    def _analyse_query(self, text: str) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.analyzer.terms(text)))

    def search(
        self, text: str, k: int, field: str = "body", allowed: Sequence[int] | None = None
    ) -> list[tuple[int, float]]:
        """Top-k (key, BM25 score) for a free-text query: any term may match. ``allowed``
        restricts the results to those keys (a filter evaluated by the store)."""
        terms = self.query_terms(text)
        if not terms or k <= 0 or (allowed is not None and not allowed):
            return []
        query = tantivy.Query.boolean_query(
            [(tantivy.Occur.Should, tantivy.Query.term_query(self.schema, field, t)) for t in terms]
        )
        if allowed is not None:
            key_set = tantivy.Query.term_set_query(self.schema, "key", [int(k) for k in allowed])
            query = tantivy.Query.boolean_query(
                [(tantivy.Occur.Must, query), (tantivy.Occur.Must, tantivy.Query.const_score_query(key_set, 0.0))]
            )
        searcher = self.index.searcher()
        hits = searcher.search(query, limit=k, count=False).hits
        # The key from its fast field (a column read), not from each stored document.
        keys = searcher.fast_field_values("key", [addr for _, addr in hits])
        # Every document has its key: no None among the values.
        return [(int(cast(int, key)), float(score)) for key, (score, _) in zip(keys, hits)]

    def document_frequency(self, term: str, field: str = "body") -> int:
        return self.index.searcher().doc_freq(field, term)

    def close(self) -> None:
        with self._lock:
            self._writer.wait_merging_threads()
