import json
from pathlib import Path

import pytest

from indexer.collection import open_collection
from indexer.ingest import ingest, read_documents
from search.config import load_settings
from search.documents import DocumentWrite
from search.request import SearchRequest
from tests.conftest import SAMPLE, HashEncoder, refuse_writes_of


def _write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_bad_lines_are_reported_with_line_numbers_and_skipped(tmp_path: Path, hash_encoder: HashEncoder) -> None:
    source = _write_jsonl(
        tmp_path / "docs.jsonl",
        [
            json.dumps({"id": "a", "title": "A", "text": "alpha"}),
            "{not json",
            json.dumps({"title": "no id"}),
            "",
            json.dumps({"_id": 7, "text": "numeric beir id"}),
            json.dumps(["a", "list"]),
            json.dumps({"id": "b", "text": "x", "version": "seven"}),
            json.dumps({"id": "c", "text": "y" * 50}),
            json.dumps({"id": "d", "text": "delta", "updated_at": "2026-01-01T00:00:00Z", "category": "z"}),
            # What no store could hold: refused here, not left to fail a batch in the database.
            json.dumps({"id": "e", "text": "nul \x00 inside"}),
            '{"id": "f", "metadata": {"x": NaN}}',
            '{"id": "g", "metadata": {"x": ' + "[" * 5000 + "]" * 5000 + "}}",
            json.dumps({"id": "h", "updated_at": "9999-12-31T23:00:00-05:00"}),
        ],
    )
    settings = load_settings(data_dir=tmp_path / "data")
    with open_collection(settings, encoder=hash_encoder) as collection:
        report = ingest(collection, source, batch_size=2, max_text_chars=40)
        assert [b.line for b in report.bad] == [2, 3, 6, 7, 8, 10, 11, 12, 13]
        assert "invalid JSON" in report.bad[0].error
        assert "id" in report.bad[1].error
        assert "version" in report.bad[3].error
        assert "longer than 40" in report.bad[4].error
        assert "text" in report.bad[5].error and "NUL" in report.bad[5].error
        assert "metadata" in report.bad[6].error and "NaN" in report.bad[6].error
        assert "nested too deeply" in report.bad[7].error
        assert "updated_at" in report.bad[8].error and "out of range" in report.bad[8].error
        assert (report.read, report.applied) == (3, 3)
        assert collection.store.get("7").text == "numeric beir id"
        assert collection.store.get("d").category == "z"


def test_a_line_the_store_refuses_is_reported_and_the_rest_of_its_batch_written(
    tmp_path: Path, hash_encoder: HashEncoder, monkeypatch
) -> None:
    """A refusal the checks at the door did not foresee (the store's write is wrapped here to
    refuse one id): that line is a bad line, its batch neighbours are written."""
    source = _write_jsonl(
        tmp_path / "docs.jsonl", [json.dumps({"id": i, "text": f"text {i}"}) for i in ("a", "refused", "c", "d")]
    )
    with open_collection(load_settings(data_dir=tmp_path / "data"), encoder=hash_encoder) as collection:
        refuse_writes_of(monkeypatch, collection, "refused", "the store refused it: ValueError: not this one")
        report = ingest(collection, source, batch_size=3, max_text_chars=100)
        assert [(b.line, b.error) for b in report.bad] == [(2, "the store refused it: ValueError: not this one")]
        assert (report.read, report.applied) == (3, 3)
        assert [collection.store.get(i) is not None for i in ("a", "refused", "c", "d")] == [True, False, True, True]


def test_rerun_skips_unchanged_and_applies_edits(tmp_path: Path, hash_encoder: HashEncoder) -> None:
    settings = load_settings(data_dir=tmp_path / "data")
    with open_collection(settings, encoder=hash_encoder) as collection:
        first = ingest(collection, SAMPLE, 16, 10**6)
        assert first.applied == first.read == 40 and not first.bad
        encoded = sum(hash_encoder.calls)
        again = ingest(collection, SAMPLE, 16, 10**6)
        assert (again.applied, again.unchanged) == (0, 40)
        assert sum(hash_encoder.calls) == encoded

        lines = SAMPLE.read_text(encoding="utf-8").splitlines()
        edited = json.loads(lines[0]) | {"text": "an edited body about tokenisers"}
        source = _write_jsonl(tmp_path / "edit.jsonl", [json.dumps(edited), *lines[1:]])
        third = ingest(collection, source, 16, 10**6)
        assert (third.applied, third.unchanged) == (1, 39)
        doc = collection.store.get(edited["id"])
        assert doc.version == 2 and "tokenisers" in doc.text


def test_beir_folder(tmp_path: Path) -> None:
    beir = tmp_path / "beir"
    beir.mkdir()
    _write_jsonl(beir / "corpus.jsonl", [json.dumps({"_id": "1", "title": "t", "text": "x"})])
    docs = list(read_documents(beir, 100))
    assert [(n, d.id, d.title) for n, d in docs] == [(1, "1", "t")]


def test_a_bulk_load_trains_the_vector_index_once_on_everything_it_read(
    tmp_path: Path, hash_encoder: HashEncoder, caplog
) -> None:
    """Batch by batch, the index would be trained when the first batches crossed
    train_threshold, with lists sized for those; ingest trains it once, at its end."""
    small = {"nlist_factor": 2.0, "train_points_per_list": 4, "train_threshold": 40}
    source = _write_jsonl(
        tmp_path / "docs.jsonl", [json.dumps({"id": f"d{i}", "text": f"word{i} topic{i % 7}"}) for i in range(200)]
    )
    settings = load_settings(data_dir=tmp_path / "data", index=small)
    with (
        caplog.at_level("INFO", logger="indexer.writer"),
        open_collection(settings, encoder=hash_encoder) as collection,
    ):
        report = ingest(collection, source, batch_size=30, max_text_chars=100)
        assert report.applied == 200
        vectors = collection.vectors
        assert (vectors.trained_size, vectors.nlist) == (200, vectors.nlist_for(200)) == (200, 28)
        assert [r.message for r in caplog.records].count("rebuilding the vector index") == 1
        assert collection.engine.search(SearchRequest("word5 topic5", k=3, mode="dense", nprobe=28)).hits[0].id == "d5"
    with open_collection(settings, encoder=hash_encoder) as collection:  # saved as trained
        assert (collection.vectors.trained_size, collection.vectors.count) == (200, 200)


def test_a_bulk_load_that_fails_leaves_the_training_to_the_next_write(
    tmp_path: Path, hash_encoder: HashEncoder
) -> None:
    small = {"nlist_factor": 2.0, "train_points_per_list": 4, "train_threshold": 40}
    settings = load_settings(data_dir=tmp_path / "data", index=small)
    docs = [DocumentWrite(id=f"d{i}", text=f"word{i} topic{i % 7}") for i in range(101)]
    with open_collection(settings, encoder=hash_encoder) as collection:
        with pytest.raises(KeyboardInterrupt), collection.indexer.bulk():
            collection.write(docs[:100])
            raise KeyboardInterrupt  # an interrupted load: no training on the way out
        assert collection.vectors.trained_size == 0 and collection.vectors.count == 100
        collection.write(docs[100:])  # outside a bulk load the usual rule applies again
        assert collection.vectors.trained_size == 101
