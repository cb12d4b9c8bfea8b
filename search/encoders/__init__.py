"""Text encoders: one interface, a sentence-transformers backend and a DeepSeek backend."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from search.config import EncoderSettings
from search.encoders.base import Encoder, Fingerprint, resolve_device

log = logging.getLogger(__name__)


def load_encoder(settings: EncoderSettings) -> Encoder:
    setup_of = settings
    if settings.runtime == "auto":
        encoder, setup_of = _load_auto(settings)
    else:
        encoder = _load(settings)
    shaping = {"backend", "runtime", "int8_queries", "query_instruction", "max_seq_length", "pooling"}
    setup = {**setup_of.model_dump(mode="json", include=shaping), "model_file": getattr(encoder, "query_model", None)}
    encoder.query_setup = json.dumps(setup, sort_keys=True)
    return encoder


def int8_queries_apply(settings: EncoderSettings) -> bool:
    """Where ``runtime: auto`` sends queries through the int8 ONNX model: a mean-pooled
    sentence-transformers model (what the exported graph computes) on the CPU. Elsewhere (a
    GPU, the DeepSeek backend, another pooling) everything stays on torch."""
    if settings.backend != "sentence-transformers" or resolve_device(settings.device) != "cpu":
        return False
    from search.encoders.onnx import mean_pooled
    from search.encoders.sentence import resolve_model_path

    return mean_pooled(Path(resolve_model_path(settings.model)))


def _load_auto(settings: EncoderSettings) -> tuple[Encoder, EncoderSettings]:
    """The encoder for ``runtime: auto`` and the settings that describe its queries' path
    (cache keys name the path taken, never "auto")."""
    torch_settings = settings.model_copy(update={"runtime": "torch"})
    documents = _load(torch_settings)
    if not int8_queries_apply(settings):
        return documents, torch_settings
    from search.encoders.onnx import OnnxEncoder
    from search.encoders.split import SplitEncoder

    query_settings = settings.model_copy(update={"runtime": "onnx", "int8_queries": True})
    try:
        queries = OnnxEncoder(query_settings, queries_only=True)
    except Exception as exc:
        # auto is never worse than torch: an export that cannot be written (a read-only home,
        # say) or a runtime that fails to load leaves the queries on torch, with a warning.
        log.warning("encoder.runtime auto: no ONNX query model, queries stay on torch: %s", exc)
        return documents, torch_settings
    return SplitEncoder(documents, queries), query_settings


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
