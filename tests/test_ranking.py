"""Multi-objective reranking: freshness decay, MMR diversity, and their switches."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from indexer.collection import open_collection
from search.config import load_settings
from search.documents import DocumentWrite
from search.ranking.rerank import RerankWeights, freshness_scores, rerank
from search.request import RankOptions, SearchRequest

NOW = 1_800_000_000.0
DAY = 86_400.0


def test_freshness_halves_every_half_life_and_unknown_age_counts_as_one() -> None:
    scores = freshness_scores([NOW, NOW - 30 * DAY, NOW - 60 * DAY, None], NOW, 30)
    assert scores == pytest.approx([1.0, 0.5, 0.25, 0.5])


def test_switched_off_the_relevance_order_is_kept() -> None:
    rng = np.random.default_rng(0)
    relevance = np.sort(rng.uniform(size=50))[::-1]
    keys = list(rng.permutation(1000)[:50])
    vectors = rng.normal(size=(50, 8))
    result = rerank(
        keys, relevance, RerankWeights(0.0, 0.0, 30), [NOW - rng.uniform(0, 1e8) for _ in keys], vectors, NOW
    )
    assert result.keys == [int(k) for k in keys]


def test_freshness_lifts_a_newer_document() -> None:
    # Relevance is min-max scaled over the pool, so the pool holds a weak third candidate.
    timestamps = [NOW - 400 * DAY, NOW - 1 * DAY, NOW]
    plain = rerank([1, 2, 3], [1.0, 0.95, 0.0], RerankWeights(0.0, 0.0, 30), timestamps, None, NOW)
    fresh = rerank([1, 2, 3], [1.0, 0.95, 0.0], RerankWeights(0.3, 0.0, 30), timestamps, None, NOW)
    assert plain.keys == [1, 2, 3] and fresh.keys == [2, 1, 3]
    assert fresh.freshness[2] > 0.97 and fresh.freshness[1] < 0.001


def test_diversity_pushes_a_near_duplicate_down() -> None:
    a = np.array([1.0, 0.0])
    b = np.array([0.0, 1.0])
    vectors = np.stack([a, a * 0.999 + b * 0.001, b])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    same = rerank([1, 2, 3], [1.0, 0.99, 0.9], RerankWeights(0.0, 0.0, 30), [None] * 3, vectors, NOW)
    diverse = rerank([1, 2, 3], [1.0, 0.99, 0.9], RerankWeights(0.0, 0.5, 30), [None] * 3, vectors, NOW)
    assert same.keys == [1, 2, 3] and diverse.keys == [1, 3, 2]
    assert diverse.redundancy[2] == pytest.approx(1.0, abs=1e-3)


def test_engine_reranks_for_temporal_intent_and_on_request(tmp_path: Path, minilm) -> None:
    now = datetime.now(UTC)
    docs = [
        DocumentWrite(
            id="old",
            title="Phone review",
            text="a phone with a great camera and long battery",
            updated_at=now - timedelta(days=900),
        ),
        DocumentWrite(
            id="new",
            title="Phone review",
            text="a phone with a great camera and a long battery",
            updated_at=now - timedelta(days=2),
        ),
        DocumentWrite(
            id="copy",
            title="Phone review",
            text="a phone with a great camera and long battery!",
            updated_at=now - timedelta(days=900),
        ),
        DocumentWrite(id="tea", title="Green tea", text="how to brew green tea", updated_at=now - timedelta(days=5)),
    ]
    settings = load_settings(data_dir=tmp_path / "data")
    with open_collection(settings, encoder=minilm) as collection:
        collection.write(docs)
        engine = collection.engine

        def ids(query: str, **options) -> list[str]:
            return [h.id for h in engine.search(SearchRequest(query, k=4, options=RankOptions(**options))).hits]

        plain = ids("phone camera battery review", freshness=0.0, diversity=0.0)
        assert plain.index("new") > 0  # by relevance alone the fresh document is not first
        assert ids("latest phone camera battery review")[0] == "new"  # temporal intent
        assert ids("phone camera battery review", freshness=0.6)[0] == "new"  # asked for
        diverse = ids("phone camera battery review", diversity=0.7)
        assert diverse.index("tea") < plain.index("tea")  # the near-duplicates make room
