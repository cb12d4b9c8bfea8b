"""Several serving processes, one port: the primary accepts every connection and hands them
out in turn, itself included, so that each process holds an even share.

The kernel's own ways split keep-alive connections unevenly: one shared listening socket lets
whichever event loop wakes first take a burst (62 of 64 clients on one process, measured), and
SO_REUSEPORT hashes each connection to a process (32 clients split 20/12 or worse one time in
five, 16/16 one time in seven), and the busier process sets the tail latency for as long as the
clients stay connected. Here the primary accepts on the public port and passes each accepted
socket (SCM_RIGHTS over a private Unix socket, ``dispatch.sock`` in the data directory) to the
next process in the rotation. A replica joins the rotation once it can answer, by connecting to
that socket, and leaves it when that connection ends; a connection that cannot be handed over
is served by the primary.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from pathlib import Path

import uvicorn

log = logging.getLogger("api.dispatch")
ACCEPTS_PER_WAKE = 64  # then the event loop serves its own connections again
_TOKEN = b"c"  # each message carries one socket; the byte only gives sendmsg something to send


def dispatch_socket(data_dir: Path) -> Path:
    """Where the primary of ``data_dir`` takes replicas into its rotation."""
    return Path(data_dir).resolve() / "dispatch.sock"


def open_dispatch_socket(path: Path) -> socket.socket:
    path.unlink(missing_ok=True)  # left by a primary that was killed
    registry = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)  # one message per socket
    registry.bind(str(path))
    registry.listen(64)
    return registry


class HandOffServer(uvicorn.Server):
    """uvicorn's server, which also serves connections accepted elsewhere, and which starts
    ``begin`` (a dispatcher's or an inbox's ``start``) once the app can answer."""

    def __init__(self, config: uvicorn.Config, begin: Callable[[HandOffServer], None]) -> None:
        super().__init__(config)
        self._begin = begin
        self._on_shutdown: list[Callable[[], None]] = []
        self._adopting: set[asyncio.Task[object]] = set()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._begin(self)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for stop in self._on_shutdown:
            stop()  # no new connections, then uvicorn closes the ones it serves
        await super().shutdown(sockets)

    def on_shutdown(self, stop: Callable[[], None]) -> None:
        self._on_shutdown.append(stop)

    def adopt(self, connection: socket.socket) -> None:
        """Serve an accepted connection on this event loop, as uvicorn serves its own (the
        same protocol class and server state: graceful shutdown closes it too). The factory
        mirrors the one in uvicorn's ``Server.startup``; tests/test_workers.py runs it."""
        loop = asyncio.get_running_loop()
        config = self.config

        def protocol() -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=self.lifespan.state, _loop=loop
            )

        task = loop.create_task(loop.connect_accepted_socket(protocol, sock=connection))
        self._adopting.add(task)
        task.add_done_callback(self._adopted)

    def _adopted(self, task: asyncio.Task[object]) -> None:
        self._adopting.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.warning("a handed-over connection could not be served", extra={"error": repr(error)})


class Dispatcher:
    """On the primary: accepts on ``listener`` and hands connections out round-robin."""

    def __init__(self, listener: socket.socket, registry: socket.socket) -> None:
        self.listener = listener
        self.registry = registry
        self.replicas: list[socket.socket] = []
        self._turn = 0
        self._server: HandOffServer | None = None

    def start(self, server: HandOffServer) -> None:
        loop = asyncio.get_running_loop()
        self._server = server
        for sock in (self.listener, self.registry):
            sock.setblocking(False)
        loop.add_reader(self.listener.fileno(), self._accept)
        loop.add_reader(self.registry.fileno(), self._join)
        server.on_shutdown(self.stop)

    def stop(self) -> None:
        loop = asyncio.get_running_loop()
        for sock in (self.listener, self.registry, *self.replicas):
            loop.remove_reader(sock.fileno())
            sock.close()
        self.replicas.clear()

    def _join(self) -> None:
        try:
            replica, _ = self.registry.accept()
        except BlockingIOError:
            return
        replica.setblocking(False)
        self.replicas.append(replica)
        # A replica never writes: readable means it has gone.
        asyncio.get_running_loop().add_reader(replica.fileno(), self._leave, replica)
        log.info("a replica joined the rotation", extra={"replicas": len(self.replicas)})

    def _leave(self, replica: socket.socket) -> None:
        if replica in self.replicas:
            self.replicas.remove(replica)
            asyncio.get_running_loop().remove_reader(replica.fileno())
            replica.close()
            log.warning("a replica left the rotation", extra={"replicas": len(self.replicas)})

    def _accept(self) -> None:
        assert self._server is not None
        for _ in range(ACCEPTS_PER_WAKE):
            try:
                connection, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of file descriptors, say: the connection waits in the backlog
                log.warning("accept failed", extra={"error": repr(exc)})
                return
            if not self._hand_over(connection):
                self._server.adopt(connection)

    def _hand_over(self, connection: socket.socket) -> bool:
        """True when a replica took the connection; False on the primary's own turn or when
        the replica whose turn it was could not take it (the primary then serves it)."""
        self._turn = (self._turn + 1) % (len(self.replicas) + 1)
        if self._turn == 0:
            return False
        replica = self.replicas[self._turn - 1]
        try:
            socket.send_fds(replica, [_TOKEN], [connection.fileno()])
        except BlockingIOError:
            return False  # that replica is not taking connections now: this one is not lost
        except OSError:
            self._leave(replica)
            return False
        connection.close()  # the replica holds its own descriptor now
        return True


class Inbox:
    """On a replica: joins the primary's rotation and serves the connections it is handed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock: socket.socket | None = None

    def start(self, server: HandOffServer) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.connect(str(self.path))
        self.sock.setblocking(False)
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._receive, server)
        server.on_shutdown(self.stop)

    def stop(self) -> None:
        if self.sock is not None:
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None

    def _receive(self, server: HandOffServer) -> None:
        assert self.sock is not None
        while True:
            try:
                message, fds, _, _ = socket.recv_fds(self.sock, len(_TOKEN), 1)
            except (BlockingIOError, InterruptedError):
                return
            if not message and not fds:  # the primary has gone: so will this process (api/workers.py)
                self.stop()
                return
            for fd in fds:
                server.adopt(socket.socket(fileno=fd))
