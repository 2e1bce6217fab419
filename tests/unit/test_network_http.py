"""The network's HTTP parts without sockets: framing and order (net/http.py), the transport's small rules
(net/streamable.py), and the TCP connection as an MCP peer (cancellation).

A connection is driven with bytes and a transport that records what is written
and whether reading is paused (tests/integration/test_mcp_http.py has sockets).
"""

from __future__ import annotations

import json
import re

import pytest

from supervisor_tree.workers.net import rpc
from supervisor_tree.workers.net.batch import Call
from supervisor_tree.workers.net.config import NetworkSpec
from supervisor_tree.workers.net.http import Exchange, HttpConnection
from supervisor_tree.workers.net.server import Server
from supervisor_tree.workers.net.streamable import accepts, is_loopback_host
from supervisor_tree.workers.net.tools import TOOLS


class Recorder:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.paused = False
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def set_write_buffer_limits(self, high: int) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> object:
        return ("127.0.0.1", 5555) if name == "peername" else None

    @property
    def text(self) -> bytes:
        return b"".join(self.written)


class Held:
    """A handler that keeps the exchanges it is handed (to answer them later, in any order)."""

    def __init__(self) -> None:
        self.got: list[Exchange] = []

    def __call__(self, ex: Exchange) -> None:
        self.got.append(ex)


def http(**args: object) -> tuple[HttpConnection, Recorder, Held]:
    held = Held()
    conn = HttpConnection(Server(NetworkSpec.from_args(args), None), held)  # type: ignore[arg-type]
    transport = Recorder()
    conn.connection_made(transport)  # type: ignore[arg-type]
    return conn, transport, held


def post(body: bytes, extra: bytes = b"") -> bytes:
    return b"POST /mcp?x=1 HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def test_requests_are_cut_across_reads_and_headers_are_lower_cased() -> None:
    conn, _, held = http()
    raw = post(b'{"a":1}', b"X-Twice: 1\r\nx-twice: 2\r\n")
    for i in range(0, len(raw), 7):
        conn.data_received(raw[i:i + 7])
    (ex,) = held.got
    assert (ex.method, ex.path, ex.body) == (b"POST", b"/mcp", b'{"a":1}')
    assert ex.headers[b"host"] == b"localhost" and ex.headers[b"x-twice"] == b"1, 2"


def test_pipelined_answers_go_out_in_request_order() -> None:
    conn, transport, held = http()
    conn.data_received(post(b"1") + post(b"2") + post(b"3"))
    first, second, third = held.got
    third.respond(200, b"three")
    second.respond(202)
    assert transport.written == []  # the first is not answered yet: the others wait behind it
    first.respond(200, b"one")
    statuses = re.findall(rb"HTTP/1.1 (\d+)", transport.text)
    assert statuses == [b"200", b"202", b"200"]
    assert transport.text.index(b"one") < transport.text.index(b"three")
    assert not conn.queue


def test_a_stream_is_chunked_and_ends_with_its_last_chunk() -> None:
    conn, transport, held = http()
    conn.data_received(b"GET /mcp HTTP/1.1\r\nHost: localhost\r\n\r\n")
    (ex,) = held.got
    ex.open_stream()
    ex.send(b": keep-alive\n\n")
    ex.end()
    head, _, body = transport.text.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head and b"content-type: text/event-stream" in head
    assert body == b"e\r\n: keep-alive\n\n\r\n0\r\n\r\n"


def test_connection_close_is_honoured_after_the_answer() -> None:
    conn, transport, held = http()
    conn.data_received(b"POST /mcp HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    held.got[0].respond(200, b"{}")
    assert b"connection: close" in transport.text and transport.closed


def test_malformed_http_is_answered_400_after_the_earlier_answers_then_closed() -> None:
    conn, transport, held = http()
    conn.data_received(post(b"ok") + b"NOT HTTP AT ALL\r\n\r\n")
    assert transport.written == [] and transport.paused  # the first request is not answered yet
    held.got[0].respond(200, b"fine")
    assert transport.text.index(b"fine") < transport.text.index(b"400 Bad Request")
    assert transport.closed


def test_a_body_over_max_line_is_413() -> None:
    conn, transport, _ = http(max_line=10)
    conn.data_received(post(b"x" * 11))
    assert transport.text.startswith(b"HTTP/1.1 413 ") and transport.closed


def test_expect_100_continue_is_answered_before_the_body() -> None:
    conn, transport, held = http()
    conn.data_received(b"POST /mcp HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
    assert transport.text == b"HTTP/1.1 100 Continue\r\n\r\n" and not held.got
    conn.data_received(b"{}")
    assert held.got[0].body == b"{}"


def test_reading_pauses_at_max_pending_exchanges_and_resumes_at_half() -> None:
    conn, transport, held = http(max_pending=4)
    conn.data_received(post(b"x") * 4)
    assert transport.paused
    for ex in held.got[:2]:
        ex.respond(200, b"r")
    assert not transport.paused


@pytest.mark.parametrize(
    ("accept", "expected"),
    [(None, (True, True)), (b"application/json, text/event-stream", (True, True)), (b"application/json", (True, False)),
     (b"text/event-stream", (False, True)), (b"*/*", (True, True)), (b"text/html", (False, False)),
     (b"application/json;q=0, text/event-stream", (False, True))],
)
def test_accept_headers(accept: bytes | None, expected: tuple[bool, bool]) -> None:
    assert accepts(accept) == expected


@pytest.mark.parametrize(("host", "loopback"), [(b"localhost", True), (b"localhost:7412", True), (b"127.0.0.1:1", True),
                                                (b"127.5.6.7", True), (b"[::1]:7412", True), (b"::1", True),
                                                (b"evil.example", False), (b"10.0.0.1:80", False), (b"", False)])
def test_loopback_hosts(host: bytes, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_integral_floats_are_integers_and_reach_the_tool_as_int() -> None:
    fib = TOOLS["fib"]
    assert fib.check({"n": 20.0}) is None
    assert fib.check({"n": 20.5}) == 'argument "n" must be integer; got 20.5'
    assert fib.check({"n": float("inf")}) is not None and fib.check({"n": float("nan")}) is not None
    assert fib.check({"n": 99.0}) == 'argument "n" must be <= 32; got 99.0'
    args = fib.positional({"n": 20.0})
    assert args == [20] and type(args[0]) is int
    assert TOOLS["echo"].positional({"text": "1.0"}) == ["1.0"]


def test_error_codes_stay_clear_of_mcp_and_its_sdk() -> None:
    ours = {rpc.UPSTREAM_UNAVAILABLE, rpc.UPSTREAM_TIMEOUT, rpc.OVERLOADED, rpc.SESSION_NOT_FOUND}
    assert all(-32019 <= code <= -32010 for code in ours)
    assert not ours & {-32000, -32001, -32002, -32020, -32021, -32022, -32042}


def test_a_tcp_connection_drops_a_cancelled_call() -> None:
    from supervisor_tree.workers.net.server import Connection

    class Methods:
        def dispatch(self, conn: Connection, line: bytes) -> None:
            conn.begin(Call(conn, line.decode(), []))

        def close_session(self, session: str) -> None:
            pass

    server = Server(NetworkSpec.from_args({"max_pending": 2}), Methods())  # type: ignore[arg-type]
    conn, transport = server.connection(), Recorder()
    conn.connection_made(transport)  # type: ignore[arg-type]
    conn.data_received(b"a\nb\nc\n")
    assert conn.pending == 2 and transport.paused  # "c" waits
    call_a = conn.calls["a"]  # type: ignore[index]
    assert conn.cancel("a") and call_a.cancelled
    assert not conn.cancel("a") and not conn.cancel("zzz")  # once; an unknown id is ignored
    assert conn.pending == 2 and set(conn.calls) == {"b", "c"}  # type: ignore[arg-type]  # "c" was read on resume
    conn.end(b"B\n", conn.calls["b"])  # type: ignore[index]
    assert transport.written == [b"B\n"] and conn.pending == 1


def test_a_response_message_is_taken_like_a_notification() -> None:
    req = rpc.parse(b'{"jsonrpc": "2.0", "id": 3, "result": {}}')
    assert req.notification and req.response and req.method == ""
    assert json.loads(rpc.error_line(None, rpc.SESSION_NOT_FOUND, "x"))["error"]["code"] == -32013


def test_network_args_for_http_are_checked() -> None:
    with pytest.raises(ValueError) as info:
        NetworkSpec.from_args({"http_port": 70000, "http_path": "mcp", "allowed_origins": ["app.example"], "http": 1})
    text = str(info.value)
    for expected in ("http_port must be an integer >= 0 and <= 65535", 'http_path must be a path starting with "/"',
                     'allowed_origins must be a list of origins like "https://app.example"', "http must be true or false"):
        assert expected in text
    assert NetworkSpec.from_args({"allowed_origins": ["https://a.example"]}).allowed_origins == ("https://a.example",)
