"""Bulk ingest from JSONL files and BEIR folders, in batches through the one write path."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from indexer.collection import Collection
from search.documents import DocumentWrite


@dataclass(frozen=True)
class BadLine:
    line: int
    error: str


@dataclass
class IngestReport:
    read: int = 0
    applied: int = 0
    unchanged: int = 0
    stale: int = 0
    bad: list[BadLine] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def docs_per_s(self) -> float:
        return self.read / self.seconds if self.seconds > 0 else 0.0


def source_file(path: Path) -> Path:
    """A JSONL file, or a BEIR folder's corpus.jsonl."""
    path = Path(path)
    if path.is_dir():
        corpus = path / "corpus.jsonl"
        if not corpus.is_file():
            raise FileNotFoundError(f"{path} is a folder without corpus.jsonl (not a BEIR collection)")
        return corpus
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    return path


def read_documents(path: Path, max_text_chars: int) -> Iterator[tuple[int, DocumentWrite | BadLine]]:
    """(line number, document or the reason the line was rejected) for every non-blank line."""
    with source_file(path).open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            yield number, parse_line(number, line, max_text_chars)


def parse_line(number: int, line: str, max_text_chars: int) -> DocumentWrite | BadLine:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        return BadLine(number, f"invalid JSON: {exc.msg} at column {exc.colno}")
    except RecursionError:
        return BadLine(number, "invalid JSON: nested too deeply")
    if not isinstance(record, dict):
        return BadLine(number, "expected a JSON object")
    try:
        doc = DocumentWrite.model_validate(record)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'record'}: {e['msg']}" for e in exc.errors())
        return BadLine(number, problems)
    if len(doc.text) + len(doc.title) > max_text_chars:
        return BadLine(number, f"document longer than {max_text_chars} characters")
    return doc


def count_lines(path: Path) -> int:
    with source_file(path).open("rb") as handle:
        return sum(1 for line in handle if line.strip())


def ingest(
    collection: Collection,
    path: Path,
    batch_size: int,
    max_text_chars: int,
    on_batch: Callable[[int], None] | None = None,
) -> IngestReport:
    """Read ``path`` and write its documents in batches; bad lines are reported and skipped."""
    report = IngestReport()
    started = time.perf_counter()
    batch: list[tuple[int, DocumentWrite]] = []  # (line number, document)

    def flush() -> None:
        if not batch:
            return
        result, refused = collection.write_skipping_refused([doc for _, doc in batch])
        report.applied += result.applied
        report.unchanged += result.unchanged
        report.stale += len(result.stale)
        report.read -= len(refused)  # counted as bad lines instead
        report.bad.extend(BadLine(batch[position][0], reason) for position, reason in refused.items())
        if on_batch:
            on_batch(len(batch))
        batch.clear()

    with collection.indexer.bulk():  # the vector index trained once, at the end, on everything read
        for number, item in read_documents(path, max_text_chars):
            if isinstance(item, BadLine):
                report.bad.append(item)
                if on_batch:
                    on_batch(1)
                continue
            report.read += 1
            batch.append((number, item))
            if len(batch) >= batch_size:
                flush()
        flush()
    report.bad.sort(key=lambda bad: bad.line)
    collection.indexer.save_changes()  # the training at the block's end saved it already, if it ran
    report.seconds = time.perf_counter() - started
    return report
