"""Reranking the top candidates of the relevance order for freshness and diversity.

1. Objective score = (1 - f) · relevance + f · freshness, relevance min-max scaled over the
   candidates and freshness = 0.5 ** (age / half-life) (a document of unknown age counts as
   one half-life old, so it is neither favoured nor buried).
2. Diversity by maximal marginal relevance: pick, one at a time, the candidate maximising
   λ · objective − (1 − λ) · (highest cosine to a document already picked), λ = 1 − diversity.

With f = 0 and diversity = 0 the relevance order is returned unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True)
class RerankWeights:
    freshness: float  # f in [0, 1]
    diversity: float  # 1 - λ in [0, 1]
    half_life_days: float

    @property
    def active(self) -> bool:
        return self.freshness > 0 or self.diversity > 0


@dataclass
class Reranked:
    keys: list[int]
    scores: list[float]  # the objective score (relevance and freshness) of each, in order
    freshness: dict[int, float]  # per key, for explain
    redundancy: dict[int, float]  # highest cosine to a document ranked above it


def freshness_scores(timestamps: Sequence[float | None], now: float, half_life_days: float) -> np.ndarray:
    half_life = max(half_life_days, 1e-9) * SECONDS_PER_DAY
    ages = np.array([(now - t) if t is not None else half_life for t in timestamps], dtype=np.float64)
    return np.power(0.5, np.maximum(ages, 0.0) / half_life)


def rerank(
    keys: Sequence[int],
    relevance: Sequence[float],
    weights: RerankWeights,
    timestamps: Sequence[float | None],
    vectors: np.ndarray | None,
    now: float,
    picks: int | None = None,
) -> Reranked:
    """Reorder ``keys`` (given in relevance order) by the objectives in ``weights``. MMR
    chooses the first ``picks`` places (all when None); the rest follow by objective."""
    rel = np.asarray(relevance, dtype=np.float64)
    span = rel.max() - rel.min() if len(rel) else 0.0
    rel = (rel - rel.min()) / span if span > 0 else np.ones_like(rel)
    fresh = freshness_scores(timestamps, now, weights.half_life_days)
    objective = (1 - weights.freshness) * rel + weights.freshness * fresh
    if weights.diversity > 0 and vectors is not None and len(keys) > 1:
        order, redundancy = _mmr(objective, vectors, 1 - weights.diversity, picks or len(keys))
    else:
        order = sorted(range(len(keys)), key=lambda i: (-objective[i], i))
        redundancy = np.zeros(len(keys))
    return Reranked(
        keys=[int(keys[i]) for i in order],
        scores=[float(objective[i]) for i in order],
        freshness={int(k): float(v) for k, v in zip(keys, fresh)},
        redundancy={int(keys[i]): float(redundancy[i]) for i in order},
    )


def _mmr(objective: np.ndarray, vectors: np.ndarray, lam: float, picks: int) -> tuple[list[int], np.ndarray]:
    n = len(objective)
    closest = np.zeros(n)  # highest cosine to any picked document (none picked yet: 0)
    picked = np.zeros(n, dtype=bool)
    redundancy = np.zeros(n)
    order: list[int] = []
    for _ in range(min(picks, n)):
        value = np.where(picked, -np.inf, lam * objective - (1 - lam) * closest)
        best = int(np.argmax(value))
        order.append(best)
        picked[best] = True
        redundancy[best] = closest[best]
        closest = np.maximum(closest, vectors @ vectors[best])
    rest = sorted(np.flatnonzero(~picked), key=lambda i: (-objective[i], i))
    redundancy[rest] = closest[rest]
    return order + [int(i) for i in rest], redundancy
