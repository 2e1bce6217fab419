"""When a network worker listens: shards that share a port take turns, not all at once.

Owns the listening sockets of one network worker (one per transport: the TCP
line protocol and MCP's Streamable HTTP, each an `Endpoint`, all listening or
none) and the rule for them.  Where one
process may not hold all the connections wanted (RLIMIT_NOFILE's hard limit),
several workers share a port with SO_REUSEPORT.  Spreading every connection over
all of them costs throughput (each shard batches a third of the tool calls, and
more processes share the cores: measured in docs/network.md), so they take turns,
each worker listening exactly when it is *wanted* and not *full*:

* wanted: from the start, unless `standby`; a standby is wanted once the worker
  before it says {"op": "listen"}, and no more once it says {"op": "rest"};
* full: from max_connections held until fewer than 90% of them are held;
* at 90% a worker with an `overflow` tells that worker to listen (again at most
  once a second while it stays there, in case the overflow worker restarted);
* a worker that stops being full listens again and tells its overflow to rest,
  which passes the rest on: new connections go to the first shard with room.

A worker that does not share its port (no reuse_port) never stops listening: past
max_connections it answers each new connection with a -32012 line and closes it.

    endpoints = [Endpoint("tcp", spec.port, tcp_factory), Endpoint("http", spec.http_port, http_factory)]
    listener = Listener(loop, spec, endpoints, tell=lambda op: up.call("network.2", {"op": op}, ignore))
    listener.bind()                                   # in init: a taken port fails the start; {"tcp": N, "http": M}
    loop.run_until_complete(listener.start())         # unless spec.standby

Connections already in the accept queue when a listener closes are reset by the
kernel (unless net.ipv4.tcp_migrate_req = 1, which hands them to another shard);
that happens only when a shard fills up or is told to rest.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable

from supervisor_tree.workers.net.config import NetworkSpec

log = logging.getLogger(__name__)

OVERFLOW_AT = 0.9  # of max_connections: wake the overflow shard; and listen again below it
WAKE_EVERY_S = 1.0


class Endpoint:
    """One listening socket: its transport's name, port (0: ephemeral until bound) and protocol factory."""

    def __init__(self, name: str, port: int, factory: Callable[[], asyncio.Protocol]) -> None:
        self.name, self.port, self.factory = name, port, factory
        self.sock: socket.socket | None = None  # bound, not yet listening
        self.server: asyncio.AbstractServer | None = None  # listening


class Listener:
    def __init__(self, loop: asyncio.AbstractEventLoop, spec: NetworkSpec, endpoints: list[Endpoint],
                 tell: Callable[[str], None] | None) -> None:  # fmt: skip
        self.loop, self.spec, self.endpoints, self.tell = loop, spec, endpoints, tell
        self.wanted = not spec.standby
        self.full = False
        self.starting = False
        self.woken_at = 0.0
        self.counts = {"listens": 0, "full_stops": 0, "overflow_wakes": 0, "rests": 0}

    @property
    def listening(self) -> bool:
        return any(e.server is not None for e in self.endpoints)

    def bind(self) -> dict[str, int]:
        """Bind every endpoint's port (not listening yet); returns them by name (ephemeral ones resolved)."""
        for e in self.endpoints:
            self._bind(e)
        return {e.name: e.port for e in self.endpoints}

    def _bind(self, e: Endpoint) -> socket.socket:
        family, kind, proto, _, address = socket.getaddrinfo(self.spec.host, e.port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self.spec.reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        e.sock = sock
        e.port = sock.getsockname()[1]
        return sock

    # -- orders (loop thread; `from_any_thread` for the worker's main thread) --

    def from_any_thread(self, op: str) -> None:
        self.loop.call_soon_threadsafe(self.listen if op == "listen" else self.rest)

    async def start(self) -> None:
        """Listen now: the worker's init, where a failure fails the start."""
        self.wanted = True
        self.starting = True
        await self._serve()
        if not all(e.server is not None for e in self.endpoints):
            down = [f"{e.name} {self.spec.host}:{e.port}" for e in self.endpoints if e.server is None]
            raise OSError(f"cannot listen on {', '.join(down)} (see the log)")

    def listen(self) -> None:
        self.wanted = True
        if not self.full:
            self._start()

    def rest(self) -> None:
        if not self.wanted:
            return
        self.wanted = False
        self.counts["rests"] += 1
        self._stop()
        if self.tell is not None:
            self.tell("rest")

    # -- the rule, fed by the server on every admitted and released connection --

    def admitted(self, held: int) -> None:
        limit = self.spec.max_connections
        if self.tell is not None and held >= OVERFLOW_AT * limit:
            now = time.monotonic()
            if now - self.woken_at >= WAKE_EVERY_S:
                self.woken_at = now
                self.counts["overflow_wakes"] += 1
                self.tell("listen")
        if held >= limit and not self.full and self.spec.reuse_port:
            log.info("network: %d connections, max_connections: not listening until below %d", held,
                     int(OVERFLOW_AT * limit))
            self.full = True
            self.counts["full_stops"] += 1
            self._stop()

    def released(self, held: int) -> None:
        if held >= OVERFLOW_AT * self.spec.max_connections:
            return
        self.woken_at = 0.0  # crossing 90% again wakes the overflow at once
        if self.full:
            self.full = False
            if self.wanted:
                self._start()
                if self.tell is not None:
                    self.tell("rest")

    # -- the sockets --

    def _start(self) -> None:
        if not self.listening and not self.starting:
            self.starting = True
            self.loop.create_task(self._serve())

    async def _serve(self) -> None:
        try:
            for e in self.endpoints:
                try:
                    sock = e.sock if e.sock is not None else self._bind(e)
                    e.sock = None
                    e.server = await self.loop.create_server(e.factory, sock=sock, backlog=self.spec.backlog)
                except OSError:
                    log.exception("network: cannot listen on %s %s:%s", e.name, self.spec.host, e.port)
            self.counts["listens"] += 1
        finally:
            self.starting = False
        if self.listening and (self.full or not self.wanted):  # told otherwise meanwhile
            self._stop()

    def _stop(self) -> None:
        for e in self.endpoints:
            if e.server is not None:
                e.server.close()
                e.server = None

    def close(self) -> None:
        self._stop()
        for e in self.endpoints:
            if e.sock is not None:
                e.sock.close()
                e.sock = None
