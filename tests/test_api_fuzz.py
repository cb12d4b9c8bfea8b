"""Schemathesis against the OpenAPI schema: no request, however malformed, gets a 5xx."""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from api.app import create_app
from api.keys import KeyStore, Role
from indexer.collection import open_collection
from indexer.ingest import ingest
from search.config import load_settings
from tests.conftest import SAMPLE, HashEncoder

pytestmark = pytest.mark.integration  # a long schemathesis run against the app

DATA = Path(__import__("tempfile").mkdtemp(prefix="dss-fuzz-"))
SETTINGS = load_settings(data_dir=DATA, api={"max_body_bytes": 200_000})
COLLECTION = open_collection(SETTINGS, encoder=HashEncoder())
ingest(COLLECTION, SAMPLE, 64, 10**6)
ADMIN_KEY = KeyStore(DATA).create(Role.admin, "fuzz")[0]
APP = create_app(SETTINGS, COLLECTION)

# Reindex jobs are exercised in test_api; fuzzing them would only queue background rebuilds.
schema = schemathesis.openapi.from_asgi("/openapi.json", APP).exclude(path="/admin/reindex")


@pytest.fixture(scope="module", autouse=True)
def _close_collection():
    yield
    COLLECTION.close()


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: schemathesis.Case) -> None:
    response = case.call(headers={"X-API-Key": ADMIN_KEY})
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:500]}"
    )
    if response.status_code >= 400:
        assert "error" in response.json()
