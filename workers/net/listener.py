"""When a network worker listens: shards that share a port by turns, not all at once.

Owns the listening socket of one network worker and the rule for it.  Where one
process may not hold all the connections wanted (RLIMIT_NOFILE's hard limit),
several workers share a port with SO_REUSEPORT.  Spreading every connection over
all of them costs throughput (each shard batches a third of the tool calls, and
more processes share the cores: measured in docs/network.md), so they take turns:

* a `standby` worker binds the port at start but listens only when told
  ({"op": "listen"}, from the worker before it);
* a worker with an `overflow` tells that worker to listen once it holds 90% of
  its max_connections (again at most once a second while it stays there, in
  case the overflow worker restarted);
* a worker that holds max_connections stops listening (the kernel then gives new
  connections to the listening shards only) and listens again below 90%.

    listener = Listener(loop, spec, server.connection, wake=lambda: up.call("network.2", {"op": "listen"}, ...))
    listener.bind()          # in init: a taken port fails the start
    await listener.start()   # unless spec.standby

Connections already in the accept queue when a listener closes are reset by the
kernel (unless net.ipv4.tcp_migrate_req = 1, which hands them to another shard);
it happens only at the moment a shard fills up.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable

from .config import NetworkSpec

log = logging.getLogger(__name__)

OVERFLOW_AT = 0.9  # of max_connections: wake the overflow shard; and listen again below it
WAKE_EVERY_S = 1.0


class Listener:
    def __init__(self, loop: asyncio.AbstractEventLoop, spec: NetworkSpec, factory: Callable[[], asyncio.Protocol],
                 wake: Callable[[], None] | None) -> None:  # fmt: skip
        self.loop, self.spec, self.factory, self.wake = loop, spec, factory, wake
        self.sock: socket.socket | None = None
        self.server: asyncio.AbstractServer | None = None
        self.port = spec.port
        self.woken_at = 0.0
        self.starting = False
        self.counts = {"listens": 0, "full_stops": 0, "overflow_wakes": 0}

    @property
    def listening(self) -> bool:
        return self.server is not None

    def bind(self) -> int:
        """Bind the port (not listening yet); returns it (an ephemeral one when spec.port is 0)."""
        family, kind, proto, _, address = socket.getaddrinfo(self.spec.host, self.port, type=socket.SOCK_STREAM)[0]
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
        self.sock = sock
        self.port = sock.getsockname()[1]
        return self.port

    async def start(self) -> None:
        """Listen on the bound socket (binding a new one first if the last was closed).  Loop thread."""
        if self.server is not None or self.starting:
            return
        self.starting = True
        try:
            if self.sock is None:
                self.bind()
            sock, self.sock = self.sock, None
            self.server = await self.loop.create_server(self.factory, sock=sock, backlog=self.spec.backlog)
            self.counts["listens"] += 1
        finally:
            self.starting = False

    def listen_soon(self) -> None:
        """From any thread: listen (a standby told by the shard before it)."""
        self.loop.call_soon_threadsafe(lambda: self.loop.create_task(self.start()))

    def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    # -- the rule, fed by the server on every admitted and released connection --

    def admitted(self, held: int) -> None:
        limit = self.spec.max_connections
        if self.wake is not None and held >= OVERFLOW_AT * limit:
            now = time.monotonic()
            if now - self.woken_at >= WAKE_EVERY_S:
                self.woken_at = now
                self.counts["overflow_wakes"] += 1
                self.wake()
        if held >= limit and self.server is not None and self.spec.reuse_port:
            log.info("network: %d connections, max_connections reached: not listening until below %d",
                     held, int(OVERFLOW_AT * limit))
            self.counts["full_stops"] += 1
            self.stop()

    def released(self, held: int) -> None:
        if self.server is None and not self.starting and self.counts["full_stops"] and \
                held < OVERFLOW_AT * self.spec.max_connections:
            self.loop.create_task(self.start())

    def close(self) -> None:
        self.stop()
        if self.sock is not None:
            self.sock.close()
            self.sock = None
