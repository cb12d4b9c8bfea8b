"""One model, each side on its faster runtime (``encoder.runtime: auto`` on the CPU): documents
through torch, queries through the int8 ONNX model.

Both give vectors of one space under one fingerprint: the documents' are the model's own, the
queries' stay close to fp32 with no loss of retrieval quality. On the CPU torch encodes documents
faster than ONNX fp32, and the int8 model encodes queries faster than either fp32 runtime
(docs/architecture.md#encoder-runtimes).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from search.encoders.base import Encoder


class SplitEncoder(Encoder):
    def __init__(self, documents: Encoder, queries: Encoder) -> None:
        if documents.fingerprint != queries.fingerprint:
            raise ValueError(f"documents' {documents.fingerprint} and queries' {queries.fingerprint} vectors differ")
        self.documents, self.queries = documents, queries
        self.fingerprint = documents.fingerprint
        self.device = documents.device
        self.query_model = getattr(queries, "query_model", None)  # names the query side (its cache keys)

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self.documents.encode_documents(texts)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.queries.encode_queries(texts)
