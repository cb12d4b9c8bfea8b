"""One search request, as every caller states it: the HTTP routes (GET and POST), the CLI
and the evaluation tools all make a ``SearchRequest`` and hand it to the engine and the
caches, which read what they need from it."""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import asdict, dataclass, field, replace
from typing import Literal, get_args

from search.filters import Filters

Mode = Literal["dense", "lexical", "hybrid", "rrf", "dynamic", "default"]
MODES: tuple[str, ...] = get_args(Mode)
SPACES = re.compile(r"\s+")


def normalise_query(text: str) -> str:
    """Unicode NFKC, whitespace collapsed. Case is kept: a cased encoder tells cases apart."""
    return SPACES.sub(" ", unicodedata.normalize("NFKC", text)).strip()


@dataclass(frozen=True)
class RankOptions:
    """Per-request overrides of the configured ranking; None = the configured value."""

    weights: dict[str, float] | None = None  # fixed relevance weights instead of the model's
    freshness: float | None = None
    half_life_days: float | None = None
    diversity: float | None = None


@dataclass(frozen=True)
class SearchRequest:
    """What to search for and how. ``mode`` "default" stands for the configured mode until the
    engine resolves it (``SearchEngine.resolved``). ``explain`` only shapes the HTTP answer:
    the engine always reports each hit's signals. Frozen, but not hashable (filters and
    weights hold dicts): ``cache_key`` is its key."""

    query: str
    k: int = 10
    offset: int = 0
    mode: str = "default"
    nprobe: int | None = None
    filters: Filters = field(default_factory=Filters)
    options: RankOptions = field(default_factory=RankOptions)
    explain: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}; got {self.mode!r}")
        if self.k < 1 or self.offset < 0:
            raise ValueError("k must be at least 1 and offset at least 0")

    @property
    def depth(self) -> int:
        """How many ranked results the page needs: those before it and its own."""
        return self.offset + self.k

    def same_but_query(self, other: SearchRequest) -> bool:
        """Whether ``other`` asks the same of the engine, but for another query (a batch of
        such requests is ranked together)."""
        return replace(other, query=self.query) == self

    def cache_key(self) -> str:
        """Everything that changes the engine's answer, with the query normalised (``explain``
        does not: the engine's result holds what it shows)."""
        parts = [
            normalise_query(self.query),
            self.k,
            self.offset,
            self.mode,
            self.nprobe,
            asdict(self.filters) if self.filters else None,
            asdict(self.options),
        ]
        return json.dumps(parts, sort_keys=True, default=str)
