"""Structured filters on search results: category, metadata fields, an updated_at range."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

Scalar = str | int | float | bool


@dataclass(frozen=True)
class Filters:
    categories: tuple[str, ...] = ()
    metadata: dict[str, Scalar] = field(default_factory=dict)  # field -> required value
    updated_after: datetime | None = None  # inclusive
    updated_before: datetime | None = None  # exclusive

    def __bool__(self) -> bool:
        return bool(self.categories or self.metadata or self.updated_after or self.updated_before)
