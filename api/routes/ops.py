"""Operations: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import os

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text

from api.deps import Admin, ServicesDep
from indexer.collection import Collection

router = APIRouter(tags=["ops"])


@router.get("/health")
def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/ready")
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


@router.get("/metrics", dependencies=[Admin])
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


def _cache_status(collection: Collection) -> str:
    if collection.cache is None:
        return "disabled"
    redis_level = collection.cache.redis()
    if redis_level is None:
        return "ok (no redis level)"
    return "ok" if redis_level.ping() else "degraded: redis unreachable, bypassed"
