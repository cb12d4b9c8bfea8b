"""Combining ranked lists from several signals into one ranking."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

Scaler = Callable[[Mapping[int, float]], dict[int, float]]


def min_max(scores: Mapping[int, float]) -> dict[int, float]:
    """Scale a candidate list's scores to [0, 1]; a list of equal scores maps to 1."""
    if not scores:
        return {}
    low, high = min(scores.values()), max(scores.values())
    span = high - low
    return {key: (s - low) / span if span > 0 else 1.0 for key, s in scores.items()}


def max_scaled(scores: Mapping[int, float]) -> dict[int, float]:
    """Divide by the list's best score: keeps how far below the best each candidate is,
    which min-max throws away (its worst candidate always scores 0, however close)."""
    if not scores:
        return {}
    high = max(scores.values())
    return {key: s / high if high > 0 else 1.0 for key, s in scores.items()}


def linear_fusion(
    signals: Mapping[str, Mapping[int, float]],
    weights: Mapping[str, float],
    scale: Scaler = min_max,
) -> dict[int, float]:
    """Weighted sum of scaled signals; a candidate missing from a signal's list gets that
    list's lowest scaled score (it ranked below everything the signal returned)."""
    keys = set().union(*(s.keys() for name, s in signals.items() if weights.get(name, 0.0)))
    fused = dict.fromkeys(keys, 0.0)
    for name, scores in signals.items():
        weight = weights.get(name, 0.0)
        if weight == 0 or not scores:
            continue
        scaled = scale(scores)
        floor = min(scaled.values())
        for key in keys:
            fused[key] += weight * scaled.get(key, floor)
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
