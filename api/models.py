"""HTTP request and response models. Limits here are hard caps; settings may be stricter."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, field_validator
from starlette.datastructures import QueryParams

from search.config import EncoderSettings
from search.documents import INT64, MAX_ID_LENGTH, NUL_FREE, Metadata, StoredText, Timestamp
from search.filters import Filters
from search.request import Mode, RankOptions, SearchRequest

MAX_QUERY_CHARS = 10_000
MAX_TEXT_CHARS = 1_000_000
Signal = Literal["dense", "lexical", "title", "category"]
# A filter value is compared in the store as what stored metadata may hold: no NUL, integers
# of 64 bits, finite numbers.
MetadataValue = (
    Annotated[StrictStr, NUL_FREE]
    | StrictBool
    | Annotated[StrictInt, Field(ge=INT64[0], le=INT64[1])]
    | Annotated[StrictFloat, Field(allow_inf_nan=False)]
)


# The search parameters' limits, one definition for the JSON form and the query-string form.
QueryText = Annotated[str, Field(min_length=1, max_length=MAX_QUERY_CHARS)]
PageSize = Annotated[int, Field(ge=1, le=1000)]
PageOffset = Annotated[int, Field(ge=0, le=100_000)]
Nprobe = Annotated[int, Field(ge=1, le=1_000_000)]
Share = Annotated[float, Field(ge=0, le=1)]
HalfLife = Annotated[float, Field(gt=0, le=100_000)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SearchFilters(_Strict):
    category: list[StoredText] = Field(default_factory=list, max_length=100, description="Any of these categories.")
    metadata: dict[StoredText, MetadataValue] = Field(
        default_factory=dict, max_length=20, description="Metadata fields that must equal these values."
    )
    updated_after: Timestamp | None = Field(None, description="updated_at >= this (inclusive).")
    updated_before: Timestamp | None = Field(None, description="updated_at < this (exclusive).")


class SearchBody(_Strict):
    """POST /search's JSON body."""

    q: QueryText
    k: PageSize = 10
    offset: PageOffset = 0
    mode: Mode = "default"
    nprobe: Nprobe | None = None
    explain: bool = False
    filters: SearchFilters = Field(default_factory=SearchFilters)
    weights: dict[Signal, float] | None = Field(
        None, description="Fixed relevance weights for this query instead of the learned ones (fused modes)."
    )
    freshness: Share | None = Field(None, description="Weight of freshness in reranking.")
    half_life_days: HalfLife | None = Field(None, description="Age at which freshness halves.")
    diversity: Share | None = Field(None, description="1 - MMR lambda; 0 = no diversification.")

    @field_validator("weights")
    @classmethod
    def _weights_usable(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is None:
            return None
        if any(not 0 <= w <= 1000 for w in value.values()) or sum(value.values()) <= 0:
            raise ValueError("weights must be between 0 and 1000 with at least one above 0")
        return value

    def to_request(self) -> SearchRequest:
        """The engine's request: the one place an HTTP search becomes one."""
        f = self.filters
        return SearchRequest(
            query=self.q,
            k=self.k,
            offset=self.offset,
            mode=self.mode,
            nprobe=self.nprobe,
            filters=Filters(tuple(f.category), dict(f.metadata), f.updated_after, f.updated_before),
            # Signal keys are strings; RankOptions only reads them.
            options=RankOptions(
                cast("dict[str, float] | None", self.weights), self.freshness, self.half_life_days, self.diversity
            ),
            explain=self.explain,
        )


class SearchQuery(BaseModel):
    """GET /search's query parameters, the query-string form of ``SearchBody``. ``parse``
    reads them for the route and for its fast lane alike."""

    SEQUENCES: ClassVar[tuple[str, ...]] = ("category", "meta")  # repeatable: every value counts

    q: QueryText
    k: PageSize = 10
    offset: PageOffset = 0
    mode: Mode = "default"
    category: list[str] | None = Field(None, max_length=100, description="Any of these categories (repeatable).")
    meta: list[str] | None = Field(
        None, description="Metadata filter FIELD=VALUE (repeatable); VALUE is JSON or a string."
    )
    updated_after: datetime | None = None
    updated_before: datetime | None = None
    nprobe: Nprobe | None = None
    explain: bool = False
    freshness: Share | None = None
    half_life_days: HalfLife | None = None
    diversity: Share | None = None

    @field_validator("meta")
    @classmethod
    def _pairs(cls, pairs: list[str] | None) -> list[str] | None:
        for pair in pairs or ():
            name, sep, _ = pair.partition("=")
            if not sep or not name:
                raise ValueError(f"invalid meta filter {pair!r}: expected FIELD=VALUE")
        return pairs

    @classmethod
    def parse(cls, query_string: bytes) -> SearchRequest:
        """The request a query string makes; raises ``ValidationError`` for what the route
        refuses (``read``, then ``to_body``)."""
        return cls.read(query_string).to_body().to_request()

    @classmethod
    def read(cls, query_string: bytes) -> SearchQuery:
        """The parameters of a query string. Every value of a repeatable parameter counts, the
        last of any other; unknown names are ignored."""
        params = QueryParams(query_string)
        values: dict[str, str | list[str]] = {}
        for name in cls.model_fields:
            if name in cls.SEQUENCES:
                if listed := params.getlist(name):
                    values[name] = listed
            elif (value := params.get(name)) is not None:
                values[name] = value
        return cls.model_validate(values)

    def to_body(self) -> SearchBody:
        """The JSON form of this query; raises ``ValidationError`` for what it would refuse
        (a NUL, a date out of range, a metadata value a store cannot hold)."""
        filters = SearchFilters(
            category=self.category or [],
            metadata=dict(_meta_value(pair) for pair in self.meta or ()),
            updated_after=self.updated_after,
            updated_before=self.updated_before,
        )
        return SearchBody(
            q=self.q,
            k=self.k,
            offset=self.offset,
            mode=self.mode,
            nprobe=self.nprobe,
            explain=self.explain,
            filters=filters,
            freshness=self.freshness,
            half_life_days=self.half_life_days,
            diversity=self.diversity,
        )


def _meta_value(pair: str) -> tuple[str, Any]:
    """FIELD=VALUE: VALUE as JSON where that gives a scalar, else the string itself."""
    name, _, raw = pair.partition("=")
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth
        return name, raw
    return name, value if isinstance(value, (str, int, float, bool)) else raw


class Explanation(BaseModel):
    signals: dict[str, float] = Field(
        description="Raw score of each signal for this document (and its freshness and redundancy when reranked)."
    )
    weights: dict[str, float] = Field(description="Weight of each signal in the fused score.")


class QueryExplanation(BaseModel):
    weights: dict[str, float] = Field(description="The relevance weights chosen for this query.")
    rerank: dict[str, float] = Field(
        description="Freshness weight, half-life and diversity used (empty: no reranking)."
    )
    features: dict[str, Any] = Field(description="What the query analyser saw (dynamic mode).")


class SearchHit(BaseModel):
    id: str
    score: float
    title: str
    snippet: str
    category: str | None = None
    updated_at: datetime | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    explain: Explanation | None = None


class SearchPage(BaseModel):
    """A search response without its timings: what the response cache keeps (api/front.py)."""

    query: str
    mode: str
    k: int
    offset: int
    generation: str = Field(description="The index generation that answered (changes after a reindex).")
    hits: list[SearchHit]
    explain: QueryExplanation | None = None


class SearchResponse(SearchPage):
    timings_ms: dict[str, float] = Field(
        description="Milliseconds per search stage, or {cache: ms} when a cached page answered."
    )


class DocumentIn(_Strict):
    id: StoredText = Field(min_length=1, max_length=MAX_ID_LENGTH)
    version: int | None = Field(None, ge=0, le=2**62)
    title: StoredText = Field("", max_length=10_000)
    text: StoredText = Field("", max_length=MAX_TEXT_CHARS)
    metadata: Metadata = Field(default_factory=dict)
    category: StoredText | None = Field(None, max_length=256)
    created_at: Timestamp | None = None
    updated_at: Timestamp | None = None


class DocumentBatch(_Strict):
    documents: list[DocumentIn] = Field(min_length=1, max_length=10_000)


class DocumentOut(BaseModel):
    id: str
    version: int
    title: str
    text: str
    metadata: dict[str, Any]
    category: str | None
    created_at: datetime | None
    updated_at: datetime | None


class WriteResultOut(BaseModel):
    id: str
    op: str
    outcome: Literal["applied", "unchanged", "stale"]
    version: int | None
    reason: str = ""


class WriteResponse(BaseModel):
    applied: int
    unchanged: int
    stale: int
    seq: int = Field(description="The store's change sequence after this write.")
    results: list[WriteResultOut]


class ReindexRequest(_Strict):
    encoder: EncoderSettings | None = Field(
        None, description="Re-encode with this encoder configuration; omit to rebuild with the current one."
    )


class JobOut(BaseModel):
    id: str
    state: Literal["queued", "running", "succeeded", "failed"]
    progress: float
    done: int
    total: int
    created_at: datetime
    finished_at: datetime | None
    error: str | None
    result: dict[str, Any] | None


class ErrorOut(BaseModel):
    error: str
    request_id: str | None = None
    details: list[dict[str, Any]] | None = None
