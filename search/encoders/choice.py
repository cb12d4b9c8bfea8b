"""Choosing among equivalent ways to do one job by how fast each is where it runs."""

from __future__ import annotations

import statistics
import threading
from collections.abc import Hashable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T", bound=Hashable)


class FastestOption(Generic[T]):
    """Explore, then commit: the options take turns until each has ``trials`` timings (after
    ``warmup`` untimed uses), then the fastest median is kept for good. The first option is the
    default, kept unless another is at least ``margin`` faster: a gain within noise is no gain.
    Timings come from the real work, so they include whatever else the machine is doing."""

    def __init__(self, options: Sequence[T], trials: int = 16, warmup: int = 2, margin: float = 0.1) -> None:
        self.options = list(dict.fromkeys(options))
        self.trials, self.warmup, self.margin = trials, warmup, margin
        self.chosen: T = self.options[0]  # until the timings say otherwise
        self.settled = len(self.options) == 1
        self.medians: dict[T, float] = {}
        self._uses = {option: 0 for option in self.options}
        self._times: dict[T, list[float]] = {option: [] for option in self.options}
        self._turn = 0
        self._lock = threading.Lock()

    def pick(self) -> T:
        if self.settled:
            return self.chosen
        with self._lock:
            option = self.options[self._turn % len(self.options)]
            self._turn += 1
            return option

    def record(self, option: T, seconds: float) -> bool:
        """Add a timing; True when this one settles the choice."""
        if self.settled:
            return False
        with self._lock:
            self._uses[option] += 1
            if self._uses[option] > self.warmup:
                self._times[option].append(seconds)
            if self.settled or any(len(t) < self.trials for t in self._times.values()):
                return False
            self.medians = {option: statistics.median(t) for option, t in self._times.items()}
            default = self.options[0]
            best = min(self.medians, key=self.medians.__getitem__)
            self.chosen = best if self.medians[best] < (1 - self.margin) * self.medians[default] else default
            self.settled = True
            return True
