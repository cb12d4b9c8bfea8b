"""Admin: reindex in the background and watch its job."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from api.deps import Admin, ServicesDep
from api.jobs import Job, JobConflict
from api.models import JobOut, ReindexRequest

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Admin])


@router.post("/reindex", response_model=JobOut, status_code=202)
def start_reindex(svc: ServicesDep, request: ReindexRequest | None = None) -> JobOut:
    """Rebuild the indexes in the background (optionally with a new encoder). Queries are
    answered from the current index until the new one is swapped in atomically."""
    try:
        job = svc.jobs.start(request.encoder if request else None)
    except JobConflict as exc:
        raise HTTPException(409, str(exc)) from None
    return _job_out(job)


@router.get("/jobs/{job_id}", response_model=JobOut)
def get_job(svc: ServicesDep, job_id: str) -> JobOut:
    job = svc.jobs.jobs.get(job_id)
    if job is None:
        raise HTTPException(404, f"job {job_id!r} not found")
    return _job_out(job)


def _job_out(job: Job) -> JobOut:
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
