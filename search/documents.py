"""The document model: what a write carries in, and what the store gives back."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

MAX_ID_LENGTH = 512


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class DocumentWrite(BaseModel):
    """One requested change: an upsert or a delete. Used by ingest, the HTTP API and Kafka.

    ``version`` is optional: without one an upsert means "the latest content" (stored
    version + 1 when the content changed) and a delete erases whatever is stored.
    """

    model_config = ConfigDict(extra="ignore", populate_by_name=True, str_strip_whitespace=False)

    id: str = Field(validation_alias=AliasChoices("id", "_id"), min_length=1, max_length=MAX_ID_LENGTH)
    op: Literal["upsert", "delete"] = "upsert"
    version: int | None = Field(None, ge=0, le=2**62)
    title: str = ""
    text: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)
    category: str | None = Field(None, max_length=256)
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_text(cls, value: Any) -> Any:
        # BEIR and many exports use numeric ids; a number is a fine id once it is a string.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("title", "text", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return "" if value is None else value

    @field_validator("created_at", "updated_at")
    @classmethod
    def _to_utc(cls, value: datetime | None) -> datetime | None:
        return as_utc(value)

    def content_hash(self) -> str:
        """Identifies the searchable content, so re-sending the same document is a no-op."""
        payload = json.dumps(
            [self.title, self.text, self.metadata, self.category], sort_keys=True, default=str
        )
        return hashlib.sha256(payload.encode()).hexdigest()

    def embedding_text(self) -> str:
        return embedding_text(self.title, self.text)


def embedding_text(title: str, text: str) -> str:
    """Title and body as one field, the way the encoder sees a document."""
    return "\n".join(part for part in (title, text) if part)


@dataclass
class StoredDocument:
    key: int  # int64 id shared by the vector and lexical indexes
    id: str
    version: int
    deleted: bool
    seq: int
    title: str = ""
    text: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    category: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    embedding: bytes | None = None
    encoder: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "version": self.version,
            "title": self.title,
            "text": self.text,
            "metadata": self.metadata,
            "category": self.category,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
        }
