from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from sqlalchemy import text

from search.documents import DocumentWrite
from search.filters import Filters
from search.store import SchemaError, Store


def _upsert(store: Store, doc: DocumentWrite, version: int) -> int:
    with store.writing() as batch:
        return batch.upsert(doc, version, doc.content_hash(), np.ones(4, np.float32).tobytes(), "enc", None)


def test_upsert_get_and_sequence(store_url: str) -> None:
    store = Store(store_url)
    when = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)
    doc = DocumentWrite(id="d1", title="T", text="body", metadata={"a": [1, 2]}, category="c", updated_at=when)
    assert _upsert(store, doc, 1) == 1
    assert _upsert(store, DocumentWrite(id="d2", text="x"), 1) == 2
    got = store.get("d1")
    assert (got.title, got.text, got.metadata, got.category, got.version) == ("T", "body", {"a": [1, 2]}, "c", 1)
    assert got.updated_at == when and got.created_at is not None
    assert store.last_seq() == 2
    assert store.stats().live == 2
    store.close()


def test_delete_is_a_tombstone_that_erases_content(store_url: str) -> None:
    store = Store(store_url)
    _upsert(store, DocumentWrite(id="d1", title="secret", text="personal data"), 1)
    with store.writing() as batch:
        seq = batch.delete("d1", 2)
    assert seq == 2
    assert store.get("d1") is None
    with store.engine.connect() as conn:
        row = conn.execute(
            text("SELECT version, deleted, title, text, metadata, embedding FROM documents WHERE id = 'd1'")
        ).one()
    assert row[0] == 2 and row[1]
    assert row[2:] == (None, None, None, None)
    stats = store.stats()
    assert (stats.live, stats.deleted) == (0, 1)
    store.close()


def test_changes_since_returns_latest_state_in_sequence_order(store_url: str) -> None:
    store = Store(store_url)
    for i in range(5):
        _upsert(store, DocumentWrite(id=f"d{i}", text=str(i)), 1)
    _upsert(store, DocumentWrite(id="d1", text="new"), 2)  # d1 moves to seq 6
    with store.writing() as batch:
        batch.delete("d3", 2)  # seq 7
    changes = [d for docs in store.changes_since(2, batch_size=2) for d in docs]
    assert [(d.id, d.seq, d.deleted) for d in changes] == [
        ("d2", 3, False),
        ("d4", 5, False),
        ("d1", 6, False),
        ("d3", 7, True),
    ]
    assert np.frombuffer(changes[0].embedding, np.float32).shape == (4,)
    store.close()


def test_failed_transaction_allocates_no_sequence(store_url: str) -> None:
    store = Store(store_url)
    _upsert(store, DocumentWrite(id="d1", text="a"), 1)
    with pytest.raises(RuntimeError), store.writing() as batch:
        batch.upsert(DocumentWrite(id="d2", text="b"), 1, "h", b"", "enc", None)
        raise RuntimeError("crash before commit")
    assert store.last_seq() == 1
    assert store.get("d2") is None
    assert _upsert(store, DocumentWrite(id="d3", text="c"), 1) == 2
    store.close()


def test_keys_are_stable_across_updates(store_url: str) -> None:
    store = Store(store_url)
    _upsert(store, DocumentWrite(id="d1", text="a"), 1)
    key = store.get("d1").key
    _upsert(store, DocumentWrite(id="d1", text="b"), 2)
    assert store.get("d1").key == key
    assert store.get_by_keys([key])[key].text == "b"
    store.close()


def test_result_pages_hydrate_as_the_store_reads(store_url: str) -> None:
    # SQLite hydrates pages through its own sqlite3 connection: same documents, same types.
    store = Store(store_url)
    when = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    _upsert(
        store,
        DocumentWrite(
            id="full", title="T", text="body", metadata={"a": [1, {"b": None}], "z": "ü"}, category="c", updated_at=when
        ),
        1,
    )
    _upsert(store, DocumentWrite(id="bare", text="x"), 1)
    _upsert(store, DocumentWrite(id="gone", text="y"), 1)
    keys = {doc_id: store.get(doc_id).key for doc_id in ("full", "bare", "gone")}
    with store.writing() as batch:
        batch.delete("gone", 2)
    _upsert(store, DocumentWrite(id="bare", text="changed"), 2)  # a commit after the reader opened
    page = store.get_by_keys([*list(keys.values()), 10000])
    assert set(page) == {keys["full"], keys["bare"]}  # deleted and unknown keys are left out
    for doc_id in ("full", "bare"):
        expected = store.get(doc_id)
        assert page[keys[doc_id]] == replace(expected, embedding=None)
    assert page[keys["full"]].updated_at == when and page[keys["bare"]].text == "changed"
    store.close()


def test_schema_version_mismatch_is_refused(store_url: str) -> None:
    Store(store_url).close()
    store = Store(store_url)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE meta SET value = '999' WHERE key = 'schema_version'"))
    store.close()
    with pytest.raises(SchemaError, match="schema version 999"):
        Store(store_url)


def test_sqlite_runs_in_wal_mode(tmp_path) -> None:
    store = Store(f"sqlite:///{tmp_path / 's.sqlite'}")
    with store.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    store.close()


def _open_store_at_barrier(url: str, barrier: Any) -> None:
    barrier.wait()
    Store(url).close()


@pytest.mark.integration  # spawned processes
def test_processes_creating_the_same_store_at_once_all_start(store_url: str) -> None:
    """A query service and a consumer starting together on an empty database must not race
    each other into an error (both create the tables and the schema-version row)."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(4)
    processes = [context.Process(target=_open_store_at_barrier, args=(store_url, barrier)) for _ in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
    assert [p.exitcode for p in processes] == [0, 0, 0, 0]
    store = Store(store_url)
    assert store.last_seq() == 0
    store.close()


def test_metadata_filters_compare_json_types_without_casting(store_url: str) -> None:
    """A filter matches a field's JSON value, never a cast of it: on PostgreSQL a cast of a
    non-number failed the whole query, on SQLite "abc" matched 0 and 1.5 matched 1."""
    store = Store(store_url)
    values = {
        "int": 1,
        "real": 1.0,
        "half": 1.5,
        "string": "1",
        "word": "abc",
        "true": True,
        "false": False,
        "list": [1],
        "object": {"n": 1},
        "null": None,
    }
    keys = {}
    for name, value in values.items():
        _upsert(store, DocumentWrite(id=name, text="x", metadata={"n": value, "it's.a key": name}), 1)
        keys[store.get(name).key] = name
    _upsert(store, DocumentWrite(id="none", text="x"), 1)

    def matching(value: Any, field: str = "n") -> set[str]:
        return {keys[k] for k in store.keys_matching(Filters(metadata={field: value}))}

    assert matching(1) == matching(1.0) == {"int", "real"}
    assert matching(1.5) == {"half"}
    assert matching(0) == set()
    assert matching("1") == {"string"}
    assert matching("abc") == {"word"}
    assert matching(True) == {"true"} and matching(False) == {"false"}
    assert matching("word", field="it's.a key") == {"word"}
    assert matching(1, field="missing") == set()
    both = Filters(metadata={"n": 1, "it's.a key": "real"})
    assert {keys[k] for k in store.keys_matching(both)} == {"real"}
    store.close()
