"""Cross-cutting HTTP concerns: request ids, log lines and latency metrics, the body-size
limit, and error bodies in one shape (``ErrorOut``)."""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.front import ROUTE_LABEL, header
from api.logs import RequestLog, request_id
from api.models import ErrorOut
from search.store import WriteRefused

if TYPE_CHECKING:
    from api.service import Services

log = logging.getLogger("api")


class RequestObserver:
    """Outermost: a request id (taken from X-Request-ID or made), returned in the response
    header and carried by every log line; one log line and one latency sample per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.log = RequestLog(log)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid = (header(scope, b"x-request-id") or secrets.token_hex(16))[:128]
        token = request_id.set(rid)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", rid.encode("latin-1"))]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or scope.get(ROUTE_LABEL, "unmatched")
            services: Services | None = getattr(scope["app"].state, "services", None)
            if services is not None:
                services.metrics.observe_request(scope["method"], route, str(status), seconds)
            self.log.write(
                rid, {"method": scope["method"], "route": route, "status": status, "ms": round(seconds * 1000, 2)}
            )
            request_id.reset(token)


class BodySizeLimit:
    """Refuses bodies over ``max_bytes`` with 413, whether or not Content-Length is sent."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await _too_large(self.max_bytes, send)
        # Read the body up to the limit before the app sees it (FastAPI would turn an error
        # raised mid-read into a 400), then replay it.
        messages: list[Message] = []
        received = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                return await _too_large(self.max_bytes, send)
            if not message.get("more_body", False):
                break
        replay = iter(messages)

        async def replayed() -> Message:
            return next(replay, None) or await receive()

        await self.app(scope, replayed, send)


async def _too_large(limit: int, send: Send) -> None:
    body = json.dumps({"error": f"request body larger than {limit} bytes"}).encode()
    await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def error_response(
    status: int, message: str, details: list[dict[str, Any]] | None = None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body = ErrorOut(error=message, request_id=request_id.get(), details=details)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(WriteRefused)
    async def write_refused(_: Request, exc: WriteRefused) -> JSONResponse:
        return error_response(422, f"nothing was written: {exc}")

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [{"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg", "")} for e in exc.errors()]
        summary = "; ".join(f"{'.'.join(d['loc'])}: {d['msg']}" for d in details[:5])
        return error_response(422, f"invalid request: {summary}", details)
