"""Documents: batch upsert, read one, erase one. Writes take the one write path
(``Collection.write``) that Kafka and ingest take too."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from api.deps import Reader, ServicesDep, Writer
from api.models import DocumentBatch, DocumentOut, WriteResponse, WriteResultOut
from api.service import Services
from indexer.versioning import Outcome
from search.documents import MAX_ID_LENGTH, DocumentWrite

router = APIRouter(prefix="/documents", tags=["documents"])


@router.post("", dependencies=[Writer], response_model=WriteResponse)
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


@router.get("/{doc_id:path}", dependencies=[Reader], response_model=DocumentOut)
def get_document(svc: ServicesDep, doc_id: str) -> DocumentOut:
    doc = svc.collection.store.get(doc_id) if _possible_id(doc_id) else None
    if doc is None:
        raise HTTPException(404, f"document {doc_id!r} not found")
    return DocumentOut(**doc.to_dict())


@router.delete("/{doc_id:path}", dependencies=[Writer], response_model=WriteResponse)
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


def _possible_id(doc_id: str) -> bool:
    """Whether a write could have stored this id (a store must not be asked for one it cannot hold)."""
    return 0 < len(doc_id) <= MAX_ID_LENGTH and "\x00" not in doc_id


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
