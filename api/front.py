"""The fast lane for repeated searches: finished GET /search response bodies, kept in process.

A repeated query should cost a dictionary lookup, not a pass through request validation,
dependency injection, the cache levels and serialisation again. The search route offers every
page it answers to a GET request (its JSON body without the timings) under the request's raw
query string and the engine state it was computed from (``SearchEngine.state``: store,
generation, the indexes' change sequences, ranking configuration). ``SearchFront``, an ASGI
middleware, answers a GET /search whose query string and *current* engine state match, after
the same API-key check the route makes. Any applied write moves the state on, so a page
computed before it is never served after it. Everything else (a miss, a refused key, other
routes) goes on to the app unchanged, which answers it and its errors as always.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable
from typing import TYPE_CHECKING

import cachetools
import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from api.keys import Role, refusal

if TYPE_CHECKING:
    from api.app import Services

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


def page_body(head: bytes, timings_ms: dict[str, float]) -> bytes:
    """A page's JSON body: its head (the response without timings) plus these timings."""
    return head[:-1] + b',"timings_ms":' + orjson.dumps(timings_ms) + b"}"


class SearchFront:
    """Answers repeated GET /search requests from the app's ``ResponsePages``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or scope["path"] != ROUTE:
            return await self.app(scope, receive, send)
        svc: Services | None = getattr(scope["app"].state, "services", None)  # None before start-up
        if svc is None or svc.pages is None:
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        head = None
        if not svc.settings.api.auth or refusal(svc.keys, header(scope, b"x-api-key"), Role.reader) is None:
            head = svc.pages.get(scope["query_string"], svc.collection.indexes.engine.state)
        svc.metrics.observe_cache("response", "hit" if head is not None else "miss", time.perf_counter() - started)
        if head is None:
            return await self.app(scope, receive, send)
        body = page_body(head, {"cache": round((time.perf_counter() - started) * 1000, 3)})
        scope[ROUTE_LABEL] = ROUTE
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None
