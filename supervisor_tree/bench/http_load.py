"""The HTTP load generator and the reference HTTP server, each run as its own process.

Owns the HTTP side of the network benchmarks: connections that each open an MCP
session (POST initialize, keeping the Mcp-Session-Id it answers) and then send
one 1 KiB `tools/call` POST at a time, reading its whole answer before the next
(closed loop: bench/tcp_load.py's `Load`, with HTTP/1.1 keep-alive connections
parsed by httptools); and the reference: a raw HTTP server on the same library
(httptools in an asyncio Protocol, uvloop when installed) that answers each POST
with its body, as application/json.  It knows nothing of the tree;
`bench.http_network` drives it.

    python -m supervisor_tree.bench.http_load echo 0       # prints {"port": N}, serves until stdin closes
    python -m supervisor_tree.bench.http_load client '{"targets": {"ours": {"port": N, "conns": 500}}, ...}'

The client takes tcp_load's orders on stdin ("run TARGET SECONDS SAMPLES_FILE",
"quit").  An answer counts as an error when its status is not 200 or its JSON-RPC
message is an error or a tool error.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import httptools

from supervisor_tree.bench.tcp_load import Load, client, new_loop, raise_nofile

PATH = b"/mcp"
INIT_CONCURRENCY = 256  # initialize requests in flight while connecting
INIT_TIMEOUT = 30.0


def request_body(i: int, size: int) -> bytes:
    """A JSON-RPC tools/call of `echo`, exactly `size` bytes."""
    head = b'{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"echo","arguments":{"text":"' % i
    tail = b'"}}}'
    return head + b"x" * max(0, size - len(head) - len(tail)) + tail


def post(body: bytes, session: bytes | None) -> bytes:
    """The whole POST of `body` to the MCP endpoint (with the session's header once there is one)."""
    sid = b"mcp-session-id: " + session + b"\r\nmcp-protocol-version: 2025-11-25\r\n" if session else b""
    return (b"POST %s HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            b"accept: application/json, text/event-stream\r\n%scontent-length: %d\r\n\r\n%s"
            % (PATH, sid, len(body), body))  # fmt: skip


INITIALIZE = post(b'{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25",'
                  b'"capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}', None)


# -- the reference server ----------------------------------------------------------------


class _Echo(asyncio.Protocol):
    """Answer each request with its body (200, application/json), keep-alive, in order."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport
        self.parser = httptools.HttpRequestParser(self)
        self.body: list[bytes] = []

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body = b"".join(self.body)
        self.body = []
        self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                             % (len(body), body))


async def _serve_echo(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Echo, "127.0.0.1", port, backlog=4096, reuse_address=True)
    print(json.dumps({"port": server.sockets[0].getsockname()[1]}), flush=True)
    await loop.run_in_executor(None, sys.stdin.read)  # until the benchmark closes our stdin
    server.close()


# -- the client --------------------------------------------------------------------------


class _HttpConn(asyncio.Protocol):
    """One keep-alive connection; its answers parsed by httptools, each handed to the load (or to `waiter`)."""

    def __init__(self, gen: HttpLoad, line: bytes) -> None:
        self.gen, self.line = gen, line
        self.transport: Any = None
        self.parser = httptools.HttpResponseParser(self)
        self.body: list[bytes] = []
        self.session: bytes | None = None
        self.waiter: asyncio.Future[bytes] | None = None  # the initialize answer
        self.t0 = 0
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def send(self, line: bytes | None = None) -> None:
        self.t0 = time.perf_counter_ns()
        self.transport.write(line or self.line)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.abort()

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"mcp-session-id":
            self.session = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body = b"".join(self.body) if self.parser.get_status_code() == 200 else b"HTTP error"
        self.body = []
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(body)
            return
        self.gen.on_reply(self, body)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.gen.lost += 1
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("closed during initialize"))


class HttpLoad(Load):
    """tcp_load's closed loop over HTTP: each connection opens an MCP session first (`prepare`)."""

    def request(self, i: int, size: int) -> bytes:
        return request_body(i, size)  # the body; `prepare` wraps it in a POST with the session's header

    def connection(self, line: bytes) -> Any:
        return _HttpConn(self, line)

    async def prepare(self) -> int:
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(INIT_CONCURRENCY)

        async def initialize(conn: _HttpConn) -> bool:
            async with gate:
                conn.waiter = loop.create_future()
                conn.send(INITIALIZE)
                try:
                    answer = await asyncio.wait_for(conn.waiter, INIT_TIMEOUT)
                except (TimeoutError, ConnectionError):
                    return False
            conn.line = post(conn.line, conn.session or b"none")  # the reference answers no session: "none"
            return not self.is_error(answer)

        done = await asyncio.gather(*(initialize(c) for c in self.conns))
        return done.count(False)

    def is_error(self, reply: bytes) -> bool:
        start = reply.find(b"{")
        return start < 0 or b'"error":{' in reply[start:start + 60] or b'"isError":true' in reply[-40:]


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("echo", "client"):
        print(__doc__, file=sys.stderr)
        return 2
    loop = new_loop()
    try:
        if argv[0] == "echo":
            raise_nofile(1 << 20)
            loop.run_until_complete(_serve_echo(int(argv[1])))
        else:
            loop.run_until_complete(client(json.loads(argv[1]), HttpLoad))
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
