"""ONNX Runtime backend for sentence-transformers models with mean pooling (the packaged
all-MiniLM-L6-v2 among them): the faster CPU path for query encoding.

The model is exported once from the local checkpoint (transformer + mean pooling + L2
normalisation in one graph) and cached on disk. The int8 model fuses layer normalisation and
bias + GELU into single kernels, then quantises the weights of every MatMul to int8, per output
channel (dynamic quantisation: activations are quantised on the fly, per run, so an int8 model
encodes one text per run to keep vectors independent of their batch mates). ``onnx-int8``
encodes everything with it; ``onnx`` with ``int8_queries`` only the queries, as does ``auto``
(the default), which leaves the documents on torch (``split.py``). fp32 ONNX computes torch's
vectors; int8 queries stay close enough to fp32 documents to keep retrieval quality, at a
fraction of the cost; quantising every op type, not just MatMul, did not (figures in
docs/architecture.md#encoder-runtimes and docs/history.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from search.config import EncoderSettings
from search.encoders.base import Encoder, Fingerprint, l2_normalise
from search.encoders.choice import FastestOption
from search.encoders.sentence import resolve_model_path

if TYPE_CHECKING:
    import onnxruntime as ort

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
DEFAULT_CACHE = Path.home() / ".cache" / "deepseek-search" / "onnx"
log = logging.getLogger(__name__)


def mean_pooled(path: Path) -> bool:
    """Whether the sentence-transformers model at ``path`` pools by the mean (what the
    exported graph computes)."""
    config = path / "1_Pooling" / "config.json"
    return config.is_file() and bool(json.loads(config.read_text()).get("pooling_mode_mean_tokens"))


def _check_mean_pooling(path: Path) -> None:
    if not mean_pooled(path):
        raise ValueError(f"encoder.runtime onnx supports mean-pooled sentence-transformers models; {path} is not one")


def export(path: Path, target: Path) -> None:
    """Write the model (transformer, mean pooling, normalisation) as one ONNX graph."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(str(path), local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):  # type: ignore[no-untyped-def]
            hidden = self.model(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, dim=-1)

    sample = tokenizer(["a query", "a somewhat longer second text"], padding=True, return_tensors="pt")
    axes = {name: {0: "batch", 1: "tokens"} for name in INPUTS} | {"embedding": {0: "batch"}}
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = _partial(target)
    # The tracer warns about Python-level branches in the transformer's masking code. The graph
    # is held to torch by the tests (cosine 0.9999 on texts from one token to a truncated one),
    # so a first start's log need not carry those warnings.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # type: ignore[attr-defined]  # not in torch.jit's __all__
        warnings.filterwarnings("ignore", message="Exporting aten::index operator", category=UserWarning)
        torch.onnx.export(
            Pooled(),
            tuple(sample[name] for name in INPUTS),
            str(partial),
            input_names=list(INPUTS),
            output_names=["embedding"],
            dynamic_axes=axes,
            dynamo=False,
        )
    partial.replace(target)


def fuse(source: Path, target: Path, config: dict[str, Any]) -> None:
    """Layer normalisation and bias + GELU each as one kernel (ONNX Runtime's transformer
    optimiser; attention stays as exported): faster, with the same vectors to four digits of
    cosine. Fusing attention too was slower, since its Q/K/V projections then stay fp32 or run
    as QAttention (docs/history.md)."""
    from onnxruntime.transformers import optimizer

    # The BERT optimiser's fusions are pattern matches: a graph they do not match is left as is.
    model = optimizer.optimize_model(
        str(source),
        model_type="bert",
        num_heads=int(config.get("num_attention_heads", 0)),
        hidden_size=int(config.get("hidden_size", 0)),
        opt_level=1,  # ONNX Runtime's basic, hardware-independent rewrites only
    )
    model.save_model_to_file(str(target))


def quantise(source: Path, target: Path) -> None:
    """Every MatMul weight int8, per output channel; activations quantised at run time."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    partial = _partial(target)
    quantize_dynamic(
        str(source),
        str(partial),
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["MatMul"],
        # Shape inference does not know the fused kernels' output types: they are float.
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    partial.replace(target)


def _partial(target: Path) -> Path:
    """Where this process writes ``target`` before moving it into place: its own file, so that
    processes starting side by side on an empty cache (``dss serve --workers N``) never write
    into one another's; each move is atomic and the last one wins."""
    return target.with_name(f"{target.name}.{os.getpid()}.partial")


def model_file(path: Path, int8: bool, cache_dir: Path) -> Path:
    """The cached ONNX file for the checkpoint at ``path`` (exported on first use)."""
    weights = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
    identity = [str(path.resolve())] + [f"{w.name}:{w.stat().st_size}:{w.stat().st_mtime_ns}" for w in weights]
    stem = hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:16]
    fp32 = cache_dir / f"{stem}.onnx"
    if not fp32.is_file():
        export(path, fp32)
    if not int8:
        return fp32
    q8 = cache_dir / f"{stem}.int8-matmul-fused.onnx"  # named by recipe: a file of another recipe is not reused
    if not q8.is_file():
        fused = _partial(cache_dir / f"{stem}.fused.onnx")
        fuse(fp32, fused, json.loads((path / "config.json").read_text()))
        try:
            quantise(fused, q8)
        finally:
            fused.unlink(missing_ok=True)
    return q8


class OnnxEncoder(Encoder):
    def __init__(self, settings: EncoderSettings, queries_only: bool = False) -> None:
        """``queries_only``: no document session (another encoder encodes the documents)."""
        import onnxruntime as ort
        from transformers import AutoTokenizer

        self.settings = settings
        self.device = "cpu"
        path = Path(resolve_model_path(settings.model))
        _check_mean_pooling(path)
        wrapper = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        config = path / "sentence_bert_config.json"
        limit = json.loads(config.read_text()).get("max_seq_length", 512) if config.is_file() else 512
        self.max_length = settings.max_seq_length or limit
        # The Rust tokenizer itself: the transformers wrapper around it is a noticeable share of
        # a query's encoding,
        # a tenth of the query encoder's time. Same ids (tested).
        self.tokenizer = wrapper.backend_tokenizer
        self.tokenizer.enable_truncation(self.max_length)
        self.tokenizer.enable_padding(pad_id=wrapper.pad_token_id, pad_token=wrapper.pad_token)
        int8 = settings.runtime == "onnx-int8"
        cache_dir = settings.onnx_cache_dir or DEFAULT_CACHE

        def session(onnx_file: Path, threads: int | None) -> ort.InferenceSession:
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            if threads:
                options.intra_op_num_threads = threads
            # Idle pool threads would otherwise spin for work: on a small machine that burns
            # the cores the request path needs, even at one query at a time.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            return ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])

        query_int8 = int8 or settings.int8_queries
        document_file, query_file = model_file(path, int8, cache_dir), model_file(path, query_int8, cache_dir)
        query_threads = settings.query_threads or settings.threads
        self.session = None if queries_only else session(document_file, settings.threads)
        if queries_only or query_file != document_file or query_threads != settings.threads:
            self.query_session = session(query_file, query_threads)
        else:
            self.query_session = self.session
        self.query_model = query_file.name  # names the int8 recipe (part of the query setup)
        # Dynamic quantisation scales activations per batch: a text encoded beside others
        # would get a vector that depends on them (for a query: on the load). One text per run
        # keeps int8 vectors deterministic, and is no slower on the CPU (no padding).
        self.document_batch = 1 if int8 else settings.batch_size
        self.query_batch = 1 if query_int8 else settings.batch_size
        dimension = int(self.query_session.get_outputs()[0].shape[-1])
        # fp32 ONNX computes the same vectors as torch (cosine 0.99999): same fingerprint, no
        # reindex needed to switch. int8 document vectors are approximations: their own
        # fingerprint (int8 queries alone keep the fp32 one: the documents are exact).
        pooling = "model-int8" if int8 else "model"
        self.fingerprint = Fingerprint("sentence-transformers", Path(settings.model).name, dimension, pooling)
        # A query answered alone may use the cores the rest of the request path leaves idle.
        # "auto": the first lone queries take turns on the query threads, 1, 2 and 4 (up to the
        # cores there are), and the fastest is kept. The vectors are the same on any of them.
        lone = settings.lone_query_threads
        counts: list[int | None]
        if not query_threads:  # the runtime's default: every core already
            counts = [query_threads]
        elif lone == "auto":
            counts = [query_threads, *(n for n in (1, 2, 4) if n <= len(os.sched_getaffinity(0)))]
        else:
            counts = [lone]
        self.lone_threads = FastestOption(counts)  # the first is the default
        self.lone_sessions = {
            n: self.query_session if n == query_threads else session(query_file, n) for n in self.lone_threads.options
        }

    def _encode(self, texts: Sequence[str], session: ort.InferenceSession, batch_size: int) -> np.ndarray:
        texts = list(texts)
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths pad less
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            encodings = self.tokenizer.encode_batch([texts[i] for i in rows])
            feeds = {
                "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
            }
            out[rows] = session.run(None, feeds)[0]
        return l2_normalise(out)

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        if self.session is None:
            raise RuntimeError("this ONNX encoder was made for queries only")
        return self._encode(texts, self.session, self.document_batch)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) == 1:
            return self._encode_one_query(texts[0])
        return self._encode(self._instructed(texts), self.query_session, self.query_batch)

    def _encode_one_query(self, text: str) -> np.ndarray:
        """A batch of one query may run on more threads (``lone_query_threads``): the micro-
        batcher sends one when nothing else waits. The same vector on any thread count:
        identical bit for bit (tested)."""
        threads = self.lone_threads.pick()
        started = time.perf_counter()
        vector = self._encode(self._instructed([text]), self.lone_sessions[threads], 1)
        if self.lone_threads.record(threads, time.perf_counter() - started):
            log.info(
                "threads for a query encoded alone, measured on the first such queries",
                extra={
                    "ms_by_threads": {n: round(m * 1000, 3) for n, m in self.lone_threads.medians.items()},
                    "chosen": self.lone_threads.chosen,
                },
            )
        return vector

    def _instructed(self, texts: Sequence[str]) -> Sequence[str]:
        prefix = self.settings.query_instruction
        return [prefix + t for t in texts] if prefix else texts
