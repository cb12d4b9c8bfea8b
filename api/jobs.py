"""Background reindex jobs: one at a time, tracked by id."""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from indexer.collection import Collection
from indexer.reindex import rebuild_live
from search.config import EncoderSettings

log = logging.getLogger(__name__)


class JobConflict(RuntimeError):
    """A reindex is already running."""


@dataclass
class Job:
    id: str
    state: str = "queued"  # queued | running | succeeded | failed
    done: int = 0
    total: int = 0
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished_at: datetime | None = None
    error: str | None = None
    result: dict[str, Any] | None = None

    @property
    def progress(self) -> float:
        if self.state == "succeeded":
            return 1.0
        return min(1.0, self.done / self.total) if self.total else 0.0


class ReindexJobs:
    def __init__(self, collection: Collection) -> None:
        self.collection = collection
        self.jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def running(self) -> Job | None:
        return next((j for j in self.jobs.values() if j.state in ("queued", "running")), None)

    def start(self, encoder: EncoderSettings | None) -> Job:
        with self._lock:
            if (busy := self.running()) is not None:
                raise JobConflict(f"reindex job {busy.id} is still {busy.state}")
            job = Job(id=uuid.uuid4().hex[:12])
            self.jobs[job.id] = job
        threading.Thread(target=self._run, args=(job, encoder), name=f"reindex-{job.id}", daemon=True).start()
        return job

    def _run(self, job: Job, encoder: EncoderSettings | None) -> None:
        job.state = "running"
        job.total = self.collection.store.stats().live

        def progress(done: int, total: int) -> None:
            job.done, job.total = done, max(total, 1)

        try:
            report = rebuild_live(self.collection, encoder, progress)
        except Exception as exc:  # the job reports the failure; the live index is untouched
            log.exception("reindex failed", extra={"job": job.id})
            job.state, job.error = "failed", f"{type(exc).__name__}: {exc}"
        else:
            job.state = "succeeded"
            job.result = {
                "generation": report.generation.name,
                "documents": report.documents,
                "seq": report.seq,
                "encoder": report.encoder,
            }
            log.info("reindex finished", extra={"job": job.id, **job.result})
        job.finished_at = datetime.now(UTC)

    def counts(self) -> dict[str, int]:
        states = ("queued", "running", "succeeded", "failed")
        return {s: sum(1 for j in self.jobs.values() if j.state == s) for s in states}
