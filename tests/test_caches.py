"""Query-path caches against real parts: the in-process LRU, a real Redis server (stopped and
restarted in one test), SQLite on disk; the micro-batching query encoder."""

import asyncio
import shutil
import socket
import subprocess
import threading
import time
from concurrent.futures import Future
from datetime import UTC
from pathlib import Path

import numpy as np
import pytest

from indexer.collection import open_collection
from search.attributes import DocumentAttributes
from search.caches import MemoryLevel, RedisLevel, SqliteLevel, TieredCache
from search.config import load_settings
from search.documents import DocumentWrite
from search.encoders.batching import MicroBatchingEncoder
from search.engine import Hit, SearchResult
from search.query_cache import CachedQueryEncoder, ResultCache, _decode, _encode
from search.query_path import QueryPath
from search.request import SearchRequest, normalise_query
from tests.conftest import HashEncoder

DOCS = [
    DocumentWrite(id="wing", title="Wing lift", text="lift of a swept wing in a propeller slipstream"),
    DocumentWrite(id="heat", title="Heat transfer", text="heat conduction in composite slabs"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_redis(port: int) -> subprocess.Popen:
    server = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return server
        except OSError:
            time.sleep(0.05)
    server.kill()
    raise RuntimeError("redis-server did not start")


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def __call__(self, level: str, outcome: str, seconds: float) -> None:
        self.events.append((level, outcome))

    def count(self, level: str, outcome: str) -> int:
        return self.events.count((level, outcome))


def test_levels_expire_and_sqlite_survives_a_restart(tmp_path: Path) -> None:
    memory = MemoryLevel(10, 60)
    memory.set("a", b"1", ttl_s=60)
    memory.set("gone", b"2", ttl_s=-1)  # already expired
    assert memory.get_many(["a"])[0] == b"1" and memory.get_many(["gone"])[0] is None
    disk = SqliteLevel(tmp_path / "cache.sqlite")
    disk.set("page", b"stored", ttl_s=60)
    disk.close()
    reopened = SqliteLevel(tmp_path / "cache.sqlite")
    assert reopened.get_many(["page"])[0] == b"stored" and reopened.get_many(["other"])[0] is None
    recorder = Recorder()
    tiered = TieredCache([MemoryLevel(10, 60), reopened], recorder)
    assert tiered.get("page", 60) == b"stored"  # from disk, copied into memory
    assert tiered.get("page", 60) == b"stored"
    assert recorder.count("memory", "miss") == 1 and recorder.count("memory", "hit") == 1
    assert recorder.count("sqlite", "hit") == 1


def test_slow_levels_are_written_behind_in_batches_and_never_block(tmp_path: Path) -> None:
    class Gated(SqliteLevel):  # records batch sizes; holds the writer until released
        def __init__(self, path: Path) -> None:
            super().__init__(path)
            self.batches: list[int] = []
            self.gate = threading.Event()

        def set_many(self, items):
            self.gate.wait(10)
            self.batches.append(len(items))
            super().set_many(items)

    disk = Gated(tmp_path / "c.sqlite")
    recorder = Recorder()
    tiered = TieredCache([MemoryLevel(100, 60), disk], recorder, queue_size=4)  # no batch wait
    tiered.set("first", b"0", 60)  # the writer takes it and waits at the gate
    deadline = time.monotonic() + 5
    while tiered._queue.qsize() and time.monotonic() < deadline:
        time.sleep(0.001)
    started = time.perf_counter()
    for i in range(6):  # four fit in the queue, two are dropped: set() never waits
        tiered.set(f"k{i}", str(i).encode(), 60)
    assert time.perf_counter() - started < 0.5
    assert tiered.get("k5", 60) == b"5"  # the in-process level has it at once
    assert recorder.count("write-behind", "dropped") == 2
    disk.gate.set()
    assert tiered.flush()
    assert disk.batches == [1, 4]  # the queued writes went in one batch
    assert disk.get_many(["k3"])[0] == b"3" and disk.get_many(["k5"])[0] is None
    tiered.close()


def test_the_writer_lets_a_batch_gather(tmp_path: Path) -> None:
    class Counted(SqliteLevel):
        def __init__(self, path: Path) -> None:
            super().__init__(path)
            self.batches: list[int] = []

        def set_many(self, items):
            self.batches.append(len(items))
            super().set_many(items)

    disk = Counted(tmp_path / "c.sqlite")
    tiered = TieredCache([MemoryLevel(100, 60), disk], batch_wait_s=0.2)
    for i in range(5):  # written one by one, well within the writer's wait
        tiered.set(f"k{i}", str(i).encode(), 60)
        time.sleep(0.01)
    assert tiered.flush()
    assert disk.batches == [5]  # one commit for all five
    assert disk.get_many(["k0", "k4"]) == [b"0", b"4"]
    tiered.close()


@pytest.mark.integration  # a redis-server of its own
def test_keys_looked_up_together_cost_one_call_per_level(tmp_path: Path) -> None:
    port = _free_port()
    server = _start_redis(port)
    calls: list[str] = []

    def counted(level):
        lookup = level.get_many
        level.get_many = lambda keys: calls.append(level.name) or lookup(keys)
        return level

    try:
        memory = MemoryLevel(10, 60)
        redis_level = RedisLevel(f"redis://127.0.0.1:{port}/0", "t:", 200, 1.0)
        disk = SqliteLevel(tmp_path / "c.sqlite")
        redis_level.set_many([("page", b"p", 60)])
        disk.set_many([("emb", b"e", 60)])
        tiered = TieredCache([counted(memory), counted(redis_level), counted(disk)])
        assert tiered.get_many([("page", 60), ("emb", 60), ("none", 60)]) == [b"p", b"e", None]
        assert calls == ["memory", "redis", "sqlite"]  # one MGET, one SELECT for all three
        assert memory.get_many(["page", "emb"]) == [b"p", b"e"]  # copied into the faster level
        calls.clear()
        assert tiered.get_many([("page", 60), ("none", 60)], first_decides=True) == [b"p", None]
        assert calls == ["memory"]  # the first key was found: the other is not wanted further
        tiered.close()
    finally:
        server.kill()


def test_sqlite_lookups_never_wait_for_a_write_in_progress(tmp_path: Path) -> None:
    level = SqliteLevel(tmp_path / "c.sqlite")
    level.set("page", b"old", 60)
    with level._write_lock:  # a batch being written: transaction open, not committed
        level._writer.execute("BEGIN IMMEDIATE")
        level._writer.execute("UPDATE cache SET value = ? WHERE key = ?", (b"new", "page"))
        started = time.monotonic()
        assert level.get_many(["page"])[0] == b"old"  # the last committed value, at once
        assert time.monotonic() - started < 0.5
        level._writer.execute("COMMIT")
    assert level.get_many(["page"])[0] == b"new"
    level.close()


def test_query_normalisation_keeps_meaning() -> None:
    assert normalise_query("  heat\t conduction\n") == normalise_query("heat conduction")
    assert normalise_query("ＸＹＺ") == "XYZ"  # full-width folded by NFKC
    assert normalise_query("Apple") != normalise_query("apple")


def test_embedding_cache_encodes_each_query_once(tmp_path: Path) -> None:
    inner = HashEncoder()
    encoder = CachedQueryEncoder(inner, TieredCache([MemoryLevel(100, 60), SqliteLevel(tmp_path / "c.sqlite")]), 60)
    first = encoder.encode_queries(["wing lift", "heat"])
    second = encoder.encode_queries(["heat", "new query"])
    assert inner.calls == [2, 1]  # the second call encoded only the query it had not seen
    np.testing.assert_array_equal(first[1], second[0])


def test_embedding_cache_keeps_query_setups_apart(tmp_path: Path) -> None:
    cache = TieredCache([MemoryLevel(100, 60), SqliteLevel(tmp_path / "c.sqlite")])
    fp32, int8 = HashEncoder(), HashEncoder()  # one fingerprint: their documents are comparable
    fp32.query_setup, int8.query_setup = '{"int8_queries": false}', '{"int8_queries": true}'
    CachedQueryEncoder(fp32, cache, 60).encode_queries(["wing lift"])
    CachedQueryEncoder(int8, cache, 60).encode_queries(["wing lift"])
    assert int8.calls == [1]  # encoded by its own model, not served the other's vector


@pytest.mark.integration  # the Redis server on 127.0.0.1:6379
def test_a_write_is_never_hidden_by_a_cached_page(tmp_path: Path, minilm) -> None:
    settings = load_settings(data_dir=tmp_path / "data")  # real Redis on 127.0.0.1:6379, SQLite, memory
    with open_collection(settings, encoder=minilm) as collection:
        recorder = Recorder()
        collection.cache.observer = recorder
        collection.write(DOCS)
        results, engine = collection.results, collection.engine
        page, cached = results.search(engine, SearchRequest("heat conduction", k=2))
        assert not cached and page.hits[0].id == "heat"
        again, cached = results.search(collection.engine, SearchRequest("heat  conduction", k=2))
        assert cached and [h.id for h in again.hits] == [h.id for h in page.hits]
        assert recorder.count("memory", "hit") >= 1
        collection.write([DocumentWrite(id="heat", title="Heat transfer", text="radiative heat conduction in glass")])
        fresh, cached = results.search(collection.engine, SearchRequest("heat conduction", k=2))
        assert not cached and "radiative" in fresh.hits[0].snippet
        collection.write([DocumentWrite(id="heat", op="delete")])
        after_delete, cached = results.search(collection.engine, SearchRequest("heat conduction", k=2))
        assert not cached and "heat" not in [h.id for h in after_delete.hits]
        _other_k, cached = results.search(collection.engine, SearchRequest("heat conduction", k=1))
        assert not cached  # k is part of the key


@pytest.mark.integration  # a redis-server of its own
def test_service_keeps_answering_while_redis_is_down_and_reconnects(tmp_path: Path, minilm) -> None:
    port = _free_port()
    server = _start_redis(port)
    cache = {"redis_url": f"redis://127.0.0.1:{port}/0", "redis_retry_s": 0.3, "memory_entries": 0, "sqlite": False}
    settings = load_settings(data_dir=tmp_path / "data", cache=cache)
    try:
        with open_collection(settings, encoder=minilm) as collection:
            recorder = Recorder()
            collection.cache.observer = recorder
            collection.write(DOCS)
            redis_level = collection.cache.redis()
            assert collection.results.search(collection.engine, SearchRequest("swept wing", k=1))[1] is False
            assert collection.cache.flush()  # the page reaches Redis behind the request
            assert collection.results.search(collection.engine, SearchRequest("swept wing", k=1))[1] is True
            server.terminate()
            server.wait(10)

            started = time.perf_counter()
            page, cached = collection.results.search(collection.engine, SearchRequest("heat slabs", k=1))
            assert page.hits[0].id == "heat" and not cached
            assert time.perf_counter() - started < 5  # short socket timeouts: no long stall
            assert recorder.count("redis", "error") >= 1 and not redis_level.ping()
            for _ in range(5):  # while it is down, queries keep working (bypassed)
                assert (
                    collection.results.search(collection.engine, SearchRequest("swept wing", k=1))[0].hits[0].id
                    == "wing"
                )

            server = _start_redis(port)
            time.sleep(0.4)  # past the retry interval
            assert redis_level.ping()
            collection.results.search(collection.engine, SearchRequest("propeller slipstream", k=1))
            assert collection.cache.flush()
            assert collection.results.search(collection.engine, SearchRequest("propeller slipstream", k=1))[1] is True
            assert recorder.count("redis", "hit") >= 2

            # Restarted while no lookup ran: the lookup's idle socket is dead, and one
            # reconnection answers (an empty Redis: a miss, not an outage).
            server.terminate()
            server.wait(10)
            server = _start_redis(port)
            errors, misses = recorder.count("redis", "error"), recorder.count("redis", "miss")
            assert collection.results.search(collection.engine, SearchRequest("swept wing", k=1))[1] is False
            assert recorder.count("redis", "error") == errors and recorder.count("redis", "miss") > misses
    finally:
        server.kill()


def test_micro_batching_encodes_concurrent_queries_together(minilm) -> None:
    class Slow(HashEncoder):  # records the size of every call it gets
        def encode_queries(self, texts):
            time.sleep(0.02)
            return super().encode_queries(texts)

    inner = Slow()
    batcher = MicroBatchingEncoder(inner, max_batch=64, max_wait_ms=10)
    texts = [f"query number {i}" for i in range(32)]
    results: dict[int, np.ndarray] = {}

    def ask(i: int) -> None:
        results[i] = batcher.encode_queries([texts[i]])[0]

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(inner.calls) == 32 and len(inner.calls) < 8  # batched, not one call per query
    for i, text in enumerate(texts):
        np.testing.assert_allclose(results[i], HashEncoder().encode_queries([text])[0], rtol=1e-6)

    real = MicroBatchingEncoder(minilm, max_batch=8, max_wait_ms=5)
    together = np.stack([real.encode_queries([t])[0] for t in texts[:3]])
    np.testing.assert_allclose(together, minilm.encode_queries(texts[:3]), atol=1e-5)


def test_micro_batching_passes_errors_to_every_caller() -> None:
    class Broken(HashEncoder):
        def encode_queries(self, texts):
            raise RuntimeError("encoder failed")

    batcher = MicroBatchingEncoder(Broken(), max_batch=8, max_wait_ms=5)
    with pytest.raises(RuntimeError, match="encoder failed"):
        batcher.encode_queries(["a"])


def test_async_encoding_batches_concurrent_queries_and_never_blocks_the_loop(tmp_path: Path) -> None:
    class Slow(HashEncoder):
        def encode_queries(self, texts):
            time.sleep(0.05)
            return super().encode_queries(texts)

    inner = Slow()
    encoder = CachedQueryEncoder(
        MicroBatchingEncoder(inner, max_batch=8, max_wait_ms=0), TieredCache([MemoryLevel(100, 60)]), 60
    )
    texts = [f"query number {i}" for i in range(16)]

    async def main() -> tuple[list[np.ndarray], int]:
        ticks = 0
        done = False

        async def ticker() -> None:  # runs only while the loop is free
            nonlocal ticks
            while not done:
                ticks += 1
                await asyncio.sleep(0.005)

        ticking = asyncio.create_task(ticker())
        vectors = await asyncio.gather(*(asyncio.wrap_future(encoder.submit_queries([t])) for t in texts))
        done = True
        await ticking
        return vectors, ticks

    vectors, ticks = asyncio.run(main())
    assert sum(inner.calls) == 16 and len(inner.calls) <= 4  # in batches of up to 8
    assert ticks >= 10  # ~100 ms of encoding, the loop ticking every 5 ms all along
    for text, vector in zip(texts, vectors):
        np.testing.assert_allclose(vector[0], HashEncoder().encode_queries([text])[0], rtol=1e-6)
    again = encoder.submit_queries(texts[:3])
    assert again.done() and len(inner.calls) <= 4  # cached: answered at once, nothing encoded


def test_async_encoding_passes_errors_to_the_caller() -> None:
    class Broken(HashEncoder):
        def encode_queries(self, texts):
            raise RuntimeError("encoder failed")

    encoder = CachedQueryEncoder(MicroBatchingEncoder(Broken(), 8, 0), TieredCache([MemoryLevel(100, 60)]), 60)
    with pytest.raises(RuntimeError, match="encoder failed"):
        encoder.submit_queries(["a"]).result(timeout=5)


def test_async_search_matches_the_blocking_one(tmp_path: Path, minilm) -> None:
    settings = load_settings(data_dir=tmp_path / "data", cache={"redis_url": None})
    with open_collection(settings, encoder=minilm) as collection:
        collection.write(DOCS)
        engine, results = collection.engine, collection.results
        for mode in ("default", "dense", "lexical", "hybrid"):
            blocking = engine.search(SearchRequest("heat conduction", k=2, mode=mode))
            awaited = asyncio.run(engine.search_async(SearchRequest("heat conduction", k=2, mode=mode)))
            assert [(h.id, round(h.score, 5)) for h in awaited.hits] == [
                (h.id, round(h.score, 5)) for h in blocking.hits
            ]
            assert ("encode" in awaited.timings_ms) == (mode != "lexical")
        embeddings = collection.indexes.embeddings
        first, cached = asyncio.run(results.search_async(engine, SearchRequest("swept wing", k=1), embeddings))
        again, cached_again = asyncio.run(results.search_async(engine, SearchRequest("swept  wing", k=1), embeddings))
        assert (cached, cached_again) == (False, True) and again.hits[0].id == first.hits[0].id == "wing"
        # A new page of a known query: its embedding comes with the page lookup, not encoded again.
        encoded: list[str] = []
        inner = engine.encoder.inner.submit_queries
        engine.encoder.inner.submit_queries = lambda texts: encoded.extend(texts) or inner(texts)
        second, cached = asyncio.run(results.search_async(engine, SearchRequest("swept wing", k=2), embeddings))
        assert not cached and encoded == [] and second.hits[0].id == "wing" and "encode" in second.timings_ms
        asyncio.run(results.search_async(engine, SearchRequest("heat slabs", k=2), embeddings))
        assert encoded == ["heat slabs"]


def test_async_search_retrieves_lexical_candidates_while_the_query_is_encoded(tmp_path: Path, minilm) -> None:
    """The lexical half runs on the ranking thread while the encoder holds the query; the
    encoder's completion goes straight on to ranking; a request cancelled meanwhile is never
    ranked; an encoder error reaches the caller."""
    settings = load_settings(data_dir=tmp_path / "data", cache={"redis_url": None})
    with open_collection(settings, encoder=minilm) as collection:
        collection.write(DOCS)
        engine = collection.engine
        blocking = engine.search(SearchRequest("heat conduction", k=2))
        lexical_started, ranked = threading.Event(), []
        lexical_candidates, search = engine.lexical_candidates, engine.search
        engine.lexical_candidates = lambda *a: lexical_started.set() or lexical_candidates(*a)
        engine.search = lambda *a: ranked.append(a[0].query) or search(*a)
        held: list[Future] = []

        def hold(texts):  # an encoder that answers only when told to
            held.append(Future())
            return held[-1]

        engine.encoder.submit_queries = hold

        async def main() -> None:
            task = asyncio.create_task(engine.search_async(SearchRequest("heat conduction", k=2)))
            while not held:
                await asyncio.sleep(0.001)
            assert await asyncio.to_thread(lexical_started.wait, 5)  # before any embedding exists
            held[0].set_result(minilm.encode_queries(["heat conduction"]))
            awaited = await asyncio.wait_for(task, 10)
            assert [(h.id, round(h.score, 5)) for h in awaited.hits] == [
                (h.id, round(h.score, 5)) for h in blocking.hits
            ]
            assert set(awaited.timings_ms) >= {"encode", "lexical", "vector", "rank", "hydrate"}

            cancelled = asyncio.create_task(engine.search_async(SearchRequest("swept wing", k=1)))
            while len(held) < 2:
                await asyncio.sleep(0.001)
            cancelled.cancel()
            with pytest.raises(asyncio.CancelledError):
                await cancelled  # the client is gone (its page future is cancelled with it)...
            held[1].set_result(minilm.encode_queries(["swept wing"]))  # ...before the encoder answers
            failing = asyncio.create_task(engine.search_async(SearchRequest("heat slabs", k=1)))
            while len(held) < 3:
                await asyncio.sleep(0.001)
            held[2].set_exception(RuntimeError("encoder failed"))
            with pytest.raises(RuntimeError, match="encoder failed"):
                await asyncio.wait_for(failing, 10)
            await asyncio.to_thread(engine._ranking_thread().submit(lambda: None).result, 5)  # the queue drained

        asyncio.run(main())
        assert ranked == ["heat conduction"]  # neither the cancelled nor the failed query was ranked


def test_cached_pages_round_trip_numpy_numbers_and_times() -> None:
    from datetime import datetime

    when = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)
    hit = Hit("a", np.float32(0.5), "T", "s", "news", when, {"n": 1}, {"dense": np.float64(0.25)})
    page = SearchResult(
        "q", "dynamic", [hit], {"rank": 0.1}, {"dense": np.float64(0.7)}, {"freshness": 0.0}, {"terms": 2}
    )
    back = _decode(_encode(page))
    assert back.hits[0].updated_at == when and back.hits[0].score == 0.5
    assert back.weights == {"dense": 0.7} and type(back.weights["dense"]) is float
    assert back.hits[0].signals == {"dense": 0.25} and back.features == {"terms": 2}


def test_a_page_json_cannot_carry_is_answered_uncached(caplog) -> None:
    """A document stored before integers past 64 bits were refused must not turn every search
    that finds it into a 500: the page is served, just not cached."""
    cache = TieredCache([MemoryLevel(10, 60)])
    results = ResultCache(cache, 60)
    hit = Hit("old", 0.5, "T", "s", metadata={"n": 2**70})
    results.set("page:old", SearchResult("q", "dynamic", [hit], {}))
    assert cache.get("page:old", 60) is None
    assert "not cached" in caplog.text and "64-bit" in caplog.text
    results.set("page:new", SearchResult("q", "dynamic", [Hit("new", 0.5, "T", "s", metadata={"n": 2**62})], {}))
    assert _decode(cache.get("page:new", 60)).hits[0].metadata == {"n": 2**62}


class Recording(HashEncoder):
    """Records the batches it was asked to encode, each taking ``delay_s``."""

    def __init__(self, delay_s: float = 0.0) -> None:
        super().__init__()
        self.delay_s = delay_s
        self.batches: list[tuple[str, ...]] = []

    def encode_queries(self, texts):
        time.sleep(self.delay_s)
        self.batches.append(tuple(texts))
        return super().encode_queries(texts)


def test_micro_batching_encodes_the_queries_that_queued_meanwhile_together() -> None:
    inner = Recording(delay_s=0.05)
    batcher = MicroBatchingEncoder(inner, max_batch=8, max_wait_ms=0)
    lone = batcher.submit_queries(["wing lift"]).result(timeout=5)
    np.testing.assert_array_equal(lone, HashEncoder().encode_queries(["wing lift"]))
    busy = batcher.submit_queries(["first"])  # occupies the encoder while the next two queue
    time.sleep(0.01)
    queued = [batcher.submit_queries(["second"]), batcher.submit_queries(["third"])]
    results = [future.result(timeout=5) for future in [busy, *queued]]
    assert inner.batches == [("wing lift",), ("first",), ("second", "third")]
    for text, vector in zip(["first", "second", "third"], results):
        np.testing.assert_array_equal(vector, HashEncoder().encode_queries([text]))
    # Through the embedding cache: a hit needs no encoder at all.
    cached = CachedQueryEncoder(batcher, TieredCache([MemoryLevel(100, 60)]), 60)
    inner.batches.clear()
    cached.submit_queries(["swept wing"]).result(timeout=5)
    cached.submit_queries(["swept wing"]).result(timeout=5)
    assert inner.batches == [("swept wing",)]


def test_micro_batch_max_1_still_encodes_on_the_batchers_thread(tmp_path: Path) -> None:
    """Batching off is not encoding on the caller's thread: an event loop that submits a
    query must never block on the encoder. Through ``QueryPath``, as the engine gets it
    (which had skipped the batcher at micro_batch_max 1)."""
    settings = load_settings(data_dir=tmp_path, encoder={"micro_batch_max": 1})
    encoder = Recording(delay_s=0.05)
    engine, embeddings = QueryPath().engine(
        settings,
        None,
        encoder,
        None,
        None,
        DocumentAttributes(encoder.dimension),
        "g0",  # type: ignore[arg-type]
    )
    assert embeddings is None
    started = time.perf_counter()
    pending = engine.encoder.submit_queries(["wing"])
    assert time.perf_counter() - started < 0.04 and not pending.done()
    np.testing.assert_array_equal(pending.result(timeout=5), HashEncoder().encode_queries(["wing"]))


def test_the_result_cache_looks_up_a_page_and_its_querys_embedding_together(tmp_path: Path, minilm) -> None:
    settings = load_settings(data_dir=tmp_path / "data", cache={"redis_url": None})
    with open_collection(settings, encoder=minilm) as collection:
        collection.write(DOCS)
        engine, results, embeddings = collection.engine, collection.results, collection.indexes.embeddings
        assert embeddings is not None and embeddings.cache is results.cache
        embeddings.submit_queries(["propeller noise"]).result(timeout=10)  # its embedding is cached
        lookups: list[list[str]] = []
        get_many = results.cache.get_many
        results.cache.get_many = lambda keys, **kw: lookups.append([k for k, _ in keys]) or get_many(keys, **kw)
        encoded: list[str] = []
        inner = embeddings.inner.submit_queries
        embeddings.inner.submit_queries = lambda texts: encoded.extend(texts) or inner(texts)
        page, cached = asyncio.run(results.search_async(engine, SearchRequest("propeller noise", k=1), embeddings))
        assert not cached and encoded == [] and page.hits
        assert lookups == [
            [results.key(engine, SearchRequest("propeller noise", k=1)), embeddings.key("propeller noise")]
        ]
