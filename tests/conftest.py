from __future__ import annotations

import os
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from search.config import Settings, load_settings
from search.encoders.base import Encoder, Fingerprint, l2_normalise
from search.store import WriteRefused

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "sample.jsonl"
PG_ADMIN_URL = os.environ.get("DSS_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")


# Fixtures that start or reach a real server or process, or load the real MiniLM model (seconds
# per test: `minilm`, and test_api's `app_env` built on it): the tests using them are integration
# tests (pyproject.toml's markers; `pytest -m "not integration"` is the fast unit run).
INTEGRATION_FIXTURES = frozenset({"postgres_url", "broker", "served", "workers", "minilm", "app_env"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks ``integration`` every test on PostgreSQL (``postgres_url``, the ``postgres``
    marker, ``store_url[postgresql]``), the Kafka broker, a ``dss serve`` process or the real
    model; modules that are integration throughout say so with ``pytestmark``."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_postgres = callspec is not None and "postgresql" in callspec.id.split("-")
        fixtures = getattr(item, "fixturenames", ())
        if on_postgres or item.get_closest_marker("postgres") or INTEGRATION_FIXTURES.intersection(fixtures):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def _clean_dss_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests build their own settings; a developer's DSS_* variables must not leak in."""
    for name in list(os.environ):
        if name.startswith("DSS_") and name != "DSS_TEST_PG_URL":
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def minilm() -> Encoder:
    """The real packaged all-MiniLM-L6-v2 on torch, the reference the other runtimes are held
    to (loaded once per test session; the served processes run the default, ``auto``)."""
    from search.config import EncoderSettings
    from search.encoders import load_encoder

    return load_encoder(EncoderSettings(runtime="torch"))


class HashEncoder(Encoder):
    """A deterministic bag-of-words encoder for unit tests that need no model."""

    def __init__(self, dimension: int = 32, name: str = "hash") -> None:
        self.fingerprint = Fingerprint("test", name, dimension, "bow")
        self.device = "cpu"
        self.calls: list[int] = []

    def _encode(self, texts) -> np.ndarray:
        self.calls.append(len(texts))
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                seed = zlib.crc32(word.encode())
                out[row] += np.random.default_rng(seed).standard_normal(self.dimension)
            out[row, 0] += 1e-3  # never all zero
        return l2_normalise(out)

    def encode_documents(self, texts):
        return self._encode(list(texts))

    def encode_queries(self, texts):
        return self._encode(list(texts))


@pytest.fixture
def hash_encoder() -> HashEncoder:
    return HashEncoder()


def _postgres_reachable() -> bool:
    from sqlalchemy import create_engine, text

    try:
        engine = create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        return True
    except Exception:
        return False


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh database on the real PostgreSQL server, dropped afterwards."""
    from sqlalchemy import create_engine, text

    if not _postgres_reachable():
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL}")
        pytest.skip("PostgreSQL is not reachable")
    name = f"dss_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.sqlite'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(data_dir=tmp_path / "data")


def refuse_writes_of(monkeypatch: pytest.MonkeyPatch, collection, doc_id: str | None, reason: str) -> None:
    """Make the store refuse every batch that holds ``doc_id`` (every batch: None), as a
    database refuses a value it cannot hold: a refusal no check at the door foresaw."""
    write = collection.indexes.indexer.write

    def refusing(changes):
        if doc_id is None or any(change.id == doc_id for change in changes):
            raise WriteRefused(reason)
        return write(changes)

    monkeypatch.setattr(collection.indexes.indexer, "write", refusing)
