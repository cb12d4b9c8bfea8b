"""The FastAPI service: search, documents, admin reindex, health, readiness, metrics."""

from __future__ import annotations

import gc
import json
import logging
import os
import secrets
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import ValidationError
from sqlalchemy import text
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.forward import ForwardToPrimary, primary_socket
from api.jobs import JobConflict, ReindexJobs
from api.front import ROUTE_LABEL, ResponsePages, SearchFront, header
from api.keys import KeyStore, Role, refusal
from api.logs import RequestLog, request_id
from api.metrics import Metrics
from api.models import (
    DocumentBatch,
    DocumentOut,
    ErrorOut,
    JobOut,
    ReindexRequest,
    SearchQuery,
    SearchRequest,
    SearchResponse,
    WriteResponse,
    WriteResultOut,
)
from api.search_response import limit_error, search_response
from indexer.collection import Collection, open_collection
from indexer.replica import GenerationFollower
from indexer.versioning import Outcome
from search.config import ApiSettings, Settings
from search.documents import MAX_ID_LENGTH, DocumentWrite
from search.store import WriteRefused
from streaming.consumer import DocumentConsumer
from streaming.metrics import StreamMetrics

log = logging.getLogger("api")

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (400, 401, 403, 404, 409, 413, 422)
}


@dataclass
class Services:
    settings: Settings
    collection: Collection
    keys: KeyStore
    jobs: ReindexJobs
    metrics: Metrics
    pages: ResponsePages | None = None  # finished GET /search bodies for the front (api/front.py)
    consumer: DocumentConsumer | None = None
    primary_dir: Path | None = None  # set on a replica: the data directory its primary serves


def create_app(
    settings: Settings, collection: Collection | None = None, consume: bool = False, primary_dir: Path | None = None
) -> FastAPI:
    """The app for one data directory. ``collection`` may be given (tests, several workers);
    else it is opened at start-up and closed at shutdown. ``consume`` runs the Kafka consumer
    in-process. ``primary_dir`` makes this process a replica of the primary serving that
    directory (api/workers.py): its API keys, its admin jobs and its published generation."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = collection is None
        if owned:
            app.state.services = _services(settings, open_collection(settings))
        svc: Services = app.state.services
        live = svc.collection
        if consume:
            svc.consumer = DocumentConsumer(settings, live, StreamMetrics(svc.metrics.registry))
            svc.consumer.start()
        stop_following = threading.Event()
        if settings.index.follow_interval_ms:
            generations = GenerationFollower(live, primary_dir) if primary_dir else None
            threading.Thread(
                target=_follow, args=(live, settings.index.follow_interval_ms / 1000, stop_following, generations),
                name="dss-follower", daemon=True,
            ).start()
        if not settings.api.auth:
            log.warning("authentication is OFF (api.auth=false): every client has admin rights; use only for a local sample")
        if owned:
            prepare_serving_process(settings.api)
        log.info("ready", extra={"documents": live.store.stats().live, "generation": live.generation.name})
        yield
        stop_following.set()
        if svc.consumer is not None:
            svc.consumer.stop()
        if owned:
            live.close()

    app = FastAPI(
        title="deepseek-search",
        version="0.1.0",
        description="Semantic search: dense (FAISS) + BM25 (tantivy) over a versioned document store.",
        lifespan=lifespan,
        responses=ERRORS,
        # FastAPI's own OpenTelemetry: off unless asked for (api.opentelemetry). Its check for
        # configured providers ran on every request (~7% of a cached search's time).
        telemetry={name: settings.api.opentelemetry for name in ("tracing", "metrics", "logs", "operation_spans")},
    )
    # Outermost last: request id and log line, then the fast lane for repeated searches.
    app.add_middleware(BodySizeLimit, max_bytes=settings.api.max_body_bytes)
    if primary_dir is not None:
        app.add_middleware(ForwardToPrimary, socket_path=primary_socket(primary_dir))
    app.add_middleware(SearchFront)
    app.add_middleware(RequestObserver)
    _install_error_handlers(app)
    _routes(app)
    if collection is not None:
        app.state.services = _services(settings, collection, primary_dir)
    return app


def prepare_serving_process(api: ApiSettings) -> None:
    """For a process that serves until it ends (called once start-up has loaded everything).

    What start-up loaded (models, tokenizer, libraries) lives as long as the process: out of
    the collector's generations, full collections stop pausing queries (measured: p99 at 32
    concurrent uncached queries 390 -> 228 ms). Collected first, so that no garbage is frozen.
    And the GIL changes hands every ``api.switch_interval_ms``: the encoder thread, back from
    ONNX Runtime, no longer waits up to Python's 5 ms for a ranking or HTTP thread."""
    gc.collect()
    gc.freeze()
    sys.setswitchinterval(api.switch_interval_ms / 1000)


def _services(settings: Settings, collection: Collection, primary_dir: Path | None = None) -> Services:
    metrics = Metrics()
    if collection.cache is not None:
        collection.cache.observer = metrics.observe_cache
    cache = settings.cache
    pages = ResponsePages(cache.memory_entries, cache.ttl_s) if cache.enabled and cache.memory_entries else None
    keys = KeyStore(primary_dir or settings.data_dir)  # one set of keys for every worker
    return Services(settings, collection, keys, ReindexJobs(collection), metrics, pages, primary_dir=primary_dir)


def _follow(
    collection: Collection, interval: float, stop: threading.Event, generations: GenerationFollower | None
) -> None:
    """Keep the indexes in step with writes made by other processes to a shared store (and,
    on a replica, with the generation its primary publishes)."""
    while not stop.wait(interval):
        try:
            if changes := collection.catch_up():
                log.info("followed the store", extra={"changes": changes})
            if generations is not None:
                generations.poll()
        except Exception:  # a store hiccup must not end the thread; the next poll retries
            log.exception("following the store failed")


# -- cross-cutting: request ids, logs, metrics, body limit, errors -------------------------


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
            self.log.write(rid, {"method": scope["method"], "route": route, "status": status, "ms": round(seconds * 1000, 2)})
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


def _error(status: int, message: str, details: list[dict[str, Any]] | None = None, headers=None) -> JSONResponse:
    body = ErrorOut(error=message, request_id=request_id.get(), details=details)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(WriteRefused)
    async def write_refused(_: Request, exc: WriteRefused) -> JSONResponse:
        return _error(422, f"nothing was written: {exc}")

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg", "")} for e in exc.errors()
        ]
        summary = "; ".join(f"{'.'.join(d['loc'])}: {d['msg']}" for d in details[:5])
        return _error(422, f"invalid request: {summary}", details)


# -- dependencies ----------------------------------------------------------------------------

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)


async def services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(services)]


def require(role: Role) -> Callable[..., None]:
    async def check(svc: ServicesDep, key: Annotated[str | None, Depends(api_key_header)]) -> None:
        if not svc.settings.api.auth:
            return
        refused = refusal(svc.keys, key, role)
        if refused is not None:
            status, message = refused
            raise HTTPException(status, message, {"WWW-Authenticate": "ApiKey"} if status == 401 else None)

    return check


Reader = Depends(require(Role.reader))
Writer = Depends(require(Role.writer))
Admin = Depends(require(Role.admin))


# -- routes ------------------------------------------------------------------------------------


def _routes(app: FastAPI) -> None:
    @app.get("/health", tags=["ops"])
    def health() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/ready", tags=["ops"])
    def ready(svc: ServicesDep) -> JSONResponse:
        """Readiness: index loaded and store reachable. Cache and broker only degrade it."""
        checks: dict[str, str] = {"index": f"loaded ({svc.collection.generation.name})"}
        ok = True
        try:
            with svc.collection.store.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            checks["store"] = "ok"
        except Exception as exc:
            ok, checks["store"] = False, f"unreachable: {type(exc).__name__}"
        checks["cache"] = _cache_status(svc.collection)
        consumer = svc.consumer
        if consumer is None:
            checks["broker"] = "not configured"
        else:
            status = consumer.status
            checks["broker"] = status.state + (f": {status.reason}" if status.reason else "")
        worker = {"role": "replica" if svc.primary_dir else "primary", "pid": os.getpid()}
        body = {"status": "ready" if ok else "unavailable", "checks": checks, "worker": worker}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics", tags=["ops"], dependencies=[Admin])
    def metrics(svc: ServicesDep) -> Response:
        """Prometheus metrics (admin)."""
        m, collection = svc.metrics, svc.collection
        m.update_cache_ratios()
        stats = collection.store.stats()
        m.documents.labels("live").set(stats.live)
        m.documents.labels("deleted").set(stats.deleted)
        m.index_size.labels("vector").set(collection.vectors.count)
        m.index_size.labels("lexical").set(collection.lexical.count)
        for state, n in svc.jobs.counts().items():
            m.reindex_jobs.labels(state).set(n)
        running = svc.jobs.running()
        m.reindex_progress.set(running.progress if running else 0)
        return Response(m.export(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/search", tags=["search"], dependencies=[Reader], response_model=SearchResponse)
    async def search_get(svc: ServicesDep, http: Request, params: Annotated[SearchQuery, Query()]) -> Response:
        """Search with query parameters (see POST /search for the JSON form). Most of these
        requests are answered by the front (api/front.py) before they reach this route."""
        try:  # what the JSON form would refuse (a NUL, a date out of range) is a 422 here too
            request = params.to_request()
        except ValidationError as exc:
            raise RequestValidationError(exc.errors()) from None
        return await _search(svc, request, http.scope["query_string"])

    @app.post("/search", tags=["search"], dependencies=[Reader], response_model=SearchResponse)
    async def search_post(svc: ServicesDep, request: SearchRequest) -> Response:
        """Search with filters, per-request ranking weights and explanations. Modes: dense,
        lexical, hybrid (fixed weights), rrf, dynamic (weights per query) or default (dynamic)."""
        return await _search(svc, request)

    @app.post("/documents", tags=["documents"], dependencies=[Writer], response_model=WriteResponse)
    def upsert_documents(svc: ServicesDep, batch: DocumentBatch) -> WriteResponse:
        """Batch upsert. Older versions than the stored ones are reported as stale, not applied."""
        limits = svc.settings
        if len(batch.documents) > limits.api.max_batch_documents:
            raise HTTPException(413, f"at most {limits.api.max_batch_documents} documents per request")
        for doc in batch.documents:
            if len(doc.title) + len(doc.text) > limits.ingest.max_text_chars:
                raise HTTPException(413, f"document {doc.id!r} is longer than {limits.ingest.max_text_chars} characters")
        changes = [DocumentWrite(**doc.model_dump(), op="upsert") for doc in batch.documents]
        return _write(svc, changes)

    @app.get("/documents/{doc_id:path}", tags=["documents"], dependencies=[Reader], response_model=DocumentOut)
    def get_document(svc: ServicesDep, doc_id: str) -> DocumentOut:
        doc = svc.collection.store.get(doc_id) if _possible_id(doc_id) else None
        if doc is None:
            raise HTTPException(404, f"document {doc_id!r} not found")
        return DocumentOut(**doc.to_dict())

    @app.delete("/documents/{doc_id:path}", tags=["documents"], dependencies=[Writer], response_model=WriteResponse)
    def delete_document(
        svc: ServicesDep, doc_id: str, version: Annotated[int | None, Query(ge=0, le=2**62)] = None
    ) -> WriteResponse:
        """Erase a document: its text, metadata and embedding leave the store and every index.
        A tombstone keeps the id and version so a late older write cannot bring it back."""
        if not _possible_id(doc_id):
            raise HTTPException(404, "document not found")
        result = _write(svc, [DocumentWrite(id=doc_id, op="delete", version=version)])
        if result.results[0].reason == "not found":
            raise HTTPException(404, f"document {doc_id!r} not found")
        return result

    @app.post("/admin/reindex", tags=["admin"], dependencies=[Admin], response_model=JobOut, status_code=202)
    def start_reindex(svc: ServicesDep, request: ReindexRequest | None = None) -> JobOut:
        """Rebuild the indexes in the background (optionally with a new encoder). Queries are
        answered from the current index until the new one is swapped in atomically."""
        try:
            job = svc.jobs.start(request.encoder if request else None)
        except JobConflict as exc:
            raise HTTPException(409, str(exc)) from None
        return _job_out(job)

    @app.get("/admin/jobs/{job_id}", tags=["admin"], dependencies=[Admin], response_model=JobOut)
    def get_job(svc: ServicesDep, job_id: str) -> JobOut:
        job = svc.jobs.jobs.get(job_id)
        if job is None:
            raise HTTPException(404, f"job {job_id!r} not found")
        return _job_out(job)


def _possible_id(doc_id: str) -> bool:
    """Whether a write could have stored this id (a store must not be asked for one it cannot hold)."""
    return 0 < len(doc_id) <= MAX_ID_LENGTH and "\x00" not in doc_id


def _cache_status(collection: Collection) -> str:
    if collection.cache is None:
        return "disabled"
    redis_level = collection.cache.redis()
    if redis_level is None:
        return "ok (no redis level)"
    return "ok" if redis_level.ping() else "degraded: redis unreachable, bypassed"


async def _search(svc: Services, request: SearchRequest, query_string: bytes | None = None) -> Response:
    if (refused := limit_error(svc.settings.api, request)) is not None:
        raise HTTPException(422, refused)
    return await search_response(svc, request, query_string)


def _write(svc: Services, changes: list[DocumentWrite]) -> WriteResponse:
    report = svc.collection.write(changes)
    for outcome in Outcome:
        if n := report.count(outcome):
            svc.metrics.writes.labels(outcome.value).inc(n)
    return WriteResponse(
        applied=report.applied,
        unchanged=report.unchanged,
        stale=len(report.stale),
        seq=report.last_seq,
        results=[
            WriteResultOut(id=r.id, op=r.op, outcome=r.outcome.value, version=r.version, reason=r.reason)
            for r in report.results
        ],
    )


def _job_out(job) -> JobOut:
    return JobOut(
        id=job.id,
        state=job.state,
        progress=round(job.progress, 4),
        done=job.done,
        total=job.total,
        created_at=job.created_at,
        finished_at=job.finished_at,
        error=job.error,
        result=job.result,
    )
