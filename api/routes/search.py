"""GET and POST /search. Most GET searches are answered by the fast lane (api/front.py),
which reads the query string with the same parser (``SearchQuery.parse``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response

from api.deps import Reader, ServicesDep, query_parameters, search_query
from api.models import SearchBody, SearchQuery, SearchResponse
from api.search_response import limit_error, search_response
from api.service import Services
from search.request import SearchRequest

router = APIRouter(tags=["search"], dependencies=[Reader])


@router.get("/search", response_model=SearchResponse, openapi_extra={"parameters": query_parameters(SearchQuery)})
async def search_get(
    svc: ServicesDep, http: Request, request: Annotated[SearchRequest, Depends(search_query)]
) -> Response:
    """Search with query parameters (see POST /search for the JSON form)."""
    return await _search(svc, request, http.scope["query_string"])


@router.post("/search", response_model=SearchResponse)
async def search_post(svc: ServicesDep, body: SearchBody) -> Response:
    """Search with filters, per-request ranking weights and explanations. Modes: dense,
    lexical, hybrid (fixed weights), rrf, dynamic (weights per query) or default (dynamic)."""
    return await _search(svc, body.to_request())


async def _search(svc: Services, request: SearchRequest, query_string: bytes | None = None) -> Response:
    if (refused := limit_error(svc.settings.api, request)) is not None:
        raise HTTPException(422, refused)
    return await search_response(svc, request, query_string)
