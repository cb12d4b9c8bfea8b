"""Version rules that make writes idempotent and order-safe.

A write with an older version than the stored one is stale and ignored; a duplicate is a
no-op; a delete leaves a tombstone carrying its version, so a late older upsert cannot bring
the document back. Writes without a version mean "the latest": an upsert bumps the stored
version when the content changed, a delete erases whatever is stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Outcome(str, Enum):
    APPLIED = "applied"
    UNCHANGED = "unchanged"  # same content / already deleted / unknown id: nothing to do
    STALE = "stale"  # older than (or conflicting with) what is stored: ignored


@dataclass(frozen=True)
class VersionState:
    version: int
    deleted: bool
    content_hash: str | None


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    version: int | None  # the version stored after the write (None: nothing stored)
    reason: str = ""


def decide(state: VersionState | None, op: str, version: int | None, content_hash: str | None) -> Decision:
    """What a write does to a document currently in ``state`` (None: never seen)."""
    if op == "delete":
        return _decide_delete(state, version)
    return _decide_upsert(state, version, content_hash)


def _decide_upsert(state: VersionState | None, version: int | None, content_hash: str | None) -> Decision:
    if state is None:
        return Decision(Outcome.APPLIED, 1 if version is None else version)
    if version is None:
        if not state.deleted and state.content_hash == content_hash:
            return Decision(Outcome.UNCHANGED, state.version, "same content")
        return Decision(Outcome.APPLIED, state.version + 1)
    if version > state.version:
        return Decision(Outcome.APPLIED, version)
    if version == state.version and not state.deleted and state.content_hash == content_hash:
        return Decision(Outcome.UNCHANGED, state.version, "duplicate of the stored version")
    what = "deleted at" if state.deleted else "stored"
    return Decision(Outcome.STALE, state.version, f"version {version} is not newer than {what} version {state.version}")


def _decide_delete(state: VersionState | None, version: int | None) -> Decision:
    if version is None:
        if state is None or state.deleted:
            return Decision(Outcome.UNCHANGED, state.version if state else None, "not found")
        return Decision(Outcome.APPLIED, state.version + 1)
    if state is None:
        # Remember the delete: an older upsert arriving late must not create the document.
        return Decision(Outcome.APPLIED, version)
    if state.deleted:
        if version > state.version:
            return Decision(Outcome.APPLIED, version)
        return Decision(Outcome.UNCHANGED, state.version, "already deleted")
    if version >= state.version:
        return Decision(Outcome.APPLIED, version)
    return Decision(Outcome.STALE, state.version, f"version {version} is older than stored version {state.version}")
