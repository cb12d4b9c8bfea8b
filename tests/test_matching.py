"""Dynamic-weight matching: query features, the weight model, its fitting, category affinity."""

from pathlib import Path

import ir_measures
import numpy as np
import pytest
from ir_measures import nDCG

from indexer.collection import open_collection
from indexer.ingest import ingest
from search.config import load_settings
from search.documents import DocumentWrite
from search.fusion import linear_fusion, max_scaled
from search.matching.features import MODEL_FEATURES, analyse_query
from search.matching.fitting import TrainingSet, best_constant, cross_validation_report, fit, model_ndcg, ndcg
from search.matching.weights import LEARNED_SIGNALS, SHIPPED_MODEL, WeightModel
from search.request import SearchRequest

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "sample.jsonl"


def _features(text: str, df: dict[str, int] | None = None, n: int = 1000):
    terms = [t.lower().strip('?"') for t in text.split()]
    return analyse_query(text, terms, lambda t: (df or {}).get(t, 10), n)


def test_query_features() -> None:
    rare = _features("hypersonic ablation", {"hypersonic": 1, "ablation": 2})
    common = _features("flow wing", {"flow": 600, "wing": 500})
    assert 0 < common.mean_idf < rare.mean_idf <= 1 and rare.max_idf <= 1
    assert _features("what is the lift of a wing?").question == 1
    assert _features('"boundary layer" transition').quoted == 1
    assert _features("X-15 flight data").codes == 1 and _features("wing flow").codes == 0
    unknown = _features("zzyzx wing", {"wing": 5, "zzyzx": 0})
    assert unknown.unknown_share == 0.5
    for temporal in ("latest phone", "new releases", "phones of 2025", "最新的手机"):
        assert _features(temporal).temporal, temporal
    assert not _features("phone camera").temporal
    assert _features("最新的开源大模型").chinese > 0.9
    assert len(rare.vector()) == len(MODEL_FEATURES)


def test_weight_model_round_trip_and_constant(tmp_path: Path) -> None:
    constant = WeightModel.constant({"dense": 0.7, "lexical": 0.3})
    weights = constant.weights(np.zeros(len(MODEL_FEATURES)))
    assert weights == pytest.approx({"dense": 0.7, "lexical": 0.3})
    constant.coef[1, 0] = 2.0
    constant.save(tmp_path / "m.json")
    loaded = WeightModel.load(tmp_path / "m.json")
    x = np.arange(len(MODEL_FEATURES), dtype=float)
    assert loaded.weights(x) == pytest.approx(constant.weights(x))
    shipped = WeightModel.load(SHIPPED_MODEL)
    assert set(shipped.signals) == set(LEARNED_SIGNALS) and shipped.trained_on["sets"]


def _toy_set(seed: int, n: int = 120) -> TrainingSet:
    """Queries whose first feature says which of two signals finds the relevant document."""
    rng = np.random.default_rng(seed)
    f = len(MODEL_FEATURES)
    features = rng.normal(size=(n, f))
    scores = rng.uniform(0, 0.6, size=(n, 20, 3))
    gains = np.zeros((n, 20))
    for q in range(n):
        gains[q, 0] = 1
        good = 1 if features[q, 0] > 0 else 0  # lexical when feature 0 is high, else dense
        scores[q, 0, good] = 1.0
        scores[q, 0, 1 - good] = 0.0
        scores[q, 1, 1 - good] = 0.9  # a decoy the other signal likes
    valid = np.ones((n, 20), dtype=bool)
    return TrainingSet(f"toy{seed}", [str(i) for i in range(n)], features, scores, valid, gains, np.ones(n))


def test_fitting_learns_weights_that_depend_on_the_query() -> None:
    train, test = _toy_set(1), _toy_set(2)
    fixed = WeightModel.constant(best_constant([train]))
    model = fit([train])
    assert model_ndcg(model, test) > model_ndcg(fixed, test) + 0.2
    lexical_query = np.zeros(len(MODEL_FEATURES))
    lexical_query[0] = 2.0
    assert model.weights(lexical_query)["lexical"] > model.weights(-lexical_query)["lexical"]
    report = cross_validation_report([train, test], folds=3)
    assert [r["train"] for r in report] == ["toy1", "toy2", "toy1 (3 folds)", "toy2 (3 folds)"]
    assert all(r["dynamic"] > r["fixed"] for r in report)


def test_ndcg_matches_ir_measures() -> None:
    data = _toy_set(3, n=30)
    rng = np.random.default_rng(0)
    data.gains = rng.integers(0, 3, size=data.gains.shape).astype(float)
    qrels = {str(q): {str(m): int(data.gains[q, m]) for m in range(20)} for q in range(30)}
    data.ideal = np.array([sum(sorted(g, reverse=True)[i] / np.log2(i + 2) for i in range(10)) for g in data.gains])
    weights = np.tile([0.5, 0.3, 0.2], (30, 1))
    fused = np.einsum("qms,qs->qm", data.scores, weights)
    run = {str(q): {str(m): float(fused[q, m]) for m in range(20)} for q in range(30)}
    expected = ir_measures.calc_aggregate([nDCG @ 10], qrels, run)[nDCG @ 10]
    assert ndcg(data, weights).mean() == pytest.approx(expected, abs=1e-6)


def test_max_scaled_fusion_scores_a_missing_candidate_as_the_lists_worst() -> None:
    fused = linear_fusion({"a": {1: 2.0, 2: 1.0}, "b": {3: 4.0}}, {"a": 0.5, "b": 0.5}, max_scaled)
    assert fused == pytest.approx({1: 0.5 + 0.5, 2: 0.25 + 0.5, 3: 0.25 + 0.5})


@pytest.fixture(scope="module")
def sample_collection(tmp_path_factory, minilm):
    settings = load_settings(data_dir=tmp_path_factory.mktemp("sample") / "data")
    with open_collection(settings, encoder=minilm) as collection:
        ingest(collection, SAMPLE, 64, 10**6)
        yield collection


def test_dynamic_weights_are_explained_per_query(sample_collection) -> None:
    engine = sample_collection.engine
    result = engine.search(SearchRequest("battery life of the new phone", k=3, mode="dynamic"))
    assert set(result.weights) == {"dense", "lexical", "title", "category"}
    assert sum(result.weights.values()) == pytest.approx(1.0)
    assert result.features["temporal"] is True and result.rerank["freshness"] > 0
    other = engine.search(SearchRequest('"BM25" X-15 error code 0x80070005', k=3, mode="dynamic"))
    assert other.weights != result.weights  # weights follow the query's features
    assert engine.search(SearchRequest("battery", mode="dense")).weights == {"dense": 1.0}


def test_category_affinity_points_at_the_querys_category(sample_collection) -> None:
    engine = sample_collection.engine
    vector = engine.encoder.encode_queries(["smartphone camera and battery"])[0]
    distribution = engine.category_distribution(vector)
    assert max(distribution, key=distribution.get) == "consumer-electronics"
    assert sum(distribution.values()) == pytest.approx(1.0)
    hits = engine.search(SearchRequest("smartphone camera and battery", k=3)).hits
    assert hits[0].category == "consumer-electronics" and hits[0].signals["category"] == max(distribution.values())


def test_category_centroids_follow_writes(tmp_path: Path, hash_encoder) -> None:
    settings = load_settings(data_dir=tmp_path / "data")
    docs = [DocumentWrite(id=f"d{i}", text=f"topic{i % 3} words {i}", category=f"c{i % 3}") for i in range(12)]
    with open_collection(settings, encoder=hash_encoder) as collection:
        collection.write(docs)
        collection.write(
            [
                DocumentWrite(id="d0", text="moved to another category", category="c1"),
                DocumentWrite(id="d1", op="delete"),
                DocumentWrite(id="d2", text="no category any more"),
            ]
        )
        names, incremental = collection.engine.attributes.centroids()
        collection.engine.attributes.rebuild(collection.store, collection.vectors)
        rebuilt_names, rebuilt = collection.engine.attributes.centroids()
    assert names == rebuilt_names == ["c0", "c1", "c2"]
    np.testing.assert_allclose(incremental, rebuilt, atol=1e-5)
