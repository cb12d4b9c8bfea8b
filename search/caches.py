"""Three cache levels for the query path: in-process LRU, Redis (shared by replicas), SQLite
on disk (survives restarts). Used for query embeddings and for result pages.

A read tries the levels in order and copies a hit into the faster levels it missed. A write
goes to the in-process level at once and to the others behind the request: one writer thread
drains a bounded queue in batches (one Redis pipeline, one SQLite transaction per batch), so a
query never waits on a cache write and the writes cost a round trip per batch instead of one
each (the writer lets a batch gather for ``write_batch_ms``). When the queue is full a write is
dropped and counted: a cache may forget, never stall. Another replica sees a page once its
batch is written (``flush`` waits for that).

Values are bytes (JSON or raw float32), never pickles: Redis is shared, and whatever reads it
must not execute what it finds.

Redis is optional at run time: when it cannot be reached, the cache skips it (a warning once
per outage, an error count in the metrics) and tries again after ``redis_retry_s``; redis-py
opens a fresh connection by itself then.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import cachetools
import redis

from search.config import CacheSettings

log = logging.getLogger(__name__)

# (level, outcome: hit | miss | error | set, seconds) -> None; the API turns these into metrics.
Observer = Callable[[str, str, float], None]


class Level(Protocol):
    name: str

    def get_many(self, keys: list[str]) -> list[bytes | None]: ...

    def set(self, key: str, value: bytes, ttl_s: int) -> None: ...

    def set_many(self, items: list[tuple[str, bytes, int]]) -> None: ...


class MemoryLevel:
    name = "memory"

    def __init__(self, entries: int, ttl_s: int) -> None:
        # One TTL for the level (the longest asked for); entries also carry their own expiry.
        self._cache: cachetools.TTLCache[str, tuple[float, bytes]] = cachetools.TTLCache(entries, ttl_s)
        self._lock = threading.Lock()

    def get_many(self, keys: list[str]) -> list[bytes | None]:
        with self._lock:
            entries = [self._cache.get(key) for key in keys]
        now = time.time()
        return [entry[1] if entry is not None and entry[0] >= now else None for entry in entries]

    def set(self, key: str, value: bytes, ttl_s: int) -> None:
        with self._lock:
            self._cache[key] = (time.time() + ttl_s, value)

    def set_many(self, items: list[tuple[str, bytes, int]]) -> None:
        for item in items:
            self.set(*item)

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()


class RedisUnavailable(Exception):
    """Redis is being skipped after a failure (until the retry time)."""


class RedisLevel:
    name = "redis"

    def __init__(self, url: str, prefix: str, timeout_ms: int, retry_s: float) -> None:
        timeout = timeout_ms / 1000
        self._client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._lookups = threading.local()  # each looking-up thread's own bare connection
        self._prefix = prefix
        self._retry_s = retry_s
        self._down_until = 0.0
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    def _call(self, fn: Callable[[], object]) -> object:
        if not self.available:
            raise RedisUnavailable()
        try:
            result = fn()
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            with self._lock:
                if self.available:  # first failure of this outage: say so once
                    log.warning("redis unreachable, bypassing it for %.1f s: %s", self._retry_s, exc)
                self._down_until = time.monotonic() + self._retry_s
            raise RedisUnavailable() from exc
        if self._down_until:
            with self._lock:
                if self._down_until:
                    log.warning("redis reachable again")
                    self._down_until = 0.0
        return result

    def get_many(self, keys: list[str]) -> list[bytes | None]:
        """One MGET on this thread's own connection. A lookup is on the query path (mostly the
        event loop's thread): through the client, redis-py's per-command layers (pool check-out
        and release, retry, argument checks, its observability hooks) had held the GIL for
        about twice as long as sending the command and parsing the reply."""
        command = ["MGET", *(self._prefix + key for key in keys)]

        def mget() -> list[bytes | None]:
            connection = getattr(self._lookups, "connection", None)
            if connection is None:
                connection = self._lookups.connection = self._client.connection_pool.make_connection()
            reply: list[bytes | None]
            try:
                reply = _command(connection, command)
            except redis.ConnectionError:  # a socket Redis closed while it was idle: reconnect once
                reply = _command(connection, command)
            return reply

        return self._call(mget)  # type: ignore[return-value]

    def set(self, key: str, value: bytes, ttl_s: int) -> None:
        self._call(lambda: self._client.set(self._prefix + key, value, ex=ttl_s))

    def set_many(self, items: list[tuple[str, bytes, int]]) -> None:
        def write() -> None:
            pipe = self._client.pipeline(transaction=False)
            for key, value, ttl_s in items:
                pipe.set(self._prefix + key, value, ex=ttl_s)
            pipe.execute()

        self._call(write)

    def ping(self) -> bool:
        try:
            return bool(self._call(self._client.ping))
        except RedisUnavailable:
            return False


class _Connection(Protocol):
    """What ``_command`` uses of a redis-py connection (whose own methods are untyped)."""

    def send_command(self, *args: str) -> None: ...
    def read_response(self) -> Any: ...
    def disconnect(self) -> None: ...


def _command(connection: _Connection, command: list[str]) -> Any:
    try:
        connection.send_command(*command)
        return connection.read_response()
    except BaseException:
        connection.disconnect()  # nothing half read is left for the next command
        raise


class SqliteLevel:
    name = "sqlite"

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Two connections: in WAL mode a reader never waits for the writer, so a lookup on the
        # query path never stalls behind a batch commit or a checkpoint's fsync.
        self._writer = self._connect(path)
        self._writer.execute("CREATE TABLE IF NOT EXISTS cache (key TEXT PRIMARY KEY, value BLOB, expires REAL)")
        self._writer.execute("CREATE INDEX IF NOT EXISTS cache_expires ON cache (expires)")
        self._reader = self._connect(path)
        self._read_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._writes = 0

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    def get_many(self, keys: list[str]) -> list[bytes | None]:
        marks = ",".join("?" * len(keys))
        with self._read_lock:
            rows = self._reader.execute(
                f"SELECT key, value, expires FROM cache WHERE key IN ({marks})", keys
            ).fetchall()
        now = time.time()
        found = {key: bytes(value) for key, value, expires in rows if expires >= now}
        return [found.get(key) for key in keys]

    def set(self, key: str, value: bytes, ttl_s: int) -> None:
        self.set_many([(key, value, ttl_s)])

    def set_many(self, items: list[tuple[str, bytes, int]]) -> None:
        now = time.time()
        with self._write_lock:
            db = self._writer
            db.execute("BEGIN")  # one transaction per batch
            try:
                db.executemany(
                    "INSERT OR REPLACE INTO cache (key, value, expires) VALUES (?, ?, ?)",
                    [(key, value, now + ttl_s) for key, value, ttl_s in items],
                )
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            before = self._writes
            self._writes += len(items)
            if self._writes // 1000 != before // 1000:  # keep the file from growing without bound
                db.execute("DELETE FROM cache WHERE expires < ?", (now,))

    def close(self) -> None:
        with self._read_lock, self._write_lock:
            self._reader.close()
            self._writer.close()


class TieredCache:
    def __init__(
        self,
        levels: list[Level],
        observer: Observer | None = None,
        queue_size: int = 10_000,
        batch_wait_s: float = 0.0,
    ) -> None:
        self.levels = levels
        self.observer = observer or (lambda level, outcome, seconds: None)
        # The in-process level is written at once; the others (network, disk) behind.
        self._now = [level for level in levels if isinstance(level, MemoryLevel)]
        self._behind = [level for level in levels if not isinstance(level, MemoryLevel)]
        self._queue: queue.Queue[tuple[str, bytes, int] | None] = queue.Queue(queue_size)
        self._writer: threading.Thread | None = None
        self._writer_lock = threading.Lock()
        self._batch_wait_s = batch_wait_s

    def get(self, key: str, ttl_s: int) -> bytes | None:
        return self.get_many([(key, ttl_s)])[0]

    def get_many(self, lookups: Sequence[tuple[str, int]], first_decides: bool = False) -> list[bytes | None]:
        """The values of several keys (each with the TTL a copy-back gets), one call per level
        for all the keys still missing: one Redis round trip for a page and its query's
        embedding, not two. ``first_decides``: the others are wanted only while the first is
        missing (a page found makes its query's embedding moot)."""
        values: list[bytes | None] = [None] * len(lookups)
        missing = list(range(len(lookups)))
        for i, level in enumerate(self.levels):
            if not missing or (first_decides and values[0] is not None):
                break
            started = time.perf_counter()
            try:
                found = level.get_many([lookups[j][0] for j in missing])
            except RedisUnavailable:
                for _ in missing:
                    self.observer(level.name, "error", time.perf_counter() - started)
                continue
            seconds = time.perf_counter() - started
            for j, value in zip(missing, found):
                self.observer(level.name, "hit" if value is not None else "miss", seconds)
                if value is not None:
                    values[j] = value
                    self._write(self.levels[:i], lookups[j][0], value, lookups[j][1])
            missing = [j for j in missing if values[j] is None]
        return values

    def set(self, key: str, value: bytes, ttl_s: int) -> None:
        self._write(self.levels, key, value, ttl_s)

    def _write(self, levels: list[Level], key: str, value: bytes, ttl_s: int) -> None:
        for level in levels:
            if level in self._now:
                self._set_many(level, [(key, value, ttl_s)])
        if any(level in self._behind for level in levels):
            self._ensure_writer()
            try:
                self._queue.put_nowait((key, value, ttl_s))
            except queue.Full:
                self.observer("write-behind", "dropped", 0.0)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every queued write reached its levels; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.002)
        return True

    def _ensure_writer(self) -> None:
        if self._writer is None:
            with self._writer_lock:
                if self._writer is None:
                    self._writer = threading.Thread(target=self._drain, name="cache-writer", daemon=True)
                    self._writer.start()

    def _drain(self) -> None:
        while True:
            batch = [self._queue.get()]
            if self._batch_wait_s:  # let a batch gather: a round trip and a commit for many writes
                time.sleep(self._batch_wait_s)
            while len(batch) < 256:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            items = [item for item in batch if item is not None]
            for level in self._behind:  # a copy-back also rewrites the level that had it: harmless
                self._set_many(level, items)
            for _ in batch:
                self._queue.task_done()
            if len(items) < len(batch):
                return  # close() asked the writer to stop

    def _set_many(self, level: Level, items: list[tuple[str, bytes, int]]) -> None:
        if not items:
            return
        started = time.perf_counter()
        try:
            level.set_many(items)
        except RedisUnavailable:
            self.observer(level.name, "error", time.perf_counter() - started)
            return
        except Exception:  # a failing cache level must not end the writer thread
            log.exception("cache write to %s failed", level.name)
            self.observer(level.name, "error", time.perf_counter() - started)
            return
        seconds = (time.perf_counter() - started) / len(items)
        for _ in items:
            self.observer(level.name, "set", seconds)

    def redis(self) -> RedisLevel | None:
        return next((level for level in self.levels if isinstance(level, RedisLevel)), None)

    def close(self) -> None:
        if self._writer is not None:
            self.flush()
            self._queue.put(None)
            self._writer.join(timeout=10)
        for level in self.levels:
            if isinstance(level, SqliteLevel):
                level.close()


def build_cache(settings: CacheSettings, data_dir: Path, observer: Observer | None = None) -> TieredCache | None:
    """The configured levels, fastest first; None when caching is off."""
    if not settings.enabled:
        return None
    levels: list[Level] = []
    if settings.memory_entries:
        levels.append(MemoryLevel(settings.memory_entries, max(settings.ttl_s, settings.embedding_ttl_s)))
    if settings.redis_url:
        levels.append(
            RedisLevel(settings.redis_url, settings.key_prefix, settings.redis_timeout_ms, settings.redis_retry_s)
        )
    if settings.sqlite:
        levels.append(SqliteLevel(data_dir / "cache.sqlite"))
    return TieredCache(levels, observer, batch_wait_s=settings.write_batch_ms / 1000)
