"""The real server process (`dss serve`) over HTTP on loopback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import SAMPLE
from tests.tiny_deepseek import build_tiny_deepseek

pytestmark = pytest.mark.integration  # `dss serve` in a subprocess

DSS = [sys.executable, "-m", "api"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dss(*args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([*DSS, *args], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


class Server:
    def __init__(self, data_dir: Path, *options: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data_dir.parent / "server.log"
        self.process = subprocess.Popen(
            [*DSS, "serve", "--port", str(self.port), "--data-dir", str(data_dir), *options],
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.time() + 120
        while True:
            assert self.process.poll() is None, self.log.read_text()
            try:
                if httpx.get(f"{self.url}/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.time() < deadline, "server did not become ready"
            time.sleep(0.3)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    data = tmp_path_factory.mktemp("served") / "data"
    _dss("ingest", str(SAMPLE), "--data-dir", str(data))
    keys = {
        role: _dss("keys", "create", "--role", role, "--data-dir", str(data)).strip()
        for role in ("reader", "writer", "admin")
    }
    server = Server(data)
    yield server, keys
    server.stop()


def test_search_write_delete_over_http(served) -> None:
    server, keys = served
    with httpx.Client(base_url=server.url, timeout=30) as client:
        reader, writer = {"X-API-Key": keys["reader"]}, {"X-API-Key": keys["writer"]}
        result = client.get("/search", params={"q": "heat transfer in supersonic flight", "k": 3}, headers=reader)
        assert result.status_code == 200 and result.json()["hits"][0]["id"] == "sci-002"
        assert result.headers["X-Request-ID"]
        assert client.get("/search", params={"q": "x"}).status_code == 401
        added = client.post(
            "/documents", json={"documents": [{"id": "http-1", "text": "ornithopter flapping wing"}]}, headers=writer
        )
        assert added.json()["applied"] == 1
        hits = client.get("/search", params={"q": "ornithopter", "mode": "lexical"}, headers=reader).json()["hits"]
        assert [h["id"] for h in hits] == ["http-1"]
        assert client.delete("/documents/http-1", headers=writer).status_code == 200
        assert (
            client.get("/search", params={"q": "ornithopter", "mode": "lexical"}, headers=reader).json()["hits"] == []
        )
        assert "dss_http_request_duration_seconds" in client.get("/metrics", headers={"X-API-Key": keys["admin"]}).text
        assert client.get("/docs").status_code == 200
    lines = [json.loads(line) for line in server.log.read_text().splitlines() if line.startswith("{")]
    searches = [line for line in lines if line.get("route") == "/search"]
    assert all(len(line["request_id"]) == 32 for line in searches)
    assert 200 in {line["status"] for line in searches}


def test_queries_never_fail_during_reindex_and_switch_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _dss("ingest", str(SAMPLE), "--data-dir", str(data))
    admin = {"X-API-Key": _dss("keys", "create", "--role", "admin", "--data-dir", str(data)).strip()}
    model = build_tiny_deepseek(tmp_path / "tiny-deepseek")
    server = Server(data)
    seen: list[tuple[str, tuple[str, ...]]] = []
    failures: list[str] = []
    stop = threading.Event()

    def fire() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            while not stop.is_set():
                try:
                    r = client.get(
                        "/search", params={"q": "latest phone camera", "k": 5, "mode": "dense"}, headers=admin
                    )
                    if r.status_code != 200:
                        failures.append(f"{r.status_code} {r.text[:200]}")
                    else:
                        body = r.json()
                        seen.append((body["generation"], tuple(h["id"] for h in body["hits"])))
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))

    try:
        shooters = [threading.Thread(target=fire) for _ in range(2)]
        for t in shooters:
            t.start()
        time.sleep(1.0)
        with httpx.Client(base_url=server.url, timeout=30) as client:
            job = client.post(
                "/admin/reindex",
                json={"encoder": {"backend": "deepseek", "model": str(model), "pooling": "last"}},
                headers=admin,
            ).json()
            deadline = time.time() + 120
            while (state := client.get(f"/admin/jobs/{job['id']}", headers=admin).json())["state"] in (
                "queued",
                "running",
            ):
                assert time.time() < deadline
                time.sleep(0.2)
            assert state["state"] == "succeeded", state
            assert state["result"]["encoder"].startswith("deepseek:")
        time.sleep(1.0)
    finally:
        stop.set()
        for t in shooters:
            t.join()
        server.stop()

    assert failures == []
    generations = [g for g, _ in seen]
    assert generations[0] == "g1" and generations[-1] == "g2"
    # Each shooter sees one switch; across both, no answer from g1 follows the first from g2 by much
    # (in-flight requests may finish on g1), and every answer within a generation is the same.
    assert {ids for g, ids in seen if g == "g1"} and len({ids for g, ids in seen if g == "g1"}) == 1
    assert len({ids for g, ids in seen if g == "g2"}) == 1
    assert {ids for g, ids in seen if g == "g1"} != {ids for g, ids in seen if g == "g2"}
    first_new = generations.index("g2")
    assert all(g == "g2" for g in generations[first_new + 2 :])
