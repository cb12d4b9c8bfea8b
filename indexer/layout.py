"""Where a data directory keeps its indexes.

Indexes live in generations: ``indexes/<name>/{vectors,lexical}``, with ``indexes/CURRENT``
naming the one in use. A reindex builds a new generation beside the live one and publishes
it by atomically rewriting CURRENT, so readers never see a half-built index.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from search.snapshots import atomic_write_text

FIRST = "g1"


def indexes_root(data_dir: Path) -> Path:
    return Path(data_dir) / "indexes"


def current_generation(data_dir: Path) -> Path:
    pointer = indexes_root(data_dir) / "CURRENT"
    name = pointer.read_text().strip() if pointer.is_file() else FIRST
    return indexes_root(data_dir) / name


def new_generation(data_dir: Path) -> Path:
    root = indexes_root(data_dir)
    numbers = [int(p.name[1:]) for p in root.glob("g*") if p.name[1:].isdigit()] if root.is_dir() else []
    generation = root / f"g{max(numbers, default=1) + 1}"
    shutil.rmtree(generation, ignore_errors=True)
    generation.mkdir(parents=True)
    return generation


def publish(data_dir: Path, generation: Path) -> None:
    """Make ``generation`` current and remove the ones before it."""
    atomic_write_text(indexes_root(data_dir) / "CURRENT", generation.name)
    for old in indexes_root(data_dir).glob("g*"):
        if old.is_dir() and old.name != generation.name:
            shutil.rmtree(old, ignore_errors=True)


def disk_usage(path: Path) -> int:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0
