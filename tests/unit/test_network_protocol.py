"""The network component's pure parts: JSON-RPC lines, tool arguments, init args, line framing.

No sockets here (tests/integration/test_network.py has them): a `Connection` is
driven with bytes and a transport that records what is written and whether
reading is paused.
"""

from __future__ import annotations

import json

import pytest

from supervisor_tree.workers.net import rpc
from supervisor_tree.workers.net.config import NetworkSpec
from supervisor_tree.workers.net.server import Connection, Server
from supervisor_tree.workers.net.tools import TOOLS, run_tool


@pytest.mark.parametrize(
    ("line", "code", "rid"),
    [
        (b"{", rpc.PARSE_ERROR, None),
        (b"\xff", rpc.PARSE_ERROR, None),
        (b"[]", rpc.INVALID_REQUEST, None),
        (b"3", rpc.INVALID_REQUEST, None),
        (b'{"jsonrpc": "2.0", "id": true, "method": "ping"}', rpc.INVALID_REQUEST, None),
        (b'{"jsonrpc": "2.1", "id": "a", "method": "ping"}', rpc.INVALID_REQUEST, "a"),
        (b'{"jsonrpc": "2.0", "id": 4, "method": "ping", "params": 3}', rpc.INVALID_REQUEST, 4),
    ],
)
def test_parse_answers_the_error_a_line_deserves(line: bytes, code: int, rid: object) -> None:
    with pytest.raises(rpc.RpcError) as info:
        rpc.parse(line)
    assert (info.value.code, info.value.id) == (code, rid)
    reply = json.loads(info.value.line())
    assert reply["jsonrpc"] == "2.0" and reply["id"] == rid and reply["error"]["code"] == code


def test_parse_tells_notifications_from_requests() -> None:
    assert rpc.parse(b'{"jsonrpc": "2.0", "method": "notifications/initialized"}').notification
    assert not rpc.parse(b'{"jsonrpc": "2.0", "id": null, "method": "ping"}').notification


@pytest.mark.parametrize("rid", [1, "x\"y", None, 2.5])
@pytest.mark.parametrize("text", ["plain", "é\n\"\\\u2028\x00\x7f\U0001F600"])
def test_the_fast_text_result_line_is_the_same_json(rid: object, text: str) -> None:
    expected = rpc.result_line(rid, {"content": [{"type": "text", "text": text}], "isError": False})
    line = rpc.text_result_line(rid, text)
    assert line == expected  # byte for byte: orjson and the stdlib escape the same characters the same way
    assert json.loads(line)["result"]["content"][0]["text"] == text


def test_tool_arguments_are_checked_against_the_schema() -> None:
    fib, sha = TOOLS["fib"], TOOLS["sha256_loop"]
    assert fib.check({"n": 10}) is None
    assert fib.check({"n": True}) == 'argument "n" must be integer; got True'
    assert fib.check({}) == 'argument "n" is required'
    assert "unknown argument" in (fib.check({"n": 1, "m": 2}) or "")
    assert fib.check([1]) is not None
    assert sha.positional({"rounds": 3}) == [3]
    assert sha.positional({"data": "d", "rounds": 3}) == [3, "d"]


def test_run_tool_turns_a_raising_tool_into_its_own_error() -> None:
    assert run_tool("supervisor_tree.workers.net.tools:fib", [10]) == [True, 55]
    ok, why = run_tool("supervisor_tree.workers.net.tools:fib", ["x"])
    assert ok is False and why.startswith("TypeError")


def test_network_args_name_every_problem() -> None:
    with pytest.raises(ValueError) as info:
        NetworkSpec.from_args({"port": 70000, "max_lin": 5, "reuse_port": "yes", "call_timeout": 0})
    text = str(info.value)
    for expected in ("port must be an integer >= 0 and <= 65535", 'unknown key "max_lin" (did you mean "max_line"?)',
                     "reuse_port must be true or false", "call_timeout must be a number of seconds > 0"):
        assert expected in text


class Recorder:
    """What a Connection does to its transport."""

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
        return None


class Lines:
    """A dispatcher that keeps what it is handed and answers later, on request."""

    def __init__(self) -> None:
        self.got: list[tuple[Connection, bytes]] = []

    def dispatch(self, conn: Connection, line: bytes) -> None:
        conn.begin()
        self.got.append((conn, line))

    def close_session(self, session: str) -> None:
        pass


def connection(**args: object) -> tuple[Connection, Recorder, Lines]:
    lines = Lines()
    conn = Server(NetworkSpec.from_args(args), lines).connection()  # type: ignore[arg-type]
    transport = Recorder()
    conn.connection_made(transport)  # type: ignore[arg-type]
    return conn, transport, lines


def test_lines_are_cut_at_newlines_across_reads() -> None:
    conn, _, lines = connection()
    for piece in (b'{"a":', b"1}\n{", b'"b":2}\n\n', b"{}"):
        conn.data_received(piece)
    assert [line for _, line in lines.got] == [b'{"a":1}', b'{"b":2}']
    conn.data_received(b"\n")
    assert lines.got[-1][1] == b"{}"


def test_an_oversized_line_is_answered_and_skipped_whole() -> None:
    conn, transport, lines = connection(max_line=10)
    conn.data_received(b"x" * 25)  # no newline yet: discarding starts
    conn.data_received(b"y" * 5 + b'\n{"ok":1}\n')
    assert [line for _, line in lines.got] == [b'{"ok":1}']
    assert len(transport.written) == 1 and json.loads(transport.written[0])["error"]["code"] == rpc.INVALID_REQUEST


def test_reading_pauses_at_max_pending_and_resumes_at_half() -> None:
    conn, transport, lines = connection(max_pending=4)
    conn.data_received(b"{}\n" * 10)
    assert len(lines.got) == 4 and transport.paused
    for _ in range(2):
        conn.end(b"r\n")
    assert len(lines.got) == 6 and transport.paused  # resumed at 2 in flight, took the buffered lines, full again
    for _ in range(6):
        conn.end(b"r\n")
    assert len(lines.got) == 10 and not transport.paused


def test_reading_pauses_while_replies_are_not_read() -> None:
    conn, transport, lines = connection()
    conn.pause_writing()
    conn.data_received(b"{}\n{}\n")
    assert transport.paused and lines.got == []
    conn.resume_writing()
    assert not transport.paused and len(lines.got) == 2


def test_connections_past_max_connections_get_an_error_and_are_closed() -> None:
    lines = Lines()
    server = Server(NetworkSpec.from_args({"max_connections": 1}), lines)  # type: ignore[arg-type]
    first, second = server.connection(), server.connection()
    first.connection_made(Recorder())  # type: ignore[arg-type]
    refused = Recorder()
    second.connection_made(refused)  # type: ignore[arg-type]
    assert refused.closed and json.loads(refused.written[0])["error"]["code"] == rpc.OVERLOADED
    assert server.conns == {first}
