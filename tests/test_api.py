"""The HTTP API through FastAPI's TestClient, over real SQLite, FAISS and tantivy indexes."""

from __future__ import annotations

import gc
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import faiss
import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from sqlalchemy import text

from api.app import create_app, prepare_serving_process
from api.keys import KeyStore, Role
from api.search_response import search_response
from indexer.collection import open_collection
from indexer.ingest import ingest
from search.config import ApiSettings, load_settings
from tests.conftest import SAMPLE, HashEncoder, refuse_writes_of


@pytest.fixture
def app_env(tmp_path: Path, minilm) -> Iterator[tuple[TestClient, dict[str, str], object]]:
    settings = load_settings(data_dir=tmp_path / "data")
    collection = open_collection(settings, encoder=minilm)
    ingest(collection, SAMPLE, 64, 10**6)
    keys = KeyStore(settings.data_dir)
    headers = {role.name: {"X-API-Key": keys.create(role)[0]} for role in Role}
    with TestClient(create_app(settings, collection)) as client:
        yield client, headers, collection
    collection.close()


def test_auth_roles(app_env) -> None:
    client, keys, _ = app_env
    missing = client.get("/search", params={"q": "phone"})
    assert missing.status_code == 401 and "X-API-Key" in missing.json()["error"]
    wrong = client.get("/search", params={"q": "phone"}, headers={"X-API-Key": "dss_nope"})
    assert wrong.status_code == 401
    assert client.get("/search", params={"q": "phone"}, headers=keys["reader"]).status_code == 200
    doc = {"documents": [{"id": "n1", "text": "new"}]}
    forbidden = client.post("/documents", json=doc, headers=keys["reader"])
    assert forbidden.status_code == 403 and "writer" in forbidden.json()["error"]
    assert client.post("/documents", json=doc, headers=keys["writer"]).status_code == 200
    assert client.get("/metrics", headers=keys["writer"]).status_code == 403
    assert client.get("/metrics", headers=keys["admin"]).status_code == 200
    assert client.post("/admin/reindex", headers=keys["writer"]).status_code == 403
    assert client.get("/health").status_code == 200  # liveness needs no key


def test_revoked_key_is_refused(app_env, tmp_path: Path) -> None:
    client, _, collection = app_env
    store = KeyStore(collection.settings.data_dir)
    secret, _record = store.create(Role.reader, "temp")
    assert client.get("/search", params={"q": "x"}, headers={"X-API-Key": secret}).status_code == 200
    time.sleep(0.01)
    assert store.revoke("temp")
    assert client.get("/search", params={"q": "x"}, headers={"X-API-Key": secret}).status_code == 401
    raw = (collection.settings.data_dir / "api_keys.json").read_text()
    assert secret not in raw  # only hashes are stored


def test_search_get_and_post_with_explain(app_env) -> None:
    client, keys, _ = app_env
    got = client.get("/search", params={"q": "latest phone camera", "k": 3, "explain": "true"}, headers=keys["reader"])
    assert got.status_code == 200
    body = got.json()
    assert body["hits"][0]["id"] == "elec-001" and len(body["hits"]) == 3
    explain = body["hits"][0]["explain"]
    # The default mode is dynamic: the weights come from the model, category affinity is in
    # (the sample has categories), and "latest" raised the freshness weight.
    assert {"dense", "lexical", "title", "category", "freshness"} <= set(explain["signals"])
    weights = body["explain"]["weights"]
    assert set(weights) == {"dense", "lexical", "title", "category"} and abs(sum(weights.values()) - 1) < 1e-6
    assert explain["weights"] == weights and weights["category"] > 0
    assert body["explain"]["features"]["temporal"] is True and body["explain"]["rerank"]["freshness"] == 0.3
    assert {"encode", "vector", "lexical", "rank", "hydrate"} <= set(body["timings_ms"])
    assert "periscope" in body["hits"][0]["snippet"] and body["generation"] == "g1"

    posted = client.post("/search", json={"q": "latest phone camera", "k": 3}, headers=keys["reader"]).json()
    assert [h["id"] for h in posted["hits"]] == [h["id"] for h in body["hits"]]
    assert posted["hits"][0]["explain"] is None and posted["explain"] is None


def test_per_request_ranking_weights(app_env) -> None:
    client, keys, _ = app_env

    def search(**body):
        response = client.post(
            "/search", json={"q": "battery life", "k": 5, "explain": True, **body}, headers=keys["reader"]
        )
        assert response.status_code == 200, response.text
        return response.json()

    fixed = search(weights={"dense": 1.0})
    assert fixed["explain"]["weights"] == {"dense": 1.0}
    assert [h["id"] for h in fixed["hits"]] == [h["id"] for h in search(mode="dense")["hits"]]
    reranked = search(freshness=0.5, diversity=0.3, half_life_days=7)
    assert reranked["explain"]["rerank"] == {"freshness": 0.5, "diversity": 0.3, "half_life_days": 7.0}
    assert {"freshness", "redundancy"} <= set(reranked["hits"][0]["explain"]["signals"])
    for bad in ({"weights": {"dense": 0}}, {"weights": {"popularity": 1}}, {"freshness": 2}, {"diversity": -1}):
        response = client.post("/search", json={"q": "battery", **bad}, headers=keys["reader"])
        assert response.status_code == 422, bad
        assert response.json()["error"]


def test_pagination_is_consistent(app_env) -> None:
    client, keys, _ = app_env
    full = client.post("/search", json={"q": "battery", "k": 6}, headers=keys["reader"]).json()["hits"]
    page = client.post("/search", json={"q": "battery", "k": 3, "offset": 3}, headers=keys["reader"]).json()["hits"]
    assert [h["id"] for h in page] == [h["id"] for h in full[3:6]]


def test_filters(app_env) -> None:
    client, keys, _ = app_env

    def ids(**params):
        response = client.get("/search", params={"q": "new technology", "k": 50, **params}, headers=keys["reader"])
        assert response.status_code == 200, response.text
        return response.json()["hits"]

    electronics = ids(category="consumer-electronics")
    assert electronics and all(h["category"] == "consumer-electronics" for h in electronics)
    two = ids(category=["science", "food"])
    assert {h["category"] for h in two} == {"science", "food"}
    chinese = ids(meta="lang=zh")
    assert chinese and all(h["metadata"]["lang"] == "zh" for h in chinese)
    recent = ids(updated_after="2026-11-01T00:00:00Z")
    assert recent and all(h["updated_at"] >= "2026-11-01" for h in recent)
    window = ids(updated_after="2024-01-01T00:00:00Z", updated_before="2025-01-01T00:00:00Z")
    assert window and all(h["updated_at"].startswith("2024") for h in window)
    posted = client.post(
        "/search",
        json={"q": "phone", "filters": {"category": ["consumer-electronics"], "metadata": {"lang": "zh"}}},
        headers=keys["reader"],
    ).json()["hits"]
    assert [h["id"] for h in posted] == ["zh-elec-001"]
    assert ids(category="no-such-category") == []


@pytest.mark.parametrize(
    "request_args",
    [
        {"method": "GET", "url": "/search", "params": {"q": "x", "k": 0}},
        {"method": "GET", "url": "/search", "params": {"q": "x", "k": 101}},  # over api.max_k
        {"method": "GET", "url": "/search", "params": {"q": "x", "mode": "sparse"}},
        {"method": "GET", "url": "/search", "params": {}},
        {"method": "GET", "url": "/search", "params": {"q": "x", "meta": "novalue"}},
        {"method": "GET", "url": "/search", "params": {"q": "x", "updated_after": "yesterday"}},
        {"method": "POST", "url": "/search", "json": {"q": "x", "unknown": 1}},
        {"method": "POST", "url": "/search", "json": {"q": "x", "filters": {"metadata": {"a": [1]}}}},
        {
            "method": "POST",
            "url": "/search",
            "content": b'{"q": "x", "filters": {"metadata": {"a": NaN}}}',
            "headers": {"content-type": "application/json"},
        },
        {"method": "GET", "url": "/search", "params": {"q": "x", "meta": "a=Infinity"}},
        {"method": "POST", "url": "/search", "content": b"{not json", "headers": {"content-type": "application/json"}},
        {"method": "POST", "url": "/documents", "json": {"documents": []}},
        {"method": "POST", "url": "/documents", "json": {"documents": [{"id": "", "text": "x"}]}},
        {"method": "POST", "url": "/documents", "json": {"documents": [{"id": "a", "version": -1}]}},
        {"method": "POST", "url": "/documents", "json": [1, 2]},
        {"method": "POST", "url": "/admin/reindex", "json": {"encoder": {"backend": "word2vec"}}},
    ],
)
def test_malformed_requests_get_4xx_json(app_env, request_args: dict) -> None:
    client, keys, _ = app_env
    headers = {**keys["admin"], **request_args.pop("headers", {})}
    response = client.request(**request_args, headers=headers)
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"]


def test_oversized_body_is_refused(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data", api={"auth": False, "max_body_bytes": 2048})
    collection = open_collection(settings, encoder=HashEncoder())
    with TestClient(create_app(settings, collection)) as client:
        big = {"documents": [{"id": "a", "text": "x" * 5000}]}
        response = client.post("/documents", json=big)
        assert response.status_code == 413 and "larger than 2048" in response.json()["error"]
        chunked = client.post("/documents", content=iter([b'{"documents": [', b" " * 4096, b"]}"]))
        assert chunked.status_code == 413
    collection.close()


def test_document_writes_versions_and_get(app_env) -> None:
    client, keys, _ = app_env
    w = keys["writer"]
    first = client.post(
        "/documents", json={"documents": [{"id": "v", "text": "glider wings", "version": 3}]}, headers=w
    )
    assert first.json()["applied"] == 1
    stale = client.post(
        "/documents", json={"documents": [{"id": "v", "text": "older", "version": 2}]}, headers=w
    ).json()
    assert (
        stale["stale"] == 1
        and stale["results"][0]["outcome"] == "stale"
        and "not newer" in stale["results"][0]["reason"]
    )
    doc = client.get("/documents/v", headers=keys["reader"]).json()
    assert (doc["text"], doc["version"]) == ("glider wings", 3)
    assert client.get("/documents/absent", headers=keys["reader"]).status_code == 404
    hits = client.get("/search", params={"q": "glider wings", "mode": "lexical"}, headers=keys["reader"]).json()["hits"]
    assert hits[0]["id"] == "v"


def test_delete_erases_everywhere(app_env) -> None:
    client, keys, collection = app_env
    secret_text = "zanzibarite quokka ledger of private notes"
    client.post(
        "/documents",
        json={"documents": [{"id": "gdpr", "title": "Private", "text": secret_text}]},
        headers=keys["writer"],
    )
    key = collection.store.get("gdpr").key
    assert client.get("/search", params={"q": "zanzibarite quokka", "mode": "lexical"}, headers=keys["reader"]).json()[
        "hits"
    ]

    erased = client.delete("/documents/gdpr", headers=keys["writer"])
    assert erased.status_code == 200 and erased.json()["applied"] == 1
    assert client.delete("/documents/gdpr", headers=keys["writer"]).status_code == 404
    assert client.get("/documents/gdpr", headers=keys["reader"]).status_code == 404
    # Store: only the tombstone (id, version) is left; no text, metadata or embedding.
    with collection.store.engine.connect() as conn:
        row = conn.execute(
            text("SELECT title, text, metadata, embedding, deleted FROM documents WHERE id = 'gdpr'")
        ).one()
    assert row == (None, None, None, None, True)
    # Vector index, in memory and in its on-disk snapshot.
    assert collection.vectors.index.id_map is not None
    assert key not in faiss.vector_to_array(collection.vectors.index.id_map)
    saved = faiss.read_index(str(collection.generation / "vectors" / "vectors.faiss"))
    assert key not in faiss.vector_to_array(saved.id_map)
    # Lexical index and every search mode.
    assert collection.lexical.search("zanzibarite quokka", 10) == []
    for mode in ("dense", "lexical", "hybrid"):
        hits = client.get("/search", params={"q": secret_text, "mode": mode, "k": 100}, headers=keys["reader"]).json()[
            "hits"
        ]
        assert "gdpr" not in [h["id"] for h in hits]
    # Files on disk no longer hold the text.
    for path in collection.settings.data_dir.rglob("*"):
        if path.is_file() and path.suffix not in (".sqlite-wal", ".sqlite-shm"):
            assert b"zanzibarite" not in path.read_bytes(), path


def test_reindex_job(app_env) -> None:
    client, keys, _collection = app_env
    started = client.post("/admin/reindex", headers=keys["admin"])
    assert started.status_code == 202
    job_id = started.json()["id"]
    deadline = time.time() + 60
    while (job := client.get(f"/admin/jobs/{job_id}", headers=keys["admin"]).json())["state"] in ("queued", "running"):
        assert time.time() < deadline
        time.sleep(0.1)
    assert job["state"] == "succeeded" and job["progress"] == 1.0
    assert job["result"]["generation"] == "g2" and job["result"]["documents"] == 40
    hits = client.get("/search", params={"q": "latest phone camera"}, headers=keys["reader"]).json()
    assert hits["generation"] == "g2" and hits["hits"][0]["id"] == "elec-001"
    assert client.get("/admin/jobs/nope", headers=keys["admin"]).status_code == 404


def test_repeated_get_is_answered_by_the_front_but_never_stale_or_unauthorised(app_env) -> None:
    client, keys, _ = app_env
    params = {"q": "quantum battery breakthrough", "k": 3}
    first = client.get("/search", params=params, headers=keys["reader"])
    again = client.get("/search", params=params, headers=keys["reader"])
    assert "encode" in first.json()["timings_ms"] and set(again.json()["timings_ms"]) == {"cache"}
    assert {**again.json(), "timings_ms": None} == {**first.json(), "timings_ms": None}
    assert again.headers["content-type"] == "application/json" and len(again.headers["X-Request-ID"]) == 32
    # the same query string without a key, or with a bad one, is refused, not served from the front
    assert client.get("/search", params=params).status_code == 401
    assert client.get("/search", params=params, headers={"X-API-Key": "dss_nope"}).status_code == 401
    doc = {"id": "qb-1", "title": "Quantum battery breakthrough", "text": "a quantum battery charges in seconds"}
    assert client.post("/documents", json={"documents": [doc]}, headers=keys["writer"]).status_code == 200
    after = client.get("/search", params=params, headers=keys["reader"]).json()
    assert "encode" in after["timings_ms"] and after["hits"][0]["id"] == "qb-1"  # the write is visible at once
    assert client.delete("/documents/qb-1", headers=keys["writer"]).status_code == 200
    deleted = client.get("/search", params=params, headers=keys["reader"]).json()
    assert "qb-1" not in [h["id"] for h in deleted["hits"]]


_VALID = {  # values the models take, for each parameter
    "q": st.sampled_from(["phone", "latest phone camera", "quantum battery", "0", "x" * 101]),
    "k": st.sampled_from(["1", "3", "10", "100", "+5", " 7 ", "101", "1000"]),  # over 100: the deployment's max_k
    "offset": st.sampled_from(["0", "2", "100", "100000"]),
    "mode": st.sampled_from(["dense", "lexical", "hybrid", "rrf", "dynamic", "default"]),
    "category": st.sampled_from(["technology", "science", "consumer-electronics", "sport", "none"]),
    "meta": st.sampled_from(["lang=en", 'lang="zh"', "lang=1", "a=[1]", "a=" + "[" * 3000, "lang=true"]),
    "updated_after": st.sampled_from(["2020-01-01", "2024-01-01T00:00:00Z", "1700000000"]),
    "updated_before": st.sampled_from(["2030-01-01T00:00:00+02:00", "2025-06-01"]),
    "nprobe": st.sampled_from(["1", "8", "1000000"]),
    "explain": st.sampled_from(["true", "false", "1", "0", "yes", "off", "t"]),
    "freshness": st.sampled_from(["0", "0.3", "1", "1e-3"]),
    "half_life_days": st.sampled_from(["0.5", "30", "100000"]),
    "diversity": st.sampled_from(["0", "0.5", "1.0"]),
    "junk": st.text(max_size=5),
    "Q": st.text(max_size=5),
}
_ANY = st.one_of(  # and values it may refuse
    st.sampled_from(
        [
            "",
            " ",
            "-1",
            "101",
            "1.5",
            "nan",
            "inf",
            "maybe",
            "sparse",
            "dense\n",
            "DENSE",
            "novalue",
            "=1",
            "a=NaN",
            "a=Infinity",
            "a=1e400",
            "2024-13-01",
            "0001-01-01T00:00:00",
            "yesterday",
        ]
    ),
    st.integers(-3, 100_001).map(str),
    st.floats(allow_nan=True).map(str),
    st.text(max_size=12),
)
_PAIR = st.sampled_from(sorted(_VALID)).flatmap(
    lambda name: st.tuples(st.just(name), st.integers(0, 5).flatmap(lambda i: _ANY if i == 0 else _VALID[name]))
)
_QUERY = st.lists(_PAIR, max_size=7).map(
    lambda pairs: urlencode(pairs if len(pairs) == 1 else [("q", "phone"), *pairs])
)


def test_the_front_answers_every_get_search_as_the_route_would(tmp_path: Path, monkeypatch) -> None:
    """The fast lane (api/front.py) answers without FastAPI's routing: over generated query
    strings, valid and not, it answers exactly as the route (the app without the front), and
    it answers every valid one without the route."""
    import api.routes.search
    from api.front import SearchFront

    settings = load_settings(data_dir=tmp_path / "data", api={"max_k": 100})
    collection = open_collection(settings, encoder=HashEncoder())
    ingest(collection, SAMPLE, 64, 10**6)
    headers = {"X-API-Key": KeyStore(settings.data_dir).create(Role.reader)[0]}
    routed = []

    async def counted(*args, **kwargs):
        routed.append(1)
        return await search_response(*args, **kwargs)

    monkeypatch.setattr(api.routes.search, "search_response", counted)  # the route's searches only
    bare = create_app(settings, collection)
    bare.user_middleware = [m for m in bare.user_middleware if m.cls is not SearchFront]
    answered = {"fast lane": 0, "route": 0}

    def answer(client: TestClient, query: str) -> tuple[int, dict, int]:
        before = len(routed)
        response = client.get(f"/search?{query}", headers=headers)
        body = {k: v for k, v in response.json().items() if k not in ("timings_ms", "request_id")}
        return response.status_code, body, len(routed) - before

    with TestClient(bare) as route, TestClient(create_app(settings, collection)) as front:

        @hyp_settings(max_examples=150, deadline=None)
        @given(_QUERY)
        def same_answer(query: str) -> None:
            expected, expected_body, _ = answer(route, query)
            status, body, searched_by_route = answer(front, query)
            assert (status, body) == (expected, expected_body)
            assert expected < 500
            if status == 200:
                assert searched_by_route == 0
            answered["fast lane" if status == 200 else "route"] += 1

        same_answer()
        # a GET that carries a body goes to the app (which reads it, within its limit)
        before = len(routed)
        assert front.request("GET", "/search?q=phone", headers=headers, content=b"x").status_code == 200
        assert len(routed) == before + 1
    collection.close()
    assert min(answered.values()) >= 25, answered  # both kinds of query string were generated


@pytest.mark.integration  # asserts on the Redis server on 127.0.0.1:6379
def test_request_ids_and_metrics(app_env) -> None:
    client, keys, collection = app_env
    given = client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert given.headers["X-Request-ID"] == "abc-123"
    assert len(client.get("/health").headers["X-Request-ID"]) == 32
    first = client.get("/search", params={"q": "phone"}, headers=keys["reader"]).json()
    again = client.get("/search", params={"q": "phone"}, headers=keys["reader"]).json()
    assert "encode" in first["timings_ms"] and set(again["timings_ms"]) == {"cache"}
    assert again["hits"] == first["hits"]
    posted = client.post("/search", json={"q": "phone"}, headers=keys["reader"]).json()
    assert set(posted["timings_ms"]) == {"cache"} and posted["hits"] == first["hits"]
    assert collection.cache.flush()  # the Redis and SQLite writes gather behind the requests
    metrics = client.get("/metrics", headers=keys["admin"]).text
    # response (the front, GET only): missed, then hit. memory: the page and the query's
    # embedding (looked up together) missed on the first GET and both hit on the POST
    assert 'dss_cache_hit_ratio{level="response"} 0.5' in metrics
    assert 'dss_cache_hit_ratio{level="memory"} 0.5' in metrics
    assert 'dss_cache_requests_total{level="redis",outcome="set"}' in metrics
    assert 'dss_cache_seconds_count{level="sqlite"}' in metrics
    assert 'dss_http_request_duration_seconds_count{method="GET",route="/search",status="200"}' in metrics
    assert 'dss_search_stage_seconds_count{stage="encode"}' in metrics
    assert 'dss_documents{state="live"} 40.0' in metrics
    assert 'dss_index_documents{index="vector"} 40.0' in metrics
    assert "dss_reindex_jobs" in metrics


@pytest.mark.integration  # asserts on the Redis server on 127.0.0.1:6379
def test_ready_reports_checks(app_env) -> None:
    client, _, _ = app_env
    body = client.get("/ready").json()
    assert body["status"] == "ready" and body["checks"]["store"] == "ok"
    assert body["checks"]["cache"] == "ok"  # the real Redis on 127.0.0.1:6379


def test_server_follows_writes_from_another_process(tmp_path: Path, store_url: str) -> None:
    """A separate writer (e.g. `dss consume`) commits to the shared store; the server's
    indexes pick the change up by themselves."""
    settings = load_settings(
        data_dir=tmp_path / "server", store={"url": store_url}, api={"auth": False}, index={"follow_interval_ms": 100}
    )
    writer_settings = load_settings(data_dir=tmp_path / "writer", store={"url": store_url})
    encoder = HashEncoder()
    served = open_collection(settings, encoder=encoder)
    with TestClient(create_app(settings, served)) as client:
        with open_collection(writer_settings, encoder=encoder) as writer:
            from search.documents import DocumentWrite

            writer.write([DocumentWrite(id="elsewhere", text="written by another process")])
        deadline = time.time() + 10
        while not client.get("/search", params={"q": "another process", "mode": "lexical"}).json()["hits"]:
            assert time.time() < deadline, "the server never saw the other process's write"
            time.sleep(0.05)
    served.close()


def test_serving_process_freezes_start_up_objects_and_shortens_the_gil_interval() -> None:
    interval = sys.getswitchinterval()
    try:
        prepare_serving_process(ApiSettings(switch_interval_ms=2.5))
        assert sys.getswitchinterval() == pytest.approx(0.0025)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        sys.setswitchinterval(interval)
    assert ApiSettings().switch_interval_ms == 0.1  # the default a serving process gets


def test_values_a_store_cannot_hold_are_refused_on_either_store(tmp_path: Path, store_url: str, monkeypatch) -> None:
    """NUL characters, NaN, integers past 64 bits, dates that leave the calendar in UTC: each
    is a 422 naming the field, the same on SQLite as on PostgreSQL (which had answered 500)."""
    settings = load_settings(
        data_dir=tmp_path / "data", store={"url": store_url}, api={"auth": False}, cache={"redis_url": None}
    )
    collection = open_collection(settings, encoder=HashEncoder())
    refused_documents = [
        ({"id": "a", "text": "before\x00after"}, "text", "NUL"),
        ({"id": "a\x00", "text": "x"}, "id", "NUL"),
        ({"id": "a", "text": "x", "category": "c\x00"}, "category", "NUL"),
        ({"id": "a", "text": "x", "metadata": {"k\x00": 1}}, "metadata", "NUL"),
        ({"id": "a", "text": "x", "metadata": {"n": 2**64}}, "metadata", "64 bits"),
        ({"id": "a", "text": "x", "metadata": {"deep": json.loads("[" * 40 + "]" * 40)}}, "metadata", "nested"),
        ({"id": "a", "text": "x", "updated_at": "9999-12-31T23:00:00-05:00"}, "updated_at", "out of range"),
    ]
    with TestClient(create_app(settings, collection)) as client:
        for doc, field, reason in refused_documents:
            response = client.post("/documents", json={"documents": [doc]})
            assert response.status_code == 422, (doc, response.text)
            assert f"documents.0.{field}" in response.json()["error"] and reason in response.json()["error"]
        nan = client.post(
            "/documents",
            content=b'{"documents": [{"id": "a", "metadata": {"x": NaN}}]}',
            headers={"content-type": "application/json"},
        )
        assert nan.status_code == 422 and "NaN" in nan.json()["error"]
        assert collection.store.stats().live == 0

        # What is just inside the limits is stored, and ids may hold slashes (paths, URLs).
        inside = {
            "id": "docs/guide.md",
            "text": "gliders",
            "metadata": {"n": 2**63 - 1, "deep": json.loads("[" * 31 + "]" * 31)},
        }
        assert client.post("/documents", json={"documents": [inside]}).json()["applied"] == 1
        assert client.get("/documents/docs/guide.md").json()["metadata"]["n"] == 2**63 - 1
        assert client.get("/documents/docs%2Fguide.md").status_code == 200
        assert client.get("/documents/x%00y").status_code == 404
        for params in ({"updated_after": "9999-12-31T23:00:00-05:00"}, {"category": "c\x00"}, {"meta": "k\x00=1"}):
            response = client.get("/search", params={"q": "gliders", **params})
            assert response.status_code == 422 and response.json()["error"], (params, response.text)
        assert (
            client.get("/search", params={"q": "gliders", "mode": "lexical"}).json()["hits"][0]["id"] == "docs/guide.md"
        )
        assert client.delete("/documents/x%00y").status_code == 404
        assert client.delete("/documents/docs/guide.md").json()["applied"] == 1
        assert client.get("/documents/docs/guide.md").status_code == 404
        # What the database might still refuse: a 422, nothing written.
        refuse_writes_of(monkeypatch, collection, None, "the store refused it: DataError: value out of range")
        response = client.post("/documents", json={"documents": [{"id": "b", "text": "fine"}]})
        assert response.status_code == 422 and response.json()["error"].startswith(
            "nothing was written: the store refused it"
        )
    collection.close()
