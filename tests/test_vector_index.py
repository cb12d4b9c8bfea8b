from pathlib import Path

import numpy as np
import pytest

from search.config import IndexSettings
from search.encoders.base import Fingerprint, l2_normalise
from search.vector_index import INDEX_FILE, EncoderMismatch, VectorIndex, gpu_available

FP = Fingerprint("test", "random", 16, "none")


def _vectors(n: int, seed: int = 0) -> np.ndarray:
    return l2_normalise(np.random.default_rng(seed).standard_normal((n, FP.dimension)))


def _small_ivf_settings(**extra) -> IndexSettings:
    # nlist = sqrt(N), at most N / 10; trained from N = 100.
    return IndexSettings(**{"nlist_factor": 1.0, "train_points_per_list": 10, "train_threshold": 100, **extra})


def test_exact_search_add_update_remove() -> None:
    index = VectorIndex(IndexSettings(), FP)
    vectors = _vectors(50)
    keys = np.arange(100, 150)
    index.upsert(keys, vectors)
    scores, found = index.search(vectors[:3], k=1)
    assert found[:, 0].tolist() == [100, 101, 102]
    assert np.allclose(scores[:, 0], 1.0, atol=1e-5)

    index.upsert(np.array([100]), vectors[10:11])  # update: key 100 now holds vector 10
    scores, found = index.search(vectors[10:11], k=2)
    assert sorted(found[0].tolist()) == [100, 110]
    assert index.count == 50  # replaced, not duplicated

    index.remove(np.array([110, 100]))
    _, found = index.search(vectors[10:11], k=48)
    assert 110 not in found[0] and 100 not in found[0]
    assert index.count == 48


def test_trains_ivf_at_threshold_and_retrains_after_growth() -> None:
    index = VectorIndex(_small_ivf_settings(), FP)
    index.upsert(np.arange(99), _vectors(99))
    assert not index.wants_rebuild()  # 99 < train_threshold
    index.upsert(np.arange(99, 100), _vectors(1, seed=1))
    assert index.wants_rebuild()
    all_vectors = np.vstack([_vectors(99), _vectors(1, seed=1)])
    index.rebuild([(np.arange(100), all_vectors)])
    assert index.state.kind == "IVF10,SQfp16" and index.trained_size == 100
    assert not index.wants_rebuild()

    index.upsert(np.arange(100, 399), _vectors(299, seed=2))
    assert not index.wants_rebuild()  # 399 < 4 * 100
    index.upsert(np.arange(399, 400), _vectors(1, seed=3))
    assert index.wants_rebuild()


def test_ivf_updates_deletes_and_per_request_nprobe() -> None:
    index = VectorIndex(_small_ivf_settings(), FP)
    vectors = _vectors(400)
    index.rebuild([(np.arange(400), vectors)])
    assert index.nlist == 20
    # With every list probed IVF search is exact.
    _, found = index.search(vectors[:20], k=1, nprobe=20)
    assert found[:, 0].tolist() == list(range(20))
    index.upsert(np.array([5]), vectors[300:301])
    _, found = index.search(vectors[300:301], k=2, nprobe=20)
    assert sorted(found[0].tolist()) == [5, 300]
    index.remove(np.array([5]))
    _, found = index.search(vectors[300:301], k=400, nprobe=20)
    assert 5 not in found[0] and index.count == 399
    # One probed list returns fewer candidates than all of them.
    _, one = index.search(vectors[:1], k=100, nprobe=1)
    assert (one[0] >= 0).sum() < 100


def test_half_precision_default_matches_flat_storage() -> None:
    """The default IVF,SQfp16 keeps what IVF,Flat finds and scores, to half precision."""
    vectors = _vectors(400)
    half, full = VectorIndex(_small_ivf_settings(), FP), VectorIndex(_small_ivf_settings(factory="IVF{nlist},Flat"), FP)
    for index in (half, full):
        index.rebuild([(np.arange(400), vectors)])
    assert (half.state.kind, full.state.kind) == ("IVF20,SQfp16", "IVF20,Flat")
    half_scores, half_found = half.search(vectors[:50], k=10, nprobe=4)
    full_scores, full_found = full.search(vectors[:50], k=10, nprobe=4)
    assert (half_found[:, 0] == full_found[:, 0]).all() and (half_found[:, 0] == np.arange(50)).all()
    np.testing.assert_allclose(half_scores, full_scores, atol=2e-3)
    stored, found = half.reconstruct([3, 7, 399])
    assert found.all()
    np.testing.assert_allclose(stored, vectors[[3, 7, 399]], atol=1e-3)


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    index = VectorIndex(_small_ivf_settings(), FP)
    vectors = _vectors(400)
    index.rebuild([(np.arange(400), vectors)])
    index.seq = 1234
    index.save(tmp_path)
    assert not list(tmp_path.glob("*.tmp"))
    loaded = VectorIndex.load(tmp_path, _small_ivf_settings(), FP)
    assert (loaded.seq, loaded.count, loaded.nlist, loaded.trained_size) == (1234, 400, 20, 400)
    _, found = loaded.search(vectors[:5], k=1, nprobe=20)
    assert found[:, 0].tolist() == [0, 1, 2, 3, 4]
    loaded.remove(np.array([0]))  # the hash-table direct map survives loading
    assert loaded.count == 399


def test_load_refuses_another_encoder(tmp_path: Path) -> None:
    index = VectorIndex(IndexSettings(), FP)
    index.upsert(np.arange(3), _vectors(3))
    index.save(tmp_path)
    other = Fingerprint("test", "other-model", 16, "none")
    with pytest.raises(EncoderMismatch, match="dss reindex"):
        VectorIndex.load(tmp_path, IndexSettings(), other)


def test_load_without_snapshot_is_empty(tmp_path: Path) -> None:
    assert VectorIndex.load(tmp_path, IndexSettings(), FP).count == 0
    assert not (tmp_path / INDEX_FILE).exists()


def test_factory_change_asks_for_rebuild(tmp_path: Path) -> None:
    index = VectorIndex(_small_ivf_settings(), FP)
    index.rebuild([(np.arange(400), _vectors(400))])
    index.save(tmp_path)
    loaded = VectorIndex.load(tmp_path, _small_ivf_settings(factory="IVF{nlist},SQ8"), FP)
    assert loaded.wants_rebuild()


def test_nlist_rule_change_asks_for_rebuild(tmp_path: Path) -> None:
    """A saved index whose nlist another nlist rule would not give (the default went from 4 to
    8 sqrt(N) lists) is rebuilt when opened; the same rule keeps it."""
    index = VectorIndex(_small_ivf_settings(), FP)
    index.rebuild([(np.arange(400), _vectors(400))])
    index.save(tmp_path)
    assert not VectorIndex.load(tmp_path, _small_ivf_settings(), FP).wants_rebuild()
    assert VectorIndex.load(tmp_path, _small_ivf_settings(nlist_factor=0.5), FP).wants_rebuild()


def test_default_layout_lists_and_probes(capfd: pytest.CaptureFixture[str]) -> None:
    default = VectorIndex(IndexSettings(), FP)
    assert not default.trainable(24_999) and default.trainable(25_000)
    # 8 sqrt(N) lists, but never fewer than 39 training points a list.
    assert (default.nlist_for(25_000), default.nlist_for(100_000)) == (641, 2530)
    index = VectorIndex(_small_ivf_settings(), FP)
    index.rebuild([(np.arange(400), _vectors(400))])
    assert (index.nlist, index.default_nprobe()) == (20, 10)  # sqrt(400) / 2 lists probed
    # 20 points a list: fewer than FAISS's 39, but what these settings allow; FAISS is told, so it does not warn.
    assert "WARNING clustering" not in capfd.readouterr().err


def test_fast_scan_factory_takes_updates() -> None:
    """FAISS removes from fast-scan lists only without the hash-table direct map the other IVF
    layouts get: a configured fast-scan factory must still take upserts and deletes."""
    index = VectorIndex(_small_ivf_settings(factory="IVF{nlist},PQ8x4fs"), FP)
    vectors = _vectors(400)
    index.rebuild([(np.arange(400), vectors)])
    assert index.state.kind == "IVF20,PQ8x4fs"
    index.upsert(np.array([5]), vectors[300:301])
    index.remove(np.array([6]))
    _, found = index.search(vectors[300:301], k=400, nprobe=20)
    assert 5 in found[0] and 6 not in found[0] and index.count == 399


@pytest.mark.gpu
@pytest.mark.skipif(not gpu_available(), reason="needs faiss-gpu and a CUDA device")
def test_gpu_copy_follows_updates() -> None:
    index = VectorIndex(_small_ivf_settings(use_gpu="always"), FP)
    vectors = _vectors(400)
    index.rebuild([(np.arange(400), vectors)])
    _, found = index.search(vectors[:3], k=1, nprobe=20)
    assert found[:, 0].tolist() == [0, 1, 2]
    index.remove(np.array([0]))
    _, found = index.search(vectors[:1], k=5, nprobe=20)
    assert 0 not in found[0]
