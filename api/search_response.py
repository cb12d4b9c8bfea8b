"""A search's HTTP answer: from a ``SearchRequest`` to its JSON response, for the route
(api/routes/search.py) and for its fast lane (api/front.py) alike."""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from starlette.responses import Response

from api.models import Explanation, QueryExplanation, SearchHit, SearchPage
from search.config import ApiSettings
from search.request import SearchRequest

if TYPE_CHECKING:
    from api.service import Services


def page_body(head: bytes, timings_ms: dict[str, float]) -> bytes:
    """A page's JSON body: its head (the response without timings) plus these timings."""
    return head[:-1] + b',"timings_ms":' + orjson.dumps(timings_ms) + b"}"


def limit_error(api: ApiSettings, request: SearchRequest) -> str | None:
    """What this deployment refuses in a valid request (its settings are stricter than the models)."""
    if len(request.query) > api.max_query_chars:
        return f"q is longer than {api.max_query_chars} characters"
    if request.k > api.max_k:
        return f"k must be at most {api.max_k}"
    if request.offset > api.max_offset:
        return f"offset must be at most {api.max_offset}"
    return None


async def search_response(svc: Services, request: SearchRequest, query_string: bytes | None = None) -> Response:
    """The search response for a request within ``limit_error``'s limits, serialised here (the
    model is built by us and needs no second validation). A GET request's page is offered to
    the front under its query string. On the event loop: cache lookups and serialisation;
    encoding and ranking are awaited on their own threads (see SearchEngine.search_async)."""
    indexes = svc.collection.indexes  # one generation for the whole request
    engine = indexes.engine
    state = engine.state  # read before searching: the page reflects this state or a later one
    results = svc.collection.results
    if results is not None:
        result = (await results.search_async(engine, request, indexes.embeddings))[0]
    else:
        result = await engine.search_async(request)
    for stage, ms in result.timings_ms.items():
        svc.metrics.observe_stage(stage, ms / 1000)
    hits = [
        SearchHit(
            id=h.id,
            score=h.score,
            title=h.title,
            snippet=h.snippet,
            category=h.category,
            updated_at=h.updated_at,
            metadata=h.metadata,
            explain=Explanation(signals=h.signals, weights=result.weights) if request.explain else None,
        )
        for h in result.hits
    ]
    page = SearchPage(
        query=request.query,
        mode=result.mode,
        k=request.k,
        offset=request.offset,
        generation=indexes.generation.name,
        hits=hits,
        explain=QueryExplanation(weights=result.weights, rerank=result.rerank, features=result.features)
        if request.explain
        else None,
    )
    head = page.model_dump_json().encode()
    if query_string is not None and svc.pages is not None:
        svc.pages.offer(query_string, state, head)
    return Response(page_body(head, result.timings_ms), media_type="application/json")
