"""The document-change event: versioned JSON, keyed by document id.

    {"schema": 1, "op": "upsert" | "delete", "id": "...", "version": 7, "title": "...",
     "text": "...", "metadata": {...}, "category": "...", "updated_at": "2026-11-01T00:00:00Z"}

The key is the document id, so one document's changes share a partition and stay in order.
``version`` is required: it is what makes redelivered and reordered events harmless.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from search.documents import MAX_ID_LENGTH, DocumentWrite, Metadata, StoredText, Timestamp

SCHEMA_VERSION = 1


class DocumentEvent(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    schema_: Literal[1] = Field(alias="schema")
    op: Literal["upsert", "delete"]
    id: StoredText = Field(min_length=1, max_length=MAX_ID_LENGTH)
    version: int = Field(ge=0, le=2**62)
    title: StoredText = ""
    text: StoredText = ""
    metadata: Metadata = Field(default_factory=dict)
    category: StoredText | None = Field(None, max_length=256)
    created_at: Timestamp | None = None
    updated_at: Timestamp | None = None

    def to_write(self) -> DocumentWrite:
        return DocumentWrite(**self.model_dump(exclude={"schema_"}))

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True, exclude_none=True).encode()


class BadEvent(ValueError):
    """Why a record cannot be applied; it goes to the dead-letter topic with this reason."""


def parse_event(key: bytes | None, value: bytes | None, max_bytes: int, max_text_chars: int) -> DocumentEvent:
    if value is None:
        raise BadEvent("empty record (no value)")
    if len(value) > max_bytes:
        raise BadEvent(f"event of {len(value)} bytes is over the {max_bytes}-byte limit")
    try:
        data = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadEvent(f"invalid JSON: {exc}") from None
    except RecursionError:
        raise BadEvent("invalid JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise BadEvent("event must be a JSON object")
    try:
        # Strict: "5" is not a version and 1 is not a title (JSON dates are ISO strings).
        event = DocumentEvent.model_validate_json(value)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'event'}: {e['msg']}" for e in exc.errors())
        raise BadEvent(f"schema violation: {problems}") from None
    if len(event.title) + len(event.text) > max_text_chars:
        raise BadEvent(f"document text over the {max_text_chars}-character limit")
    if key is not None and key.decode("utf-8", "replace") != event.id:
        raise BadEvent(f"record key {key!r} does not match the document id {event.id!r}")
    return event
