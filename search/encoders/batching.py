"""Dynamic micro-batching of query encoding.

Concurrent requests each ask for one query's embedding; encoding them one by one leaves most
of the encoder's throughput unused (a batch costs far less per query; docs/architecture.md#micro-batching).
A worker thread takes the first waiting request and every other one queued while the previous
batch was being encoded, optionally waits up to ``max_wait_ms`` for more (up to ``max_batch``
queries in all), encodes them in one call and hands each caller its rows. With no added wait,
a lone query is encoded at once and batches grow by themselves as load rises.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future

import numpy as np

from search.encoders.base import Encoder, completed


class MicroBatchingEncoder(Encoder):
    def __init__(self, inner: Encoder, max_batch: int, max_wait_ms: float) -> None:
        self.inner = inner
        self.fingerprint = inner.fingerprint
        self.query_setup = inner.query_setup
        self.device = getattr(inner, "device", "cpu")
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self._requests: queue.Queue[tuple[list[str], Future[np.ndarray]]] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self.inner.encode_documents(texts)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.submit_queries(texts).result()

    def submit_queries(self, texts: Sequence[str]) -> Future[np.ndarray]:
        texts = list(texts)
        if len(texts) > self.max_batch:  # more than a batch: encoded at once, on the caller's thread
            return completed(self.inner.encode_queries, texts)
        self._ensure_worker()
        future: Future[np.ndarray] = Future()
        self._requests.put((texts, future))
        return future

    def _ensure_worker(self) -> None:
        if self._worker is None:
            with self._start_lock:
                if self._worker is None:
                    self._worker = threading.Thread(target=self._run, name="query-batcher", daemon=True)
                    self._worker.start()

    def _run(self) -> None:
        while True:
            batch = [self._requests.get()]
            size = len(batch[0][0])
            deadline = time.perf_counter() + self.max_wait
            while size < self.max_batch:
                remaining = deadline - time.perf_counter()
                try:
                    item = self._requests.get(timeout=remaining) if remaining > 0 else self._requests.get_nowait()
                except queue.Empty:
                    break
                batch.append(item)
                size += len(item[0])
            self._encode(batch)

    def _encode(self, batch: list[tuple[list[str], Future[np.ndarray]]]) -> None:
        texts = [t for texts, _ in batch for t in texts]
        try:
            vectors = self.inner.encode_queries(texts)
        except BaseException as exc:  # every caller gets the error; the worker lives on
            for _, future in batch:
                future.set_exception(exc)
            return
        start = 0
        for texts_of_one, future in batch:
            future.set_result(vectors[start : start + len(texts_of_one)])
            start += len(texts_of_one)
