"""The TCP side of the network worker: connections, line framing, flow control, limits.

Owns one asyncio `Protocol` per connection (no task per connection, a few
hundred bytes of state), cutting its byte stream into lines of at most
`max_line` bytes, and keeping a connection's memory bounded: at most
`max_pending` requests in flight, and no reading while its replies are not
being read (the transport's write buffer passed `write_high_water`).  What a
line means belongs to the dispatcher (`mcp.Methods`); this module only hands
lines over and writes the reply lines it is given.

    server = Server(NetworkSpec(port=0), methods)       # on the loop's thread
    listener = await loop.create_server(server.connection, sock=listening_socket)

Invariants of a `Connection`: `pending` counts the requests handed to the
dispatcher and not yet answered; reading is paused exactly when `pending >=
max_pending` or the write buffer is over its high-water mark; while paused,
`buf` holds at most one read's worth of unprocessed bytes plus one partial line.
An oversized line is answered with -32600 and skipped up to its newline; the
connection goes on.
"""

from __future__ import annotations

import asyncio
import collections
import resource
from typing import Any, Protocol, cast

from supervisor_tree.workers.net import rpc
from supervisor_tree.workers.net.config import NetworkSpec
from supervisor_tree.workers.net.listener import Listener


class Methods(Protocol):
    """What the server hands each request line to (mcp.Methods), and tells of a session's end."""

    def dispatch(self, conn: Connection, line: bytes) -> None: ...
    def close_session(self, session: str) -> None: ...


class StreamTransport(Protocol):
    """What a connection does with its transport: asyncio's `Transport`, and uvloop's, which
    share its methods without subclassing it (nor even `BaseTransport`)."""

    def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None: ...
    def get_extra_info(self, name: str, default: Any = None) -> Any: ...


def raise_nofile_limit(wanted: int) -> tuple[int, int]:
    """Raise RLIMIT_NOFILE's soft limit towards `wanted` (up to the hard limit, or past it as root).

    Returns the (soft, hard) limits in force afterwards.  Never lowers anything.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft, hard
    if hard != resource.RLIM_INFINITY and hard < wanted:
        try:  # root (CAP_SYS_RESOURCE) may raise the hard limit too, up to fs.nr_open
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted, wanted
        except (ValueError, OSError):
            wanted = hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return wanted, hard


class Server:
    """The connections of one listening socket, their limits and counters (loop thread only)."""

    def __init__(self, config: NetworkSpec, methods: Methods, listener: Listener | None = None) -> None:
        self.config = config
        self.methods = methods
        self.listener = listener  # told of every admitted and released connection (when to listen)
        self.conns: set[Connection] = set()
        self.counts = collections.Counter[str]()

    def connection(self) -> Connection:
        """The protocol factory for `loop.create_server`."""
        return Connection(self)

    def close_all(self) -> None:
        for conn in list(self.conns):
            conn.abort()


class Connection(asyncio.Protocol):
    __slots__ = ("server", "transport", "buf", "discarding", "pending", "read_paused", "write_paused", "closed",
                 "session")  # fmt: skip

    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: StreamTransport | None = None
        self.buf = b""
        self.discarding = False  # inside an oversized line: drop bytes up to its newline
        self.pending = 0
        self.read_paused = False
        self.write_paused = False
        self.closed = False
        self.session: str | None = None  # opened by "initialize", deleted when the connection ends

    # -- asyncio callbacks --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream server's protocol gets a stream transport, whatever asyncio's signature says.
        self.transport = stream = cast(StreamTransport, transport)
        server = self.server
        if len(server.conns) >= server.config.max_connections:
            server.counts["refused"] += 1
            self.closed = True
            stream.write(rpc.error_line(None, rpc.OVERLOADED, f"too many connections (max_connections = "
                                                              f"{server.config.max_connections})"))
            stream.close()
            return
        server.conns.add(self)
        server.counts["accepted"] += 1
        stream.set_write_buffer_limits(high=server.config.write_high_water)
        if server.listener is not None:
            server.listener.admitted(len(server.conns))

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        if self.discarding:
            nl = data.find(b"\n")
            if nl < 0:
                return
            data = data[nl + 1 :]
            self.discarding = False
        if self.buf:
            data = self.buf + data
            self.buf = b""
        self._consume(data)

    def pause_writing(self) -> None:
        self.write_paused = True
        self.server.counts["write_pauses"] += 1
        self._pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._maybe_resume()

    def connection_lost(self, exc: Exception | None) -> None:
        was_held = self in self.server.conns  # not a connection refused at max_connections
        self.closed = True
        self.buf = b""
        self.server.conns.discard(self)
        if was_held and self.server.listener is not None:
            self.server.listener.released(len(self.server.conns))
        if self.session is not None:
            self.server.methods.close_session(self.session)
            self.session = None

    # -- lines in --

    def _consume(self, buf: bytes) -> None:
        max_line, max_pending = self.server.config.max_line, self.server.config.max_pending
        dispatch = self.server.methods.dispatch
        start = 0
        while True:
            if self.pending >= max_pending or self.write_paused:
                self.buf = buf[start:]
                self._pause_reading()
                return
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            if nl - start > max_line:
                self._oversized(nl - start)
            elif nl > start:
                dispatch(self, buf[start:nl])
            start = nl + 1
            if self.closed:
                return
        if len(buf) - start > max_line:
            self.discarding = True
            self._oversized(len(buf) - start)
        else:
            self.buf = buf[start:]

    def _oversized(self, seen: int) -> None:
        self.server.counts["oversized"] += 1
        self.reply(rpc.error_line(None, rpc.INVALID_REQUEST, f"Invalid Request: line longer than max_line = "
                                                             f"{self.server.config.max_line} bytes (read {seen}); "
                                                             "skipped up to its newline"))

    # -- replies out --

    def reply(self, line: bytes) -> None:
        """Write a reply that was not counted in `pending` (answered at once)."""
        transport = self.transport
        if transport is not None and not self.closed:
            transport.write(line)

    def begin(self) -> None:
        """A request goes upstream: it counts against max_pending until `end`."""
        self.pending += 1

    def end(self, line: bytes) -> None:
        """The reply to a request counted by `begin`."""
        self.pending -= 1
        transport = self.transport
        if transport is None or self.closed:
            self.server.counts["replies_to_closed"] += 1
            return
        transport.write(line)
        if self.read_paused:
            self._maybe_resume()

    # -- flow control --

    def _pause_reading(self) -> None:
        transport = self.transport
        if transport is not None and not self.read_paused and not self.closed:
            self.read_paused = True
            self.server.counts["read_pauses"] += 1
            transport.pause_reading()

    def _maybe_resume(self) -> None:
        # Resume at half the cap, not at cap - 1: one wake-up per half window, not per reply.
        transport = self.transport
        if transport is None or not self.read_paused or self.write_paused or self.closed:
            return
        if self.pending > self.server.config.max_pending // 2:
            return
        self.read_paused = False
        transport.resume_reading()
        if self.buf:
            buf, self.buf = self.buf, b""
            self._consume(buf)

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()
