"""Encoders: the packaged MiniLM (offline) and the DeepSeek backend on a tiny random model."""

import os
from pathlib import Path

import numpy as np
import onnx
import pytest

from search.config import EncoderSettings
from search.encoders import load_encoder
from search.encoders.base import Fingerprint
from tests.tiny_deepseek import build_tiny_deepseek


def test_packaged_minilm_loads_offline_and_normalises(minilm) -> None:
    assert minilm.fingerprint == Fingerprint("sentence-transformers", "all-MiniLM-L6-v2", 384, "model")
    vectors = minilm.encode_documents(["a wing in a slipstream", "heat transfer", "最新的手机"])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    related, unrelated = minilm.encode_queries(["lift of an aircraft wing", "sourdough bread recipe"])
    assert vectors[0] @ related > vectors[0] @ unrelated
    assert minilm.encode_queries([]).shape == (0, 384)


@pytest.fixture(scope="module")
def tiny_deepseek(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_deepseek(tmp_path_factory.mktemp("tiny-deepseek"))


@pytest.fixture(params=["last", "mean"])
def deepseek(request: pytest.FixtureRequest, tiny_deepseek: Path):
    return load_encoder(
        # the CPU path in fp32 everywhere; the CUDA path is test_deepseek_bf16_on_cuda
        EncoderSettings(backend="deepseek", model=str(tiny_deepseek), pooling=request.param, batch_size=3, device="cpu")
    )


TEXTS = [
    "wing lift",
    "the supersonic flow of heat in a boundary layer of the wing at high pressure",
    "search engine",
    "a new phone with a laptop battery and a camera screen",
    "index",
]


def test_deepseek_shapes_normalisation_and_fingerprint(deepseek, tiny_deepseek: Path) -> None:
    vectors = deepseek.encode_documents(TEXTS)
    assert vectors.shape == (5, 32) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert deepseek.device == "cpu" and str(deepseek.dtype) == "torch.float32"
    assert deepseek.fingerprint == Fingerprint("deepseek", tiny_deepseek.name, 32, deepseek.settings.pooling)


def test_deepseek_padding_and_batching_do_not_change_vectors(deepseek) -> None:
    batched = deepseek.encode_documents(TEXTS)  # batch_size 3: mixed lengths, padded
    one_by_one = np.vstack([deepseek.encode_documents([t]) for t in TEXTS])
    assert np.allclose(batched, one_by_one, atol=1e-5)
    # Padding the short text next to a long one leaves its vector as it was alone.
    alone = deepseek.encode_documents(["wing lift"])[0]
    padded = deepseek.encode_documents(["wing lift", TEXTS[1] * 3])[0]
    assert np.allclose(alone, padded, atol=1e-5)


def test_deepseek_query_instruction_applies_to_queries_only(tiny_deepseek: Path) -> None:
    plain = load_encoder(EncoderSettings(backend="deepseek", model=str(tiny_deepseek)))
    instructed = load_encoder(
        EncoderSettings(backend="deepseek", model=str(tiny_deepseek), query_instruction="search query: ")
    )
    assert np.allclose(plain.encode_documents(TEXTS), instructed.encode_documents(TEXTS), atol=1e-6)
    assert not np.allclose(plain.encode_queries(TEXTS), instructed.encode_queries(TEXTS), atol=1e-3)


def test_deepseek_last_and_mean_pooling_differ(tiny_deepseek: Path) -> None:
    last = load_encoder(EncoderSettings(backend="deepseek", model=str(tiny_deepseek), pooling="last"))
    mean = load_encoder(EncoderSettings(backend="deepseek", model=str(tiny_deepseek), pooling="mean"))
    assert not np.allclose(last.encode_documents(TEXTS), mean.encode_documents(TEXTS), atol=1e-3)
    # Last-token pooling of a one-token text equals that token's state, same as its mean.
    assert np.allclose(last.encode_documents(["wing"]), mean.encode_documents(["wing"]), atol=1e-5)


def test_deepseek_needs_a_local_directory() -> None:
    with pytest.raises(ValueError, match="local DeepSeek checkpoint directory"):
        load_encoder(EncoderSettings(backend="deepseek", model="deepseek-ai/deepseek-llm-7b-base"))


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA")
def test_deepseek_bf16_on_cuda(tiny_deepseek: Path) -> None:
    encoder = load_encoder(EncoderSettings(backend="deepseek", model=str(tiny_deepseek), device="cuda"))
    assert str(encoder.dtype) == "torch.bfloat16"
    cpu = load_encoder(EncoderSettings(backend="deepseek", model=str(tiny_deepseek), device="cpu"))
    gpu_vectors, cpu_vectors = encoder.encode_documents(TEXTS), cpu.encode_documents(TEXTS)
    assert np.all(np.sum(gpu_vectors * cpu_vectors, axis=1) > 0.98)


@pytest.mark.parametrize("runtime, floor", [("onnx", 0.9999), ("onnx-int8", 0.98)])
def test_onnx_runtime_matches_torch(tmp_path, minilm, runtime: str, floor: float) -> None:
    from search.config import EncoderSettings
    from search.encoders import load_encoder

    encoder = load_encoder(EncoderSettings(runtime=runtime, onnx_cache_dir=tmp_path, batch_size=4))
    texts = ["boundary layer transition on a swept wing", "最新的开源大模型", "x", "heat " * 300]
    cosine = (encoder.encode_queries(texts) * minilm.encode_queries(texts)).sum(axis=1)
    assert cosine.min() >= floor, cosine
    expected = "model-int8" if runtime == "onnx-int8" else "model"
    assert encoder.fingerprint.pooling == expected and encoder.dimension == minilm.dimension
    assert list(tmp_path.glob("*.onnx"))  # exported once, reused by the next start
    # It tokenizes with the Rust tokenizer directly: the same ids, padding and truncation
    # as the transformers tokenizer it comes from.
    from transformers import AutoTokenizer

    from search.encoders.sentence import resolve_model_path

    wrapper = AutoTokenizer.from_pretrained(resolve_model_path("all-MiniLM-L6-v2"))
    expected_ids = wrapper(texts, padding=True, truncation=True, max_length=encoder.max_length)
    encodings = encoder.tokenizer.encode_batch(texts)
    assert [e.ids for e in encodings] == expected_ids["input_ids"]
    assert [e.attention_mask for e in encodings] == expected_ids["attention_mask"]
    assert len(encodings[-1].ids) == encoder.max_length  # the long text was cut


def test_int8_queries_keep_the_fp32_documents_and_fingerprint(tmp_path, minilm) -> None:
    from search.config import EncoderSettings
    from search.encoders import load_encoder

    encoder = load_encoder(EncoderSettings(runtime="onnx", int8_queries=True, onnx_cache_dir=tmp_path))
    texts = ["boundary layer transition on a swept wing", "最新的开源大模型", "heat " * 300]
    documents = (encoder.encode_documents(texts) * minilm.encode_documents(texts)).sum(axis=1)
    queries = (encoder.encode_queries(texts) * minilm.encode_queries(texts)).sum(axis=1)
    assert documents.min() >= 0.9999, documents  # documents: the fp32 model
    assert queries.min() >= 0.98 and queries.max() < 0.99999, queries  # queries: the int8 model
    assert encoder.fingerprint.pooling == "model"  # an fp32 index accepts it
    alone = np.stack([encoder.encode_queries([t])[0] for t in texts])
    np.testing.assert_array_equal(encoder.encode_queries(texts), alone)  # batch mates change nothing
    # The int8 query model runs fused layer normalisation and bias + GELU kernels.
    ops = {node.op_type for node in onnx.load(str(tmp_path / encoder.query_model)).graph.node}
    assert {"LayerNormalization", "BiasGelu", "MatMulInteger"} <= ops, ops
    with pytest.raises(ValueError, match="int8_queries needs runtime: onnx"):
        EncoderSettings(runtime="torch", int8_queries=True)


def test_auto_runtime_puts_documents_on_torch_and_queries_on_the_int8_model(tmp_path, minilm, monkeypatch) -> None:
    import json

    import search.encoders as encoders
    from search.encoders.split import SplitEncoder

    assert EncoderSettings().runtime == "auto"  # the default
    encoder = load_encoder(EncoderSettings(device="cpu", onnx_cache_dir=tmp_path))
    assert isinstance(encoder, SplitEncoder) and encoder.fingerprint == minilm.fingerprint  # one index
    assert encoder.queries.session is None  # no fp32 ONNX session beside torch (~95 MB)
    with pytest.raises(RuntimeError, match="queries only"):
        encoder.queries.encode_documents(["a document"])
    texts = ["boundary layer transition on a swept wing", "最新的开源大模型", "heat " * 300]
    np.testing.assert_allclose(encoder.encode_documents(texts), minilm.encode_documents(texts), atol=1e-5)
    explicit = load_encoder(EncoderSettings(runtime="onnx", int8_queries=True, onnx_cache_dir=tmp_path))
    np.testing.assert_array_equal(encoder.encode_queries(texts), explicit.encode_queries(texts))
    np.testing.assert_array_equal(encoder.encode_queries(texts[:1]), explicit.encode_queries(texts[:1]))
    # Cache keys name the path taken, never "auto": the same as the explicit int8 query path.
    assert encoder.query_setup == explicit.query_setup
    assert (json.loads(encoder.query_setup)["runtime"], encoder.query_model) == ("onnx", explicit.query_model)
    # Everything stays on torch elsewhere: another backend, another pooling, a GPU.
    assert not encoders.int8_queries_apply(EncoderSettings(backend="deepseek", model=str(tmp_path)))
    cls_model = tmp_path / "cls-model"
    (cls_model / "1_Pooling").mkdir(parents=True)
    (cls_model / "1_Pooling" / "config.json").write_text('{"pooling_mode_cls_token": true}')
    assert not encoders.int8_queries_apply(EncoderSettings(model=str(cls_model)))
    assert encoders.int8_queries_apply(EncoderSettings(device="cpu"))
    monkeypatch.setattr(encoders, "resolve_device", lambda requested: "cuda")
    assert not encoders.int8_queries_apply(EncoderSettings())


def test_auto_runtime_keeps_queries_on_torch_when_onnx_cannot_load(tmp_path, minilm, caplog) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("")  # the export cannot make its cache directory under a file
    with caplog.at_level("WARNING", logger="search.encoders"):
        encoder = load_encoder(EncoderSettings(device="cpu", onnx_cache_dir=blocked / "onnx"))
    assert "no ONNX query model, queries stay on torch" in caplog.text
    assert '"runtime": "torch"' in encoder.query_setup
    text = ["heat conduction in a cylinder"]
    np.testing.assert_allclose(encoder.encode_queries(text), minilm.encode_queries(text), atol=1e-5)
    with pytest.raises(OSError):  # asked for by name, the runtime's failure is the caller's to see
        load_encoder(EncoderSettings(runtime="onnx", onnx_cache_dir=blocked / "onnx"))


def test_query_threads_give_queries_their_own_session_with_the_same_vectors(tmp_path, minilm) -> None:
    from search.config import EncoderSettings
    from search.encoders import load_encoder

    encoder = load_encoder(EncoderSettings(runtime="onnx", threads=2, query_threads=1, onnx_cache_dir=tmp_path))
    assert encoder.query_session is not encoder.session  # queries on one thread, documents on two
    texts = ["boundary layer transition on a swept wing", "heat conduction"]
    cosine = (encoder.encode_queries(texts) * minilm.encode_queries(texts)).sum(axis=1)
    assert cosine.min() >= 0.9999, cosine  # the same fp32 model
    shared = load_encoder(EncoderSettings(runtime="onnx", threads=2, query_threads=2, onnx_cache_dir=tmp_path))
    assert shared.query_session is shared.session


@pytest.mark.integration  # exports and runs the real model on ONNX
def test_a_query_encoded_alone_may_take_more_threads_and_gets_the_same_vector(tmp_path, caplog) -> None:
    texts = ["boundary layer transition on a swept wing", "最新的开源大模型", "heat " * 300]
    forced = load_encoder(
        EncoderSettings(runtime="onnx", int8_queries=True, lone_query_threads=2, onnx_cache_dir=tmp_path)
    )
    assert forced.lone_threads.settled and forced.lone_threads.chosen == 2
    assert forced.lone_sessions[2] is not forced.query_session
    batch = forced.encode_queries(texts)  # a batch runs on the query threads
    for text, in_batch in zip(texts, batch):  # bit for bit: a vector never depends on the load
        np.testing.assert_array_equal(forced.encode_queries([text])[0], in_batch)
    same = load_encoder(
        EncoderSettings(runtime="onnx", int8_queries=True, lone_query_threads=1, onnx_cache_dir=tmp_path)
    )
    assert same.lone_sessions == {1: same.query_session}  # nothing extra loaded
    # auto: the first queries encoded alone take turns on 1, 2 and 4 threads (those the cores allow),
    # each with its warm-up and timed uses, then one is kept.
    measured = load_encoder(EncoderSettings(runtime="onnx", int8_queries=True, onnx_cache_dir=tmp_path))
    counts = [n for n in (1, 2, 4) if n <= len(os.sched_getaffinity(0))]
    choice = measured.lone_threads
    assert choice.options == counts and not choice.settled
    with caplog.at_level("INFO", logger="search.encoders.onnx"):
        for i in range(len(counts) * (choice.warmup + choice.trials)):
            np.testing.assert_array_equal(
                measured.encode_queries([texts[i % 2]]), forced.encode_queries([texts[i % 2]])
            )
    assert measured.lone_threads.settled
    [record] = [r for r in caplog.records if r.getMessage().startswith("threads for a query encoded alone")]
    assert set(record.ms_by_threads) == set(counts) and record.chosen == measured.lone_threads.chosen


def test_the_fastest_option_is_kept_after_each_has_had_its_turns() -> None:
    from search.encoders.choice import FastestOption

    timings = {1: 9.0, 2: 6.5, 4: 7.0}
    choice = FastestOption([1, 2, 4], trials=3, warmup=1)
    picked, settled = [], []
    while not choice.settled:
        option = choice.pick()
        picked.append(option)
        # A warm-up use is slow and not counted: it must not decide anything.
        slow = 100.0 if picked.count(option) == 1 else 0.0
        settled.append(choice.record(option, timings[option] + slow))
    assert picked == [1, 2, 4] * 4 and settled.count(True) == 1 and settled[-1]
    assert choice.chosen == 2 and choice.medians == {1: 9.0, 2: 6.5, 4: 7.0}
    assert choice.pick() == 2 and not choice.record(2, 1.0) and choice.medians[2] == 6.5

    close = FastestOption([1, 2], trials=2, warmup=0)  # within the 10% margin: the default stays
    for _ in range(2):
        close.record(close.pick(), 1.0)
        close.record(close.pick(), 0.95)
    assert close.settled and close.chosen == 1
    assert FastestOption([3]).settled and FastestOption([3]).pick() == 3  # nothing to choose
