"""On a replica: admin requests are answered by the primary, where reindex jobs run.

Every serving process accepts from the same port, so an admin request lands on any of them;
a replica relays it unchanged over the primary's private Unix socket and relays the answer.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from api.logs import request_id

ADMIN_PREFIX = "/admin/"
# Hop-by-hop or recomputed headers, and the request id (set once, by this process): not relayed.
_DROPPED = {b"host", b"content-length", b"transfer-encoding", b"connection", b"x-request-id"}


def primary_socket(data_dir: Path) -> Path:
    """Where the primary of ``data_dir`` listens for relayed requests."""
    return Path(data_dir).resolve() / "primary.sock"


class ForwardToPrimary:
    def __init__(self, app: ASGIApp, socket_path: Path, timeout_s: float = 30.0) -> None:
        self.app = app
        self.client = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=str(socket_path)), base_url="http://primary", timeout=timeout_s
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(ADMIN_PREFIX):
            return await self.app(scope, receive, send)
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        target = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        if scope["query_string"]:
            target += "?" + scope["query_string"].decode("latin-1")
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in _DROPPED]
        if (rid := request_id.get()) is not None:
            headers.append((b"x-request-id", rid.encode("latin-1")))  # one id in both processes' logs
        try:
            answer = await self.client.request(scope["method"], target, headers=headers, content=body)
        except httpx.HTTPError as exc:
            await _reply(
                send,
                503,
                [(b"content-type", b"application/json")],
                orjson.dumps({"error": f"the primary serving process did not answer: {exc!r}", "request_id": rid}),
            )
            return
        relayed = [(k, v) for k, v in answer.headers.raw if k.lower() not in _DROPPED]
        await _reply(send, answer.status_code, relayed, answer.content)


async def _reply(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
