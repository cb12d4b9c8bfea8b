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


def new_generation(data_dir: Path, name: str | None = None) -> Path:
    """An empty directory for the next generation (``name``: this one, as a replica takes its
    primary's names), never the current one."""
    root = indexes_root(data_dir)
    if name is None:
        numbers = [int(p.name[1:]) for p in root.glob("g*") if p.name[1:].isdigit()] if root.is_dir() else []
        name = f"g{max(numbers, default=1) + 1}"
    elif name == current_generation(data_dir).name:
        raise ValueError(f"generation {name} is the current one in {data_dir}")
    generation = root / name
    shutil.rmtree(generation, ignore_errors=True)
    generation.mkdir(parents=True)
    return generation


def adopt_generation_name(data_dir: Path, name: str) -> None:
    """Give the current generation (built or not yet) the name ``name``. Nothing in a
    generation refers to its own name, so the directory is just renamed."""
    current = current_generation(data_dir)
    if current.name == name:
        return
    target = indexes_root(data_dir) / name
    shutil.rmtree(target, ignore_errors=True)
    if current.is_dir():
        current.rename(target)
    else:
        target.mkdir(parents=True)
    atomic_write_text(indexes_root(data_dir) / "CURRENT", name)


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
