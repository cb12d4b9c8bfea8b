"""The encoder interface shared by every backend."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Fingerprint:
    """What makes two encoders' vectors comparable. Stored with the index and each embedding."""

    backend: str
    model: str
    dimension: int
    pooling: str

    def __str__(self) -> str:
        return f"{self.backend}:{self.model}:{self.dimension}:{self.pooling}"

    @classmethod
    def parse(cls, text: str) -> Fingerprint:
        backend, model, dimension, pooling = text.rsplit(":", 3)
        return cls(backend, model, int(dimension), pooling)


class Encoder(ABC):
    """Turns texts into float32 ``[n, d]`` L2-normalised vectors."""

    fingerprint: Fingerprint
    device: str
    # What decides a query's vector beyond the fingerprint (which only says which vectors are
    # comparable): the runtime, an int8 query model, the query instruction. Part of the keys of
    # cached query embeddings and result pages; set by load_encoder.
    query_setup: str = ""

    @property
    def dimension(self) -> int:
        return self.fingerprint.dimension

    @property
    def query_identity(self) -> str:
        return f"{self.fingerprint}|{self.query_setup}"

    @abstractmethod
    def encode_documents(self, texts: Sequence[str]) -> np.ndarray: ...

    @abstractmethod
    def encode_queries(self, texts: Sequence[str]) -> np.ndarray: ...

    def submit_queries(self, texts: Sequence[str]) -> Future[np.ndarray]:
        """The queries' vectors as a future, for callers that must not block on the encoder
        (the async query path). Here computed at once; a batching encoder queues them."""
        return completed(self.encode_queries, texts)


def completed(fn: Callable[[Sequence[str]], np.ndarray], texts: Sequence[str]) -> Future[np.ndarray]:
    """A future already holding ``fn(texts)`` or the error it raised."""
    future: Future[np.ndarray] = Future()
    try:
        future.set_result(fn(texts))
    except Exception as exc:
        future.set_exception(exc)
    return future


def resolve_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"encoder.device is {requested!r} but torch sees no CUDA device")
    return requested


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    normalised: np.ndarray = vectors / np.maximum(norms, 1e-12)
    return normalised
