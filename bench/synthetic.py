"""Synthetic additions to a BEIR collection for the ranking benches: ages, near-duplicates."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from search.documents import DocumentWrite

YEARS = 3


def _corpus(beir_dir: Path) -> list[dict]:
    with (beir_dir / "corpus.jsonl").open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def aged_collection(beir_dir: Path, seed: int = 7) -> list[DocumentWrite]:
    """Every document of the collection, updated a uniform random time in the last 3 years."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    return [
        DocumentWrite(
            id=str(d["_id"]),
            title=d.get("title", ""),
            text=d["text"],
            updated_at=now - timedelta(days=rng.uniform(0, 365 * YEARS)),
        )
        for d in _corpus(beir_dir)
    ]


def near_duplicates(
    beir_dir: Path, originals: list[str], count: int, seed: int = 7
) -> tuple[list[DocumentWrite], dict[str, str]]:
    """Copies of ``count`` of ``originals`` with one sentence dropped and their own age;
    returns the copies and a map copy id -> original id."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    by_id = {str(d["_id"]): d for d in _corpus(beir_dir)}
    docs, twins = [], {}
    for original in rng.sample([o for o in originals if o in by_id], min(count, len(originals))):
        d = by_id[original]
        sentences = [s for s in d["text"].split(". ") if s]
        if len(sentences) > 1:
            sentences.pop(rng.randrange(len(sentences)))
        twin = f"{original}-dup"
        docs.append(
            DocumentWrite(
                id=twin,
                title=d.get("title", ""),
                text=". ".join(sentences),
                updated_at=now - timedelta(days=rng.uniform(0, 365 * YEARS)),
            )
        )
        twins[twin] = original
    return docs, twins
