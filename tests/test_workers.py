"""`dss serve --workers 2`: a primary and a replica process behind one port."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import SAMPLE
from tests.test_server import Server, _dss

pytestmark = pytest.mark.integration  # spawned serving processes (dss serve --workers)


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str], Path]]:
    data = tmp_path_factory.mktemp("workers") / "data"
    _dss("ingest", str(SAMPLE), "--data-dir", str(data))
    keys = {
        role: _dss("keys", "create", "--role", role, "--data-dir", str(data)).strip()
        for role in ("reader", "writer", "admin")
    }
    server = Server(data, "--workers", "2")
    yield server, {"X-API-Key": keys["admin"]}, data
    server.stop()


def _from_each_worker(
    server: Server, headers: dict[str, str], ask: Callable[[httpx.Client], object], timeout_s: float = 120
) -> dict[str, object]:
    """``ask``'s answer from each worker: a new connection per try lands on either process;
    /ready on the same connection says which one answered (a connection stays with one)."""
    answers: dict[str, object] = {}
    deadline = time.time() + timeout_s
    while len(answers) < 2:
        assert time.time() < deadline, f"only {sorted(answers)} answered: {server.log.read_text()[-3000:]}"
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
            worker = client.get("/ready").json()["worker"]
            if worker["role"] in answers:
                continue
            answer = ask(client)
            if answer is not None:
                answers[worker["role"]] = answer
    return answers


def _ids(client: httpx.Client, query: str) -> list[str]:
    result = client.get("/search", params={"q": query, "k": 5, "mode": "lexical"})
    assert result.status_code == 200, result.text
    return [hit["id"] for hit in result.json()["hits"]]


def test_both_workers_answer_with_the_primary_keys(workers) -> None:
    server, admin, _ = workers
    pids = _from_each_worker(server, admin, lambda client: client.get("/ready").json()["worker"]["pid"])
    assert set(pids) == {"primary", "replica"} and pids["primary"] != pids["replica"]
    # Keys made in the primary's data directory are the replica's keys as well.
    unauthorised = _from_each_worker(server, {}, lambda client: client.get("/search", params={"q": "wing"}).status_code)
    assert unauthorised == {"primary": 401, "replica": 401}


def test_connections_are_handed_out_in_turn(workers) -> None:
    server, admin, _ = workers
    _from_each_worker(server, admin, lambda client: True)  # both are in the rotation
    # Sixteen keep-alive connections opened one after another: eight for each process (a hash
    # of the address, as SO_REUSEPORT spreads them, splits them 8/8 one time in five).
    clients = [httpx.Client(base_url=server.url, headers=admin, timeout=30) for _ in range(16)]
    try:
        roles = Counter(client.get("/ready").json()["worker"]["role"] for client in clients)
        again = Counter(client.get("/ready").json()["worker"]["role"] for client in clients)
    finally:
        for client in clients:
            client.close()
    assert roles == {"primary": 8, "replica": 8}
    assert again == roles  # each connection stays with the process that took it


def test_long_lived_connections_spread_when_short_ones_come_between(workers) -> None:
    server, admin, _ = workers
    _from_each_worker(server, admin, lambda client: True)  # both are in the rotation
    # Turns alone would put all eight long-lived connections on one process: each short one
    # takes the other turn. Counting what is open puts them on both.
    kept = []
    try:
        for _ in range(8):
            client = httpx.Client(base_url=server.url, headers=admin, timeout=30)
            kept.append((client, client.get("/ready").json()["worker"]["role"]))
            with httpx.Client(base_url=server.url, headers=admin, timeout=30) as short:
                short.get("/ready")
            time.sleep(0.3)  # for the closed connection's process to count it
        roles = Counter(role for _, role in kept)
    finally:
        for client, _ in kept:
            client.close()
    assert roles["primary"] >= 3 and roles["replica"] >= 3, roles


def test_a_write_taken_by_any_worker_is_searchable_in_both(workers) -> None:
    server, admin, _ = workers
    for n in range(4):  # new connections: some writes land on each worker
        with httpx.Client(base_url=server.url, headers=admin, timeout=30) as client:
            body = {"documents": [{"id": f"zebra-{n}", "text": f"zebra crossing number {n}"}]}
            assert client.post("/documents", json=body).status_code == 200

    def sees_every_write(client: httpx.Client) -> bool | None:
        found = {doc_id for doc_id in _ids(client, "zebra crossing") if doc_id.startswith("zebra-")}
        return True if found == {f"zebra-{n}" for n in range(4)} else None

    assert _from_each_worker(server, admin, sees_every_write, timeout_s=30) == {"primary": True, "replica": True}


def test_admin_reindex_runs_on_the_primary_and_the_replica_follows(workers) -> None:
    server, admin, data = workers
    with httpx.Client(base_url=server.url, headers=admin, timeout=30) as client:
        job = client.post("/admin/reindex")
        assert job.status_code == 202, job.text
        deadline = time.time() + 120
        # Polled on new connections: a replica relays the question to the primary, which runs the job.
        while (
            state := httpx.get(f"{server.url}/admin/jobs/{job.json()['id']}", headers=admin).json()["state"]
        ) != "succeeded":
            assert state in ("queued", "running") and time.time() < deadline, state
            time.sleep(0.2)
    generation = (data / "indexes" / "CURRENT").read_text().strip()

    def generation_served(client: httpx.Client) -> str | None:
        served = client.get("/search", params={"q": "wing"}).json()["generation"]
        return served if served == generation else None

    assert _from_each_worker(server, admin, generation_served, timeout_s=60) == {
        "primary": generation,
        "replica": generation,
    }
    assert (data / "replicas" / "r1" / "indexes" / "CURRENT").read_text().strip() == generation


def test_metrics_add_up_every_worker(workers) -> None:
    server, admin, _ = workers
    _from_each_worker(server, admin, lambda client: client.get("/ready").json()["worker"]["pid"])  # both serve
    before = _health_count(server, admin)
    for _ in range(20):  # new connections: both processes answer some
        assert httpx.get(f"{server.url}/health").status_code == 200
    # Whichever process answers the scrape, it counts what both served.
    for _ in range(3):
        assert _health_count(server, admin) >= before + 20


def _health_count(server: Server, admin: dict[str, str]) -> float:
    text = httpx.get(f"{server.url}/metrics", headers=admin).text
    prefix = 'dss_http_request_duration_seconds_count{method="GET",route="/health",status="200"}'
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix))


def test_a_killed_replica_is_started_again_and_all_stop_together(workers) -> None:
    server, admin, _ = workers
    replica = _from_each_worker(server, admin, lambda client: client.get("/ready").json()["worker"]["pid"])["replica"]
    os.kill(replica, signal.SIGKILL)
    # A connection handed to it just before it died is lost with it (as with any server that
    # crashes); once it is gone, it has left the rotation and every connection is answered.
    _wait_gone(replica, "the killed replica was not reaped")
    for _ in range(6):
        with httpx.Client(base_url=server.url, headers=admin, timeout=30) as client:
            assert client.get("/ready").status_code == 200
    deadline = time.time() + 120
    while True:  # the primary serves alone meanwhile, then a new replica joins
        pids = _from_each_worker(server, admin, lambda client: client.get("/ready").json()["worker"]["pid"])
        if pids["replica"] != replica:
            break
        assert time.time() < deadline, "the replica was not started again"
    os.kill(server.process.pid, signal.SIGTERM)  # the primary alone: it stops its replicas
    server.process.wait(timeout=60)
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # every process is gone: no orphaned replica


def test_replicas_stop_by_themselves_when_the_primary_is_killed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _dss("ingest", str(SAMPLE), "--data-dir", str(data))
    server = Server(data, "--workers", "2")
    try:
        env = {"X-API-Key": _dss("keys", "create", "--role", "reader", "--data-dir", str(data)).strip()}
        replica = _from_each_worker(server, env, lambda client: client.get("/ready").json()["worker"]["pid"])["replica"]
        os.kill(server.process.pid, signal.SIGKILL)  # no chance to stop anything
        _wait_gone(replica, "the replica outlived its primary")
    finally:
        server.stop()


def _wait_gone(pid: int, message: str, timeout_s: float = 30) -> None:
    deadline = time.time() + timeout_s
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        assert time.time() < deadline, message
        time.sleep(0.1)


def test_a_replica_whose_primary_is_gone_answers_admin_requests_with_503(tmp_path: Path, hash_encoder) -> None:
    from fastapi.testclient import TestClient

    from api.app import create_app
    from indexer.collection import open_collection
    from search.config import load_settings

    settings = load_settings(data_dir=tmp_path / "replica", api={"auth": False})
    with (
        open_collection(settings, encoder=hash_encoder) as collection,
        TestClient(create_app(settings, collection, primary_dir=tmp_path / "primary")) as client,
    ):
        relayed = client.post("/admin/reindex")
        assert relayed.status_code == 503 and "primary serving process" in relayed.json()["error"]
        assert relayed.json()["request_id"] == relayed.headers["X-Request-ID"]
        assert client.get("/search", params={"q": "anything"}).status_code == 200  # queries stay local


def test_a_replica_copy_made_by_another_encoder_is_made_again_from_the_store(tmp_path: Path, minilm) -> None:
    from indexer.collection import open_collection
    from indexer.ingest import ingest
    from indexer.layout import current_generation
    from indexer.reindex import rebuild
    from indexer.replica import GenerationFollower, open_replica
    from search.config import EncoderSettings, load_settings
    from search.encoders import load_encoder
    from search.store import Store
    from tests.tiny_deepseek import build_tiny_deepseek

    primary = load_settings(data_dir=tmp_path / "data")
    with open_collection(primary, encoder=minilm) as collection:
        ingest(collection, SAMPLE, 64, 10**6)
    with open_replica(primary, 1) as replica:
        assert replica.encoder.fingerprint == minilm.fingerprint and replica.vectors.count == 40
    # An offline reindex of the primary with another encoder; the replica was not running.
    tiny = EncoderSettings(backend="deepseek", model=str(build_tiny_deepseek(tmp_path / "tiny")))
    tiny_encoder = load_encoder(tiny)
    store = Store(primary.store_url)
    rebuild(primary.model_copy(update={"encoder": tiny}), store, tiny_encoder)
    store.close()
    with open_replica(primary, 1) as replica:
        assert replica.encoder.fingerprint == tiny_encoder.fingerprint != minilm.fingerprint
        assert replica.vectors.count == 40 and replica.settings.encoder == tiny
        # Built again from scratch, the copy still takes the primary's generation name.
        assert replica.generation.name == current_generation(primary.data_dir).name == "g2"
        follower = GenerationFollower(replica, primary.data_dir)
        for _ in range(2):  # two reindexes of the primary while the replica serves
            store = Store(primary.store_url)
            rebuild(primary.model_copy(update={"encoder": tiny}), store, tiny_encoder)
            store.close()
        assert follower.poll() is not None and follower.poll() is None
        assert replica.generation.name == current_generation(replica.settings.data_dir).name == "g4"
        assert replica.vectors.count == 40
