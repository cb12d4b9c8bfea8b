"""The document model: what a write carries in, and what the store gives back."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AliasChoices, BaseModel, ConfigDict, Field, field_validator

MAX_ID_LENGTH = 512
MAX_METADATA_DEPTH = 32
INT64 = (-(2**63), 2**63 - 1)


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# What every store can hold, checked where a write (or a filter) comes in, so that a value a
# database would refuse is a clear rejection (HTTP 422, a dead letter, a bad ingest line), not
# a failed transaction, and what is accepted does not depend on which store is configured.


def _no_nul(value: str) -> str:
    if "\x00" in value:  # PostgreSQL text and JSONB cannot hold U+0000
        raise ValueError("must not contain the NUL character (U+0000)")
    return value


def _utc_in_range(value: datetime | None) -> datetime | None:
    try:
        return as_utc(value)
    except OverflowError:  # 9999-12-31T23:00-05:00 is in year 10000 in UTC
        raise ValueError("is out of range once converted to UTC") from None


def _json_value(value: Any, depth: int) -> None:
    if depth > MAX_METADATA_DEPTH:
        raise ValueError(f"is nested more than {MAX_METADATA_DEPTH} levels deep")
    if isinstance(value, str):
        _no_nul(value)
    elif isinstance(value, bool) or value is None:
        pass
    elif isinstance(value, int):
        if not INT64[0] <= value <= INT64[1]:
            raise ValueError("holds an integer beyond 64 bits (send it as a string)")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("holds NaN or an infinity, which JSON cannot carry")
    elif isinstance(value, list):
        for item in value:
            _json_value(item, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError("has a key that is not a string")
            _no_nul(key)
            _json_value(item, depth + 1)
    else:
        raise ValueError(f"holds a {type(value).__name__}, which is not JSON")


def _storable_metadata(value: dict[str, Any]) -> dict[str, Any]:
    _json_value(value, 0)
    return value


NUL_FREE = AfterValidator(_no_nul)
StoredText = Annotated[str, NUL_FREE]
Metadata = Annotated[dict[str, Any], AfterValidator(_storable_metadata)]
Timestamp = Annotated[datetime, AfterValidator(_utc_in_range)]


class DocumentWrite(BaseModel):
    """One requested change: an upsert or a delete. Used by ingest, the HTTP API and Kafka.

    ``version`` is optional: without one an upsert means "the latest content" (stored
    version + 1 when the content changed) and a delete erases whatever is stored.
    """

    model_config = ConfigDict(extra="ignore", populate_by_name=True, str_strip_whitespace=False)

    id: StoredText = Field(validation_alias=AliasChoices("id", "_id"), min_length=1, max_length=MAX_ID_LENGTH)
    op: Literal["upsert", "delete"] = "upsert"
    version: int | None = Field(None, ge=0, le=2**62)
    title: StoredText = ""
    text: StoredText = ""
    metadata: Metadata = Field(default_factory=dict)
    category: StoredText | None = Field(None, max_length=256)
    created_at: Timestamp | None = None
    updated_at: Timestamp | None = None

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_text(cls, value: Any) -> Any:
        # BEIR and many exports use numeric ids; a number is a fine id once it is a string.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("title", "text", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return "" if value is None else value

    def content_hash(self) -> str:
        """Identifies the searchable content, so re-sending the same document is a no-op."""
        payload = json.dumps([self.title, self.text, self.metadata, self.category], sort_keys=True, default=str)
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
