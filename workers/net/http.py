"""HTTP/1.1 connections of the network worker: httptools (llhttp) parses, this module frames and orders.

Owns one asyncio `Protocol` per HTTP connection: feeding its bytes to httptools'
parser, bounding what one request may hold (`max_line` bytes of body, 64 KiB of
request line and headers), handing each complete request to a handler as an
`Exchange`, and writing the answers in request order (HTTP/1.1 pipelining),
whole (`respond`) or as a chunked stream (`open_stream`, `send`, `end`).  Flow
control as on TCP (server.py): no reading while `max_pending` exchanges are
unanswered or while the client does not read its answers.  What a request means
belongs to the handler (streamable.Streamable); nothing here knows MCP.

    def handler(ex: Exchange) -> None:              # now, or later from a callback on the loop
        ex.respond(200, b'{"ok":true}')
    conn = HttpConnection(server, handler)          # the protocol factory's product

Invariants: `queue` holds this connection's unfinished exchanges in request
order; only the head writes to the transport, the others keep their bytes in
`out` until it is done; reading is paused exactly when len(queue) >= max_pending
or the write buffer is over its high-water mark.  A request that breaks the
rules (malformed, too large) is answered after those before it, and the
connection then closes.  Requests already read past the pause are served: at
most one read's worth.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from email.utils import formatdate
from typing import cast

import httptools

from supervisor_tree.workers.net import rpc
from supervisor_tree.workers.net.server import Server, StreamTransport

MAX_HEAD = 64 * 1024  # bytes of request line and headers
JSON = b"application/json"
SSE = b"text/event-stream"
REASONS = {100: "Continue", 200: "OK", 202: "Accepted", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 406: "Not Acceptable", 413: "Content Too Large", 415: "Unsupported Media Type",
           421: "Misdirected Request", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
           503: "Service Unavailable"}  # fmt: skip
Headers = tuple[tuple[bytes, bytes], ...]
Handler = Callable[["Exchange"], None]

class _Date:
    """The Date header of the current second (RFC 9110: an origin server with a clock sends one), made once a second."""

    second = 0
    header = b""

    @classmethod
    def now(cls) -> bytes:
        now = int(time.time())
        if now != cls.second:
            cls.second, cls.header = now, b"date: " + formatdate(now, usegmt=True).encode() + b"\r\n"
        return cls.header


_starts: dict[tuple[int, bytes | None], bytes] = {}  # (status, content type) -> the head's first lines, this second


def response_head(status: int, content_type: bytes | None, length: int | None, headers: Headers = (),
                  close: bool = False) -> bytes:  # fmt: skip
    """Status line and headers of a response; `length` None: chunked (a stream)."""
    date = _Date.now()
    start = _starts.get((status, content_type))
    if start is None or not start.endswith(date):
        start = b"HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, "Status").encode())
        if content_type is not None:
            start += b"content-type: " + content_type + b"\r\n"
        start = _starts[(status, content_type)] = start + date
    if length is not None and not headers and not close:
        return start + b"content-length: %d\r\n\r\n" % length  # the usual answer
    parts = [start]
    if length is None:
        parts.append(b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n")
    else:
        parts.append(b"content-length: %d\r\n" % length)
    for name, value in headers:
        parts.append(name + b": " + value + b"\r\n")
    if close:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


class Exchange:
    """One request and its answer.  Answer exactly once: `respond`, or `open_stream` ... `end`."""

    __slots__ = ("conn", "method", "path", "headers", "body", "keep_alive", "out", "done", "streaming", "closed",
                 "on_close")  # fmt: skip

    def __init__(self, conn: HttpConnection, method: bytes, path: bytes, headers: dict[bytes, bytes], body: bytes,
                 keep_alive: bool) -> None:  # fmt: skip
        self.conn, self.method, self.path, self.headers, self.body = conn, method, path, headers, body
        self.keep_alive = keep_alive
        self.out: list[bytes] = []  # bytes waiting for the exchanges before this one
        self.done = False  # answered in full
        self.streaming = False
        self.closed = False  # the connection is gone: nothing more can be delivered
        self.on_close: Callable[[Exchange], None] | None = None  # told when the connection goes before `done`

    def respond(self, status: int, body: bytes = b"", content_type: bytes | None = JSON, headers: Headers = ()) -> None:
        """The whole answer (an empty `body` goes without a content-type, unless one other than JSON is given)."""
        if self.done or self.streaming:
            return
        self.conn.server.counts[f"http_{status}"] += 1
        head = response_head(status, content_type if body or content_type != JSON else None, len(body), headers,
                             not self.keep_alive)
        self.done = True
        self._emit(head + body)

    def open_stream(self, content_type: bytes = SSE, headers: Headers = ()) -> None:
        """A 200 whose body comes in pieces (`send`) until `end`."""
        if self.done or self.streaming:
            return
        self.conn.server.counts["http_streams"] += 1
        self.streaming = True
        self._emit(response_head(200, content_type, None, headers))

    def send(self, data: bytes) -> None:
        if self.streaming and not self.done and data:
            self._emit(b"%x\r\n%b\r\n" % (len(data), data))

    def end(self) -> None:
        if self.streaming and not self.done:
            self.done = True
            self._emit(b"0\r\n\r\n")

    def peer_name(self) -> str | None:
        transport = self.conn.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        return f"{peer[0]}:{peer[1]}" if peer else None

    def _emit(self, data: bytes) -> None:
        conn = self.conn
        if self.closed:
            conn.server.counts["replies_to_closed"] += 1
            return
        if conn.queue and conn.queue[0] is self:
            conn.write(data)
            if self.done:
                conn.advance()
        else:
            self.out.append(data)


class _Refused(Exception):
    """A request that breaks a limit: answered with `status`, then the connection closes."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class HttpConnection(asyncio.Protocol):
    def __init__(self, server: Server, handler: Handler) -> None:
        self.server = server
        self.handler = handler
        self.parser = httptools.HttpRequestParser(self)
        self.transport: StreamTransport | None = None
        self.queue: collections.deque[Exchange] = collections.deque()
        self.closed = False
        self.read_paused = False
        self.write_paused = False
        self.max_body = server.config.max_line
        # the request being read
        self._url = b""
        self._headers: dict[bytes, bytes] = {}
        self._body: list[bytes] = []
        self._size = 0

    # -- asyncio callbacks --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = stream = cast(StreamTransport, transport)
        if not self.server.admit(self, stream):
            self.closed = True
            body = rpc.error_line(None, rpc.OVERLOADED, f"too many connections (max_connections = "
                                                        f"{self.server.config.max_connections})")
            stream.write(response_head(503, JSON, len(body), close=True) + body)
            stream.close()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if not isinstance(cause, _Refused):
                raise
            self._refuse(cause.status, str(cause))
        except httptools.HttpParserUpgrade:
            self._refuse(400, "Bad Request: protocol upgrades are not served here")
        except httptools.HttpParserError as exc:
            self._refuse(400, f"Bad Request: malformed HTTP: {exc}")

    def pause_writing(self) -> None:
        self.write_paused = True
        self.server.counts["write_pauses"] += 1
        self._pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._maybe_resume()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        for ex in self.queue:
            ex.closed = True
            if ex.on_close is not None and not ex.done:
                ex.on_close(ex)
        self.queue.clear()
        self.server.release(self)

    # -- httptools callbacks --

    def on_message_begin(self) -> None:
        self._url, self._headers, self._body, self._size = b"", {}, [], 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._grow(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._size += len(name) + len(value) + 4
        if self._size > MAX_HEAD:
            self._grow(0)
        key = name.lower()
        headers = self._headers
        if key in headers:
            headers[key] += b", " + value
        else:
            headers[key] = value

    def on_headers_complete(self) -> None:
        length = self._headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            raise _Refused(413, f"Content Too Large: {int(length)} bytes of body; max_line = {self.max_body}")
        self._size = 0
        if self._headers.get(b"expect", b"").lower() == b"100-continue" and not self.queue:
            self.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self.max_body:
            raise _Refused(413, f"Content Too Large: over max_line = {self.max_body} bytes of body")
        self._body.append(body)

    def on_message_complete(self) -> None:
        url = self._url
        path = url.partition(b"?")[0] if url.startswith(b"/") else (httptools.parse_url(url).path or b"/")
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        ex = Exchange(self, self.parser.get_method(), path, self._headers, body, self.parser.should_keep_alive())
        self.queue.append(ex)
        self.server.counts["http_requests"] += 1
        self.handler(ex)
        if len(self.queue) >= self.server.config.max_pending:
            self._pause_reading()

    def _grow(self, n: int) -> None:
        self._size += n
        if self._size > MAX_HEAD:
            raise _Refused(431, f"Request Header Fields Too Large: over {MAX_HEAD} bytes of request line and headers")

    # -- answers out, in order --

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not self.closed:
            transport.write(data)

    def advance(self) -> None:
        """The head is done: drop it, and let the next ones write what they have."""
        queue = self.queue
        while queue and queue[0].done:
            ex = queue.popleft()
            if not ex.keep_alive:
                self._close()
                return
            if queue and queue[0].out:
                head = queue[0]
                self.write(b"".join(head.out))
                head.out.clear()
        if self.read_paused:
            self._maybe_resume()

    def _refuse(self, status: int, message: str) -> None:
        """Answer a request that broke the rules after those before it, then close; read nothing more."""
        self.server.counts["http_refused"] += 1
        ex = Exchange(self, b"", b"", {}, b"", keep_alive=False)
        self.queue.append(ex)
        self._pause_reading()
        ex.respond(status, rpc.error_line(None, rpc.INVALID_REQUEST, message))

    def _close(self) -> None:
        """After the last answer of a connection that does not keep alive (the transport flushes, then closes)."""
        self.closed = True
        for ex in self.queue:  # requests pipelined after a "connection: close" are not answered
            ex.closed = True
            if ex.on_close is not None:
                ex.on_close(ex)
        self.queue.clear()
        if self.transport is not None:
            self.transport.close()

    # -- flow control --

    def _pause_reading(self) -> None:
        transport = self.transport
        if transport is not None and not self.read_paused and not self.closed:
            self.read_paused = True
            self.server.counts["read_pauses"] += 1
            transport.pause_reading()

    def _maybe_resume(self) -> None:
        transport = self.transport
        if transport is None or not self.read_paused or self.write_paused or self.closed:
            return
        if len(self.queue) > self.server.config.max_pending // 2 or (self.queue and not self.queue[-1].keep_alive):
            return
        self.read_paused = False
        transport.resume_reading()

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()
