"""The write path against real parts: SQLite/PostgreSQL, FAISS, tantivy, the packaged model."""

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from indexer.collection import open_collection
from indexer.layout import current_generation
from indexer.reindex import rebuild
from indexer.versioning import Outcome
from search.config import Settings, load_settings
from search.documents import DocumentWrite
from search.request import SearchRequest
from search.store import Store, WriteRefused
from search.vector_index import EncoderMismatch
from tests.conftest import HashEncoder

DOCS = [
    DocumentWrite(id="wing", title="Wing lift", text="lift of a swept wing in a propeller slipstream"),
    DocumentWrite(id="heat", title="Heat transfer", text="heat conduction in composite slabs"),
    DocumentWrite(
        id="phone", title="New phone", text="the latest phone has a periscope camera", category="electronics"
    ),
]


def _settings(tmp_path: Path, store_url: str | None = None, **extra) -> Settings:
    return load_settings(data_dir=tmp_path / "data", store={"url": store_url}, **extra)


def _ids(collection, query: str, mode: str, k: int = 10) -> list[str]:
    return [hit.id for hit in collection.engine.search(SearchRequest(query, k=k, mode=mode)).hits]


@pytest.mark.parametrize("mode", ["dense", "lexical", "hybrid"])
def test_search_modes_find_the_right_document(tmp_path: Path, minilm, mode: str) -> None:
    with open_collection(_settings(tmp_path), encoder=minilm) as collection:
        collection.write(DOCS)
        assert _ids(collection, "heat conduction through slabs", mode)[0] == "heat"


def test_update_appears_once_and_delete_disappears_everywhere(tmp_path: Path, store_url: str, minilm) -> None:
    with open_collection(_settings(tmp_path, store_url), encoder=minilm) as collection:
        collection.write(DOCS)
        report = collection.write(
            [DocumentWrite(id="heat", title="Boundary layers", text="laminar to turbulent transition")]
        )
        assert report.applied == 1
        for mode in ("dense", "lexical", "hybrid"):
            ids = _ids(collection, "turbulent boundary layer transition", mode)
            assert ids.count("heat") == 1 and ids[0] == "heat"
        assert _ids(collection, "conduction composite slabs", "lexical") == []
        hit = collection.engine.search(SearchRequest("turbulent transition", mode="dense")).hits[0]
        assert hit.title == "Boundary layers"

        collection.write([DocumentWrite(id="heat", op="delete")])
        for mode in ("dense", "lexical", "hybrid"):
            assert "heat" not in _ids(collection, "turbulent boundary layer transition", mode, k=50)
        assert collection.vectors.count == 2 and collection.lexical.count == 2
        assert collection.store.get("heat") is None


def test_versions_are_enforced_and_reported(tmp_path: Path, hash_encoder: HashEncoder) -> None:
    with open_collection(_settings(tmp_path), encoder=hash_encoder) as collection:
        write = collection.write
        assert write([DocumentWrite(id="a", text="one", version=5)]).applied == 1
        stale = write([DocumentWrite(id="a", text="older", version=4)])
        assert stale.stale[0].reason and stale.applied == 0
        assert collection.store.get("a").text == "one"
        assert write([DocumentWrite(id="a", op="delete", version=6)]).applied == 1
        late = write([DocumentWrite(id="a", text="late older upsert", version=5)])
        assert late.results[0].outcome is Outcome.STALE
        assert collection.store.get("a") is None
        assert _ids(collection, "late older upsert", "lexical") == []


def test_batch_is_applied_in_order(tmp_path: Path, hash_encoder: HashEncoder) -> None:
    with open_collection(_settings(tmp_path), encoder=hash_encoder) as collection:
        report = collection.write(
            [
                DocumentWrite(id="a", text="first", version=1),
                DocumentWrite(id="a", text="second", version=2),
                DocumentWrite(id="a", text="first", version=1),  # redelivered, out of order
                DocumentWrite(id="b", text="bee", version=1),
                DocumentWrite(id="b", op="delete", version=2),
            ]
        )
        assert [r.outcome for r in report.results] == [
            Outcome.APPLIED,
            Outcome.APPLIED,
            Outcome.STALE,
            Outcome.APPLIED,
            Outcome.APPLIED,
        ]
        assert collection.store.get("a").text == "second"
        assert collection.store.get("b") is None
        assert hash_encoder.calls == [1]  # only the final version of "a" was encoded
        assert collection.store.last_seq() == 2  # one change per document


def test_unchanged_documents_are_not_re_encoded(tmp_path: Path, hash_encoder: HashEncoder) -> None:
    with open_collection(_settings(tmp_path), encoder=hash_encoder) as collection:
        collection.write(DOCS)
        calls = list(hash_encoder.calls)
        report = collection.write(DOCS)
        assert report.unchanged == 3 and hash_encoder.calls == calls
        # A version bump with identical content keeps the stored embedding.
        bumped = DOCS[0].model_copy(update={"version": 10})
        assert collection.write([bumped]).applied == 1
        assert hash_encoder.calls == calls


def test_restart_loads_snapshot_and_catches_up(tmp_path: Path, store_url: str, hash_encoder: HashEncoder) -> None:
    settings = _settings(tmp_path, store_url)
    with open_collection(settings, encoder=hash_encoder) as collection:
        collection.write(DOCS)
    # Changes reach the store while no index follows (a crash right after the commit).
    store = Store(settings.store_url)
    with store.writing() as batch:
        doc = DocumentWrite(id="late", text="arrived while the indexes were down")
        vector = hash_encoder.encode_documents([doc.embedding_text()])[0].tobytes()
        batch.upsert(doc, 1, doc.content_hash(), vector, str(hash_encoder.fingerprint), None)
        batch.delete("wing", 2)
    store.close()
    with open_collection(settings, encoder=hash_encoder) as collection:
        assert collection.vectors.seq == collection.lexical.seq == collection.store.last_seq() == 5
        assert _ids(collection, "arrived while the indexes were down", "lexical") == ["late"]
        assert "late" in _ids(collection, "arrived while the indexes were down", "dense")
        assert "wing" not in _ids(collection, "wing lift slipstream", "hybrid")
        assert collection.vectors.count == collection.lexical.count == 3


def test_lost_vector_snapshot_is_rebuilt_from_the_store(tmp_path: Path, hash_encoder: HashEncoder) -> None:
    settings = _settings(tmp_path)
    with open_collection(settings, encoder=hash_encoder) as collection:
        collection.write(DOCS)
    for f in (current_generation(settings.data_dir) / "vectors").iterdir():
        f.unlink()
    calls = len(hash_encoder.calls)
    with open_collection(settings, encoder=hash_encoder) as collection:
        assert collection.vectors.count == 3
        assert len(hash_encoder.calls) == calls  # rebuilt from stored embeddings, not re-encoded


def test_encoder_change_is_refused_until_reindex(tmp_path: Path, hash_encoder: HashEncoder) -> None:
    settings = _settings(tmp_path)
    with open_collection(settings, encoder=hash_encoder) as collection:
        collection.write(DOCS)
    new_encoder = HashEncoder(dimension=24, name="hash-v2")
    with pytest.raises(EncoderMismatch, match="dss reindex"):
        open_collection(settings, encoder=new_encoder)

    store = Store(settings.store_url)
    report = rebuild(settings, store, new_encoder)
    assert report.documents == 3 and sum(new_encoder.calls) == 3
    assert store.encoders_in_use() == {str(new_encoder.fingerprint): 3}
    store.close()
    assert current_generation(settings.data_dir).name == "g2"
    assert not (settings.data_dir / "indexes" / "g1").exists()
    with open_collection(settings, encoder=new_encoder) as collection:
        assert (
            collection.engine.search(SearchRequest("heat conduction composite slabs", mode="dense")).hits[0].id
            == "heat"
        )


def test_rebuild_with_same_encoder_does_not_encode(tmp_path: Path, hash_encoder: HashEncoder) -> None:
    settings = _settings(tmp_path)
    with open_collection(settings, encoder=hash_encoder) as collection:
        collection.write(DOCS)
    calls = len(hash_encoder.calls)
    store = Store(settings.store_url)
    assert rebuild(settings, store, hash_encoder).documents == 3
    store.close()
    assert len(hash_encoder.calls) == calls


def test_collection_trains_ivf_once_large_enough(tmp_path: Path, hash_encoder: HashEncoder) -> None:
    settings = _settings(tmp_path, index={"nlist_factor": 1.0, "train_points_per_list": 10, "train_threshold": 90})
    with open_collection(settings, encoder=hash_encoder) as collection:
        docs = [DocumentWrite(id=f"d{i}", text=f"word{i} topic{i % 7}") for i in range(120)]
        collection.write(docs[:85])  # 85 < train_threshold
        assert collection.vectors.trained_size == 0
        collection.write(docs[85:])
        assert collection.vectors.state.kind.startswith("IVF") and collection.vectors.trained_size == 120
        # Updates and deletes keep working on the trained index.
        collection.write([DocumentWrite(id="d3", op="delete")])
        assert collection.vectors.count == 119
        hits = collection.engine.search(SearchRequest("word5 topic5", k=5, mode="dense", nprobe=11)).hits
        assert hits[0].id == "d5"
    with open_collection(settings, encoder=hash_encoder) as collection:
        assert collection.vectors.trained_size == 120 and collection.vectors.count == 119


def test_index_saved_with_another_factory_is_rebuilt_without_encoding(
    tmp_path: Path, hash_encoder: HashEncoder
) -> None:
    """Changing index.factory (as the default did, Flat -> SQfp16) migrates an existing
    collection when it is next opened: rebuilt from the stored embeddings, nothing re-encoded."""
    small = {"nlist_factor": 1.0, "train_points_per_list": 10, "train_threshold": 90}
    docs = [DocumentWrite(id=f"d{i}", text=f"word{i} topic{i % 7}") for i in range(120)]
    flat = _settings(tmp_path, index={**small, "factory": "IVF{nlist},Flat"})
    with open_collection(flat, encoder=hash_encoder) as collection:
        collection.write(docs)
        assert collection.vectors.state.kind == "IVF11,Flat"
        before = _ids(collection, "word5 topic5", "dense", k=5)
    calls = len(hash_encoder.calls)
    with open_collection(_settings(tmp_path, index=small), encoder=hash_encoder) as collection:
        assert collection.vectors.state.kind == "IVF11,SQfp16" and collection.vectors.count == 120
        assert _ids(collection, "word5 topic5", "dense", k=5)[0] == before[0] == "d5"
    assert sum(hash_encoder.calls[calls:]) <= 1  # at most the query; no document
    with open_collection(_settings(tmp_path, index=small), encoder=hash_encoder) as collection:
        assert not collection.vectors.layout_changed  # the migrated snapshot was saved


def test_a_write_the_database_refuses_is_set_aside_and_the_rest_written(
    tmp_path: Path, store_url: str, hash_encoder: HashEncoder
) -> None:
    """A value the checks at the door would have refused, built here without them: the
    database refuses the batch whole (nothing committed, ``WriteRefused``), and
    ``write_skipping_refused`` writes the others in order and says which one and why."""
    year_10000 = datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5)))
    unstorable = [
        DocumentWrite.model_construct(**{**DocumentWrite(id="late", text="x").model_dump(), "updated_at": year_10000})
    ]
    if store_url.startswith("postgresql"):  # psycopg2's own refusal
        unstorable.append(
            DocumentWrite.model_construct(**{**DocumentWrite(id="nul", text="x").model_dump(), "text": "a\x00b"})
        )
    with open_collection(_settings(tmp_path, store_url), encoder=hash_encoder) as collection:
        for bad in unstorable:
            with pytest.raises(WriteRefused, match="the store refused it"):
                collection.write([DOCS[0], bad])
        assert collection.store.stats().live == 0 and collection.store.last_seq() == 0

        report, refused = collection.write_skipping_refused([DOCS[0], *unstorable, DOCS[1]])
        assert list(refused) == list(range(1, len(unstorable) + 1))
        assert "OverflowError" in refused[1] and all("NUL" in reason for reason in list(refused.values())[1:])
        assert [(r.id, r.outcome) for r in report.results] == [("wing", Outcome.APPLIED), ("heat", Outcome.APPLIED)]
        assert report.last_seq == collection.store.last_seq() == 2
        assert set(_ids(collection, "wing slabs", "lexical")) == {"wing", "heat"}


def test_only_bad_data_is_a_refusal_not_a_database_in_trouble(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'store.sqlite'}")
    with pytest.raises(WriteRefused, match="ValueError: bad value"), store.writing():
        raise ValueError("bad value")
    locked = OperationalError("UPDATE counters", {}, Exception("database is locked"))
    with pytest.raises(OperationalError), store.writing():  # comes again later: never set aside as the data's fault
        raise locked
    assert store.last_seq() == 0


def test_a_collection_that_only_answered_queries_writes_no_snapshot(
    tmp_path: Path, hash_encoder: HashEncoder, monkeypatch
) -> None:
    """Closing saves the vector index only where memory holds what the snapshot lacks."""
    settings = _settings(tmp_path)
    docs = [DocumentWrite(id=f"d{i}", text=f"word{i} topic{i % 7}") for i in range(20)]
    saves: list[Path] = []

    def counted(collection) -> None:
        save = collection.vectors.save
        monkeypatch.setattr(collection.vectors, "save", lambda directory: (saves.append(directory), save(directory)))

    with open_collection(settings, encoder=hash_encoder) as collection:  # new: no snapshot yet
        counted(collection)
    assert len(saves) == 1
    with open_collection(settings, encoder=hash_encoder) as collection:
        counted(collection)
        collection.write(docs)
    assert len(saves) == 2
    with open_collection(settings, encoder=hash_encoder) as collection:
        counted(collection)
        assert collection.engine.search(SearchRequest("word5 topic5", k=3, mode="dense")).hits[0].id == "d5"
    assert len(saves) == 2  # only searched: nothing written
    with open_collection(settings, encoder=hash_encoder) as collection:
        assert collection.vectors.count == 20  # what was saved is complete
