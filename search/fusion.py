"""Combining ranked lists from several signals into one ranking."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def min_max(scores: Mapping[int, float]) -> dict[int, float]:
    """Scale a candidate list's scores to [0, 1]; a list of equal scores maps to 1."""
    if not scores:
        return {}
    low, high = min(scores.values()), max(scores.values())
    span = high - low
    return {key: (s - low) / span if span > 0 else 1.0 for key, s in scores.items()}


def linear_fusion(
    signals: Mapping[str, Mapping[int, float]], weights: Mapping[str, float]
) -> dict[int, float]:
    """Weighted sum of min-max normalised signals; a candidate missing from a list scores 0 there."""
    fused: dict[int, float] = {}
    for name, scores in signals.items():
        weight = weights.get(name, 0.0)
        if weight == 0:
            continue
        for key, value in min_max(scores).items():
            fused[key] = fused.get(key, 0.0) + weight * value
    return fused


def reciprocal_rank_fusion(rankings: Sequence[Sequence[int]], k: int = 60) -> dict[int, float]:
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, key in enumerate(ranking, start=1):
            fused[key] = fused.get(key, 0.0) + 1.0 / (k + rank)
    return fused


def top(scores: Mapping[int, float], k: int) -> list[tuple[int, float]]:
    """Highest first; ties broken by key so results are deterministic."""
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:k]
