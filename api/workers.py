"""Several serving processes behind one port: this process is the primary, the others replicas.

One worker process is bound by its GIL and its event loop to about one core; a replica adds
another. The primary accepts every connection on the port and hands each to the process with
the fewest open connections, itself included (api/dispatch.py). It serves ``data_dir`` as a
single process would: it writes its indexes, runs the Kafka consumer and the reindex jobs, and
listens on a private Unix socket to which replicas relay admin requests (api/forward.py).
Replicas keep their own index copies (indexer/replica.py); every process follows the shared
store, so a write taken by any of them is searchable in all within ``index.follow_interval_ms``.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing.process import BaseProcess

import uvicorn
from prometheus_client import multiprocess

from api.app import create_app, prepare_serving_process
from api.dispatch import Dispatcher, HandOffServer, Inbox, dispatch_socket, open_dispatch_socket
from api.forward import primary_socket
from api.logs import configure_json_logging
from api.metrics import multiprocess_metrics
from indexer.collection import open_collection
from indexer.replica import open_replica
from search.config import ConfigError, Settings

log = logging.getLogger("api.workers")
RESTART_DELAY_S = 10.0  # a replica that keeps failing is started again at most this often


def serve_workers(settings: Settings, host: str, port: int, consume: bool = False) -> None:
    """Serve ``settings.api.workers`` processes on ``host:port`` until SIGINT / SIGTERM."""
    if not settings.index.follow_interval_ms:
        raise ConfigError(
            "api.workers > 1 needs index.follow_interval_ms > 0: workers see each other's writes by following the store"
        )
    collection = open_collection(settings)  # first: the port opens once the primary can answer
    private = primary_socket(settings.data_dir)
    try:
        try:
            listener = listening_socket(host, port)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc}") from None
        private.unlink(missing_ok=True)  # left by a primary that was killed
        relay = _config(None, uds=str(private)).bind_socket()
        rotation = dispatch_socket(settings.data_dir)
        dispatcher = Dispatcher(listener, open_dispatch_socket(rotation))
        replicas = Replicas(settings)
        replicas.start()
        try:
            prepare_serving_process(settings.api)
            _serve_until_stopped(create_app(settings, collection, consume=consume), dispatcher.start, [relay])
        finally:
            replicas.stop()
            private.unlink(missing_ok=True)
            rotation.unlink(missing_ok=True)
    finally:
        collection.close()


class Replicas:
    """Replica processes 1..N-1, started again when one exits while serving goes on."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.processes: dict[int, BaseProcess] = {}
        self.started_at: dict[int, float] = {}
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # no replica is started once stop() has begun
        self._context = multiprocessing.get_context("spawn")  # no fork of a process holding threads

    def start(self) -> None:
        for number in range(1, self.settings.api.workers):
            self._start(number)
        threading.Thread(target=self._supervise, name="dss-replicas", daemon=True).start()

    def _start(self, number: int) -> None:
        process = self._context.Process(
            target=run_replica,
            args=(self.settings.model_dump_json(), number, os.getpid()),
            name=f"dss-replica-{number}",
            daemon=False,
        )
        process.start()
        self.processes[number] = process
        self.started_at[number] = time.monotonic()
        log.info("replica started", extra={"replica": number, "pid": process.pid})

    def _supervise(self) -> None:
        while not self._stopping.wait(1.0):
            for number, process in list(self.processes.items()):
                if process.is_alive() or time.monotonic() - self.started_at[number] < RESTART_DELAY_S:
                    continue
                with self._lock:
                    if self._stopping.is_set():
                        return
                    log.warning(
                        "replica exited; starting it again", extra={"replica": number, "exitcode": process.exitcode}
                    )
                    if multiprocess_metrics():
                        multiprocess.mark_process_dead(process.pid)  # its live gauges no longer count
                    self._start(number)

    def stop(self, timeout_s: float = 30.0) -> None:
        with self._lock:
            self._stopping.set()
        for process in self.processes.values():
            if process.is_alive():
                process.terminate()  # SIGTERM: uvicorn finishes the requests in flight
        deadline = time.monotonic() + timeout_s
        for process in self.processes.values():
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()


def run_replica(primary_json: str, number: int, parent_pid: int) -> None:
    """A replica process's main: open its copy, then join the primary's rotation and serve;
    stop with the primary."""
    configure_json_logging()
    primary = Settings.model_validate_json(primary_json)
    collection = open_replica(primary, number)
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), name="dss-parent-watch", daemon=True).start()
    try:
        prepare_serving_process(collection.settings.api)
        app = create_app(collection.settings, collection, primary_dir=primary.data_dir)
        _serve_until_stopped(app, Inbox(dispatch_socket(primary.data_dir)).start)
    finally:
        collection.close()


def listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=2048)


def _serve_until_stopped(
    app: object, begin: Callable[[HandOffServer], None], sockets: Sequence[socket.socket] = ()
) -> None:
    # uvicorn re-raises the signal that stopped it once it has put back the handlers it found:
    # with these, that returns to the caller (to close the indexes) instead of exiting.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    HandOffServer(_config(app), begin).run(sockets=list(sockets))


def _exit_with_parent(parent_pid: int) -> None:
    """A replica whose primary is gone (killed without a chance to stop it) stops too."""
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


def _config(app: object, **bind: object) -> uvicorn.Config:
    return uvicorn.Config(app, log_config=None, access_log=False, **bind)  # type: ignore[arg-type]
