"""Short, query-relevant excerpts of a document's text."""

from __future__ import annotations

import re
from collections.abc import Callable

SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s*")


def snippet(text: str, query_terms: set[str], analyze: Callable[[str], list[str]], limit: int = 240) -> str:
    """The sentence sharing most terms with the query (the first one when none does)."""
    sentences = [s.strip() for s in SENTENCE_END.split(text) if s.strip()]
    if not sentences:
        return ""
    best = max(sentences[:200], key=lambda s: len(query_terms.intersection(analyze(s))))
    if query_terms.isdisjoint(analyze(best)):
        best = sentences[0]
    return best if len(best) <= limit else best[: limit - 1].rstrip() + "…"
