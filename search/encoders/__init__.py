"""Text encoders: one interface, a sentence-transformers backend and a DeepSeek backend."""

from __future__ import annotations

import json

from search.config import EncoderSettings
from search.encoders.base import Encoder, Fingerprint


def load_encoder(settings: EncoderSettings) -> Encoder:
    encoder = _load(settings)
    shaping = {"backend", "runtime", "int8_queries", "query_instruction", "max_seq_length", "pooling"}
    setup = {**settings.model_dump(mode="json", include=shaping), "model_file": getattr(encoder, "query_model", None)}
    encoder.query_setup = json.dumps(setup, sort_keys=True)
    return encoder


def _load(settings: EncoderSettings) -> Encoder:
    if settings.threads:
        import torch

        torch.set_num_threads(settings.threads)
    if settings.backend == "deepseek":
        from search.encoders.deepseek import DeepSeekEncoder

        return DeepSeekEncoder(settings)
    if settings.runtime != "torch":
        from search.encoders.onnx import OnnxEncoder

        return OnnxEncoder(settings)
    from search.encoders.sentence import SentenceTransformerEncoder

    return SentenceTransformerEncoder(settings)


__all__ = ["Encoder", "Fingerprint", "load_encoder"]
