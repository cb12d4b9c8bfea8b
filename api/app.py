"""The FastAPI service: ``create_app`` wires the routers, the middleware and the services'
lifetime (open the collection, follow the store, run the in-process consumer)."""

from __future__ import annotations

import gc
import logging
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from api.forward import ForwardToPrimary, primary_socket
from api.front import SearchFront
from api.middleware import BodySizeLimit, RequestObserver, install_error_handlers
from api.models import ErrorOut
from api.routes import admin, documents, ops, search
from api.service import Services, open_services, services_for
from indexer.collection import Collection
from indexer.replica import GenerationFollower
from search.config import ApiSettings, Settings
from streaming.consumer import DocumentConsumer
from streaming.metrics import StreamMetrics

log = logging.getLogger("api")

ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorOut} for code in (400, 401, 403, 404, 409, 413, 422)}


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
            app.state.services = open_services(settings)
        svc: Services = app.state.services
        live = svc.collection
        if consume:
            svc.consumer = DocumentConsumer(settings, live, StreamMetrics(svc.metrics.registry))
            svc.consumer.start()
        stop_following = threading.Event()
        if settings.index.follow_interval_ms:
            generations = GenerationFollower(live, primary_dir) if primary_dir else None
            threading.Thread(
                target=_follow,
                args=(live, settings.index.follow_interval_ms / 1000, stop_following, generations),
                name="dss-follower",
                daemon=True,
            ).start()
        if not settings.api.auth:
            log.warning(
                "authentication is OFF (api.auth=false): every client has admin rights; use only for a local sample"
            )
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
        # FastAPI's own OpenTelemetry: off unless asked for (api.opentelemetry); its checks
        # for configured providers run on every request.
        telemetry={
            "tracing": settings.api.opentelemetry,
            "metrics": settings.api.opentelemetry,
            "logs": settings.api.opentelemetry,
            "operation_spans": settings.api.opentelemetry,
        },
    )
    # Outermost last: request id and log line, then the fast lane for GET searches.
    app.add_middleware(BodySizeLimit, max_bytes=settings.api.max_body_bytes)
    if primary_dir is not None:
        app.add_middleware(ForwardToPrimary, socket_path=primary_socket(primary_dir))
    app.add_middleware(SearchFront)
    app.add_middleware(RequestObserver)
    install_error_handlers(app)
    for router in (ops.router, search.router, documents.router, admin.router):
        app.include_router(router)
    if collection is not None:
        app.state.services = services_for(settings, collection, primary_dir)
    return app


def prepare_serving_process(api: ApiSettings) -> None:
    """For a process that serves until it ends (called once start-up has loaded everything).

    What start-up loaded (models, tokenizer, libraries) lives as long as the process: out of
    the collector's generations, full collections stop pausing queries (docs/architecture.md).
    Collected first, so that no garbage is frozen. And the GIL changes hands every
    ``api.switch_interval_ms``: the encoder thread, back from ONNX Runtime, does not wait
    Python's default 5 ms for a ranking or HTTP thread."""
    gc.collect()
    gc.freeze()
    sys.setswitchinterval(api.switch_interval_ms / 1000)


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
