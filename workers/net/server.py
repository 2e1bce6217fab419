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

`Server` keeps every connection of the worker, TCP or HTTP (net/http.py), so that
max_connections and the listener's turns count them all.  A `Connection` is the
`mcp.Peer` of its requests: it holds the session `initialize` opened (deleted
when the connection ends), the negotiated version, and the tool calls in flight
by request id, for `notifications/cancelled`.

Invariants of a `Connection`: `pending` counts the requests handed to the
dispatcher and not yet answered nor cancelled; reading is paused exactly when `pending >=
max_pending` or the write buffer is over its high-water mark; while paused,
`buf` holds at most one read's worth of unprocessed bytes plus one partial line.
An oversized line is answered with -32600 and skipped up to its newline; the
connection goes on.  Replies made while one read is being cut into lines (errors,
ping, inline tools: net/inline.py) are held and written together when the read is
done: a client that pipelines gets one write(2) per read, not one per line.
"""

from __future__ import annotations

import asyncio
import collections
import resource
from typing import Any, Protocol, cast

from supervisor_tree.workers.net import rpc
from supervisor_tree.workers.net.batch import Call
from supervisor_tree.workers.net.config import NetworkSpec
from supervisor_tree.workers.net.listener import Listener


class Methods(Protocol):
    """What the server hands each request line to (mcp.Methods), and tells of a session's end."""

    def dispatch(self, conn: Connection, line: bytes) -> None: ...
    def close_session(self, session: str) -> None: ...


class Held(Protocol):
    """A connection as the server counts it (TCP here, HTTP in net/http.py)."""

    def abort(self) -> None: ...


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
        self.conns: set[Held] = set()
        self.counts = collections.Counter[str]()

    def connection(self) -> Connection:
        """The protocol factory for `loop.create_server`."""
        return Connection(self)

    def admit(self, conn: Held, transport: StreamTransport) -> bool:
        """A new connection: held (True), or refused at max_connections (False: the caller says why and closes)."""
        if len(self.conns) >= self.config.max_connections:
            self.counts["refused"] += 1
            return False
        self.conns.add(conn)
        self.counts["accepted"] += 1
        transport.set_write_buffer_limits(high=self.config.write_high_water)
        if self.listener is not None:
            self.listener.admitted(len(self.conns))
        return True

    def release(self, conn: Held) -> None:
        if conn in self.conns:  # not a connection refused at max_connections
            self.conns.discard(conn)
            if self.listener is not None:
                self.listener.released(len(self.conns))

    def close_all(self) -> None:
        for conn in list(self.conns):
            conn.abort()


class Connection(asyncio.Protocol):
    __slots__ = ("server", "transport", "buf", "discarding", "pending", "read_paused", "write_paused", "closed",
                 "session", "version", "calls", "held")  # fmt: skip

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
        self.version: str | None = None  # the protocol version "initialize" negotiated
        self.calls: dict[object, Call] | None = None  # tool calls in flight by request id (made at the first)
        self.held: list[bytes] | None = None  # replies made while a read is cut into lines: one write at its end

    # -- asyncio callbacks --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream server's protocol gets a stream transport, whatever asyncio's signature says.
        self.transport = stream = cast(StreamTransport, transport)
        if not self.server.admit(self, stream):
            self.closed = True
            stream.write(rpc.error_line(None, rpc.OVERLOADED, f"too many connections (max_connections = "
                                                              f"{self.server.config.max_connections})"))
            stream.close()

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
        self._feed(data)

    def pause_writing(self) -> None:
        self.write_paused = True
        self.server.counts["write_pauses"] += 1
        self._pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._maybe_resume()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.buf = b""
        self.calls = None
        self.server.release(self)
        if self.session is not None:
            self.server.methods.close_session(self.session)
            self.session = None

    # -- lines in --

    def _feed(self, buf: bytes) -> None:
        """`_consume`, with the replies it makes at once (ping, inline tools, errors) written together at the
        end: one write(2) for a read of pipelined lines instead of one per line."""
        held: list[bytes] = []
        self.held = held
        try:
            self._consume(buf)
        finally:
            self.held = None
            if held and self.transport is not None and not self.closed:
                self.transport.write(held[0] if len(held) == 1 else b"".join(held))

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

    # -- replies out (mcp.Peer) --

    def reply(self, line: bytes) -> None:
        """Write a reply that was not counted in `pending` (answered at once)."""
        if self.held is not None:
            self.held.append(line)
            return
        transport = self.transport
        if transport is not None and not self.closed:
            transport.write(line)

    def begin(self, call: Call | None = None) -> None:
        """A request goes upstream: it counts against max_pending until `end` (or its cancellation)."""
        self.pending += 1
        if call is not None:
            calls = self.calls
            if calls is None:
                calls = self.calls = {}
            calls[call.rid] = call

    def end(self, line: bytes, call: Call | None = None) -> None:
        """The reply to a request counted by `begin`."""
        self.pending -= 1
        calls = self.calls
        if call is not None and calls is not None and calls.get(call.rid) is call:
            del calls[call.rid]
        transport = self.transport
        if transport is None or self.closed:
            self.server.counts["replies_to_closed"] += 1
            return
        if self.held is not None:  # answered while its read is being cut into lines
            self.held.append(line)
        else:
            transport.write(line)
        if self.read_paused:
            self._maybe_resume()

    def cancel(self, rid: object) -> bool:
        """notifications/cancelled: the call's reply will not be written; it no longer counts as pending."""
        call = self.calls.pop(rid, None) if self.calls else None
        if call is None or call.cancelled:
            return False
        call.cancelled = True
        self.pending -= 1
        if self.read_paused:
            self._maybe_resume()
        return True

    def opened(self, session: str, version: str) -> bool:
        if self.closed:
            return False
        if self.session is not None:
            self.server.methods.close_session(self.session)  # a second initialize replaces the first session
        self.session, self.version = session, version
        return True

    def describe(self) -> dict[str, object]:
        peer = self.transport.get_extra_info("peername") if self.transport else None
        return {"transport": "tcp", "peer": f"{peer[0]}:{peer[1]}" if peer else None}

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
        if self.buf and self.held is None:
            buf, self.buf = self.buf, b""
            self._feed(buf)

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()
