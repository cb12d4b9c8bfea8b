"""Several serving processes, one port: the primary accepts every connection and hands it to
the process, itself included, that holds the fewest open connections (in turn among equals),
so that each process holds an even share.

The kernel's own ways split keep-alive connections unevenly: one shared listening socket lets
whichever event loop wakes first take a burst (nearly all clients on one process), and
SO_REUSEPORT hashes each connection to a process (often far from even), and the busier process
sets the tail latency for as long as the clients stay connected (docs/history.md). Here the primary accepts on the public port and passes each accepted
socket (SCM_RIGHTS over a private Unix socket, ``dispatch.sock`` in the data directory) to the
chosen process. A replica joins the rotation once it can answer, by connecting to that socket,
and leaves it when that connection ends; a connection that cannot be handed over is served by
the primary. Turns alone would let the long-lived connections pile up on one process whenever
short ones come between them (a client that reconnects for each request, next to a proxy's
pool): the primary knows what it handed to each process, and each replica reports back, over
the same socket, how many of those have closed.
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
        self._on_close: Callable[[], None] = lambda: None
        self._protocol_class: type[asyncio.Protocol] | None = None

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

    def on_close(self, closed: Callable[[], None]) -> None:
        """``closed`` runs once for each adopted connection, when it ends."""
        self._on_close = closed

    def _counting_protocol(self) -> type[asyncio.Protocol]:
        if self._protocol_class is None:
            server = self

            class Counted(self.config.http_protocol_class):  # type: ignore[name-defined,misc]
                """uvicorn's protocol, which also tells when its connection ends."""

                def connection_lost(self, exc: Exception | None) -> None:
                    super().connection_lost(exc)
                    server._on_close()

            self._protocol_class = Counted
        return self._protocol_class

    def adopt(self, connection: socket.socket) -> None:
        """Serve an accepted connection on this event loop, as uvicorn serves its own (the
        same protocol class and server state: graceful shutdown closes it too). The factory
        mirrors the one in uvicorn's ``Server.startup``; tests/test_workers.py runs it."""
        loop = asyncio.get_running_loop()
        config, protocol_class = self.config, self._counting_protocol()

        def protocol() -> asyncio.Protocol:
            return protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=self.lifespan.state, _loop=loop
            )

        task = loop.create_task(loop.connect_accepted_socket(protocol, sock=connection))
        self._adopting.add(task)
        task.add_done_callback(self._adopted)

    def _adopted(self, task: asyncio.Task[object]) -> None:
        self._adopting.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.warning("a handed-over connection could not be served", extra={"error": repr(error)})
            self._on_close()  # it never opened, so it will not close


class Dispatcher:
    """On the primary: accepts on ``listener`` and hands each connection to the process with
    the fewest open ones, in turn among equals."""

    def __init__(self, listener: socket.socket, registry: socket.socket) -> None:
        self.listener = listener
        self.registry = registry
        # Open connections by process, in rotation order: None (the primary), then the replicas.
        self.open: dict[socket.socket | None, int] = {None: 0}
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
        server.on_close(self._closed_here)

    def stop(self) -> None:
        loop = asyncio.get_running_loop()
        for sock in (self.listener, self.registry, *self.replicas):
            loop.remove_reader(sock.fileno())
            sock.close()
        self.open = {None: 0}

    @property
    def replicas(self) -> list[socket.socket]:
        return [process for process in self.open if process is not None]

    def _join(self) -> None:
        try:
            replica, _ = self.registry.accept()
        except BlockingIOError:
            return
        replica.setblocking(False)
        self.open[replica] = 0
        asyncio.get_running_loop().add_reader(replica.fileno(), self._hear, replica)
        log.info("a replica joined the rotation", extra={"replicas": len(self.replicas)})

    def _hear(self, replica: socket.socket) -> None:
        """A replica writes how many of its connections closed; an end of file: it has gone."""
        while True:
            try:
                message = replica.recv(16)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                message = b""
            if not message:
                return self._leave(replica)
            self.open[replica] = max(0, self.open[replica] - int(message))

    def _leave(self, replica: socket.socket) -> None:
        if replica in self.open:
            del self.open[replica]
            asyncio.get_running_loop().remove_reader(replica.fileno())
            replica.close()
            log.warning("a replica left the rotation", extra={"replicas": len(self.replicas)})

    def _closed_here(self) -> None:
        self.open[None] = max(0, self.open[None] - 1)

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
                self.open[None] += 1
                self._server.adopt(connection)

    def _next(self) -> socket.socket | None:
        """The process with the fewest open connections, the first after the last one chosen
        among equals; None: the primary."""
        rotation = list(self.open)
        order = [rotation[(self._turn + 1 + i) % len(rotation)] for i in range(len(rotation))]
        chosen = min(order, key=lambda process: self.open[process])  # the first of the fewest
        self._turn = rotation.index(chosen)
        return chosen

    def _hand_over(self, connection: socket.socket) -> bool:
        """True when a replica took the connection; False when the primary's is the fewest or
        the replica chosen could not take it (the primary then serves it)."""
        replica = self._next()
        if replica is None:
            return False
        try:
            socket.send_fds(replica, [_TOKEN], [connection.fileno()])
        except BlockingIOError:
            return False  # that replica is not taking connections now: this one is not lost
        except OSError:
            self._leave(replica)
            return False
        connection.close()  # the replica holds its own descriptor now
        self.open[replica] += 1
        return True


class Inbox:
    """On a replica: joins the primary's rotation, serves the connections it is handed and
    tells the primary when they close."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock: socket.socket | None = None
        self._unreported = 0  # closed connections the primary has not heard of yet

    def start(self, server: HandOffServer) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.connect(str(self.path))
        self.sock.setblocking(False)
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._receive, server)
        server.on_shutdown(self.stop)
        server.on_close(self._closed)

    def _closed(self) -> None:
        self._unreported += 1
        self._report()

    def _report(self) -> None:
        if self.sock is None or not self._unreported:
            return
        try:
            self.sock.send(str(self._unreported).encode())
        except (BlockingIOError, InterruptedError):  # the primary is behind: try again shortly
            asyncio.get_running_loop().call_later(0.05, self._report)
            return
        except OSError:
            return  # the primary has gone, and so will this process
        self._unreported = 0

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
