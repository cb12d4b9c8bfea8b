"""The fast lane for GET /search: repeated searches from finished response bodies kept in
process, and every other valid GET search without a pass through FastAPI.

A repeated query should cost a dictionary lookup, not a pass through request validation,
dependency injection, the cache levels and serialisation again. The search route offers every
page it answers to a GET request (its JSON body without the timings) under the request's raw
query string and the engine state it was computed from (``SearchEngine.state``: store,
generation, the indexes' change sequences, ranking configuration). ``SearchFront``, an ASGI
middleware, answers a GET /search whose query string and *current* engine state match, after
the same API-key check the route makes. Any applied write moves the state on, so a page
computed before it is never served after it.

A query string it has no page for is read by the route's own parser
(``SearchQuery.parse``) and searched without FastAPI's dependency solving, most of
a cached query's cost before its cache lookups (docs/architecture.md). Everything else (a
refused key, a query string the parser or the deployment's limits refuse, a GET with a body,
other routes) goes on to the app unchanged, which answers it and words its errors as always.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable, Iterable
from typing import TYPE_CHECKING

import cachetools
from pydantic import ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from api.keys import Role, refusal
from api.models import SearchQuery
from api.search_response import limit_error, page_body, search_response
from search.config import ApiSettings
from search.request import SearchRequest

if TYPE_CHECKING:
    from api.service import Services

ROUTE = "/search"
ROUTE_LABEL = "dss.route"  # scope key: the route a response came from when the router never saw it


class ResponsePages:
    """Page bodies by (raw query string, engine state); LRU with a TTL (freshness moves with
    the clock, as for the other result-cache levels)."""

    def __init__(self, entries: int, ttl_s: int) -> None:
        self._pages: cachetools.TTLCache[tuple[bytes, Hashable], bytes] = cachetools.TTLCache(entries, ttl_s)
        self._lock = threading.Lock()  # cachetools is not thread-safe; callers may be on any thread

    def get(self, query_string: bytes, state: Hashable) -> bytes | None:
        with self._lock:
            return self._pages.get((query_string, state))

    def offer(self, query_string: bytes, state: Hashable, head: bytes) -> None:
        with self._lock:
            self._pages[(query_string, state)] = head


class SearchFront:
    """Answers GET /search requests from the app's ``ResponsePages``, or searches them itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or scope["path"] != ROUTE or _has_body(scope):
            return await self.app(scope, receive, send)
        svc: Services | None = getattr(scope["app"].state, "services", None)  # None before start-up
        if svc is None or (svc.settings.api.auth and refusal(svc.keys, header(scope, b"x-api-key"), Role.reader)):
            return await self.app(scope, receive, send)
        query_string: bytes = scope["query_string"]
        if svc.pages is not None:
            started = time.perf_counter()
            head = svc.pages.get(query_string, svc.collection.indexes.engine.state)
            svc.metrics.observe_cache("response", "hit" if head is not None else "miss", time.perf_counter() - started)
            if head is not None:
                body = page_body(head, {"cache": round((time.perf_counter() - started) * 1000, 3)})
                scope[ROUTE_LABEL] = ROUTE
                headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        request = read_query(query_string, svc.settings.api)
        if request is None:
            return await self.app(scope, receive, send)
        scope[ROUTE_LABEL] = ROUTE
        response = await search_response(svc, request, query_string)
        await response(scope, receive, send)


def read_query(query_string: bytes, api: ApiSettings) -> SearchRequest | None:
    """The request GET /search would make of this query string, or None where the route would
    refuse it."""
    try:
        request = SearchQuery.parse(query_string)
    except ValidationError:
        return None
    return None if limit_error(api, request) else request


def _has_body(scope: Scope) -> bool:
    """Whether a request says it carries a body (the app then reads it, and enforces its limit)."""
    for key, value in scope["headers"]:
        if key == b"transfer-encoding" or (key == b"content-length" and value.strip() != b"0"):
            return True
    return False


def header(scope: Scope, name: bytes) -> str | None:
    headers: Iterable[tuple[bytes, bytes]] = scope["headers"]
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None
