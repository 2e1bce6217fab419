"""MCP's Streamable HTTP transport of the network component, on the wire: what the SDK does not show.

Raw HTTP/1.1 on loopback (the stdlib's http.client, or a bare socket where
pipelining or a long stream needs it) against a tree with the network
component: sessions and their headers, the version rules, the transport's
refusals (Origin, Host, path, method, media types, limits), answers as JSON or
as an event stream, the GET stream, pipelining, and a session that outlives the
network worker that opened it.
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from typing import Any

import httptools
import pytest
from network_trees import MAX_LINE, http_port_of, port_of, start_tree, tree_config
from nodes import Tree, wait_for

pytestmark = pytest.mark.timeout(120)

JSON_AND_SSE = "application/json, text/event-stream"


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tree]:
    t = start_tree(tmp_path_factory.mktemp("mcp-http"),
                   tree_config(net_args=', allowed_origins = ["https://app.example"]'))
    yield t
    t.stop()


class Answer:
    def __init__(self, response: http.client.HTTPResponse) -> None:
        self.status = response.status
        self.headers = {k.lower(): v for k, v in response.getheaders()}
        self.body = response.read()

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)  # type: ignore[no-any-return]

    @property
    def events(self) -> list[dict[str, Any]]:
        """The JSON-RPC messages of an event-stream body."""
        assert self.headers["content-type"] == "text/event-stream", self.headers
        return [json.loads(line[len(b"data: "):]) for line in self.body.split(b"\n") if line.startswith(b"data: ")]


def send(t: Tree, method: str = "POST", body: object = None, headers: dict[str, str] | None = None,
         path: str = "/mcp") -> Answer:  # fmt: skip
    conn = http.client.HTTPConnection("127.0.0.1", http_port_of(t), timeout=10)
    try:
        h = {"content-type": "application/json", "accept": JSON_AND_SSE, **(headers or {})}
        data = body if isinstance(body, bytes) else None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers=h)
        return Answer(conn.getresponse())
    finally:
        conn.close()


def rpc(method: str, rid: object = 1, **params: object) -> dict[str, object]:
    msg: dict[str, object] = {"jsonrpc": "2.0", "id": rid, "method": method}
    if params:
        msg["params"] = params
    return msg


def initialize(t: Tree, version: str = "2025-11-25") -> tuple[str, str]:
    """A new session: (its id, the version the server answered)."""
    answer = send(t, body=rpc("initialize", protocolVersion=version, capabilities={},
                              clientInfo={"name": "pytest", "version": "1"}))
    assert answer.status == 200, answer.body
    sid = answer.headers["mcp-session-id"]
    assert answer.json["result"]["_meta"]["supervisor-tree/sessionId"] == sid
    return sid, answer.json["result"]["protocolVersion"]


def in_session(sid: str, version: str | None = None) -> dict[str, str]:
    return {"mcp-session-id": sid, **({"mcp-protocol-version": version} if version else {})}


def test_initialize_negotiates_the_version_and_names_the_session(tree: Tree) -> None:
    sid, version = initialize(tree, "2025-06-18")
    assert version == "2025-06-18"
    assert all(0x21 <= ord(c) <= 0x7E for c in sid)  # visible ASCII (the spec's rule for session ids)
    assert tree.client.call("session", ("get", sid))["protocolVersion"] == "2025-06-18"
    assert initialize(tree, "2024-11-05")[1] == "2025-11-25"  # not spoken here: the newest instead
    assert initialize(tree, "2025-11-25")[1] == "2025-11-25"
    assert send(tree, body={"jsonrpc": "2.0", "method": "notifications/initialized"},
                headers=in_session(sid)).status == 202
    pong = send(tree, body=rpc("ping", 7), headers=in_session(sid, "2025-06-18"))
    assert (pong.status, pong.json) == (200, {"jsonrpc": "2.0", "id": 7, "result": {}})


def test_requests_need_a_live_session_and_its_version(tree: Tree) -> None:
    sid, _ = initialize(tree, "2025-06-18")
    missing = send(tree, body=rpc("tools/list", 3))
    assert missing.status == 400 and "Mcp-Session-Id" in missing.json["error"]["message"]
    assert missing.json["id"] == 3
    unknown = send(tree, body=rpc("tools/list"), headers=in_session("no-such-session"))
    assert unknown.status == 404 and unknown.json["error"]["code"] == -32013
    unsupported = send(tree, body=rpc("tools/list"), headers=in_session(sid, "2026-07-28"))
    assert unsupported.status == 400
    assert unsupported.json["error"]["data"] == {"supported": ["2025-11-25", "2025-06-18"], "requested": "2026-07-28"}
    other = send(tree, body=rpc("tools/list"), headers=in_session(sid, "2025-11-25"))
    assert other.status == 400 and "negotiated (2025-06-18)" in other.json["error"]["message"]
    assert send(tree, body=rpc("tools/list"), headers=in_session(sid)).status == 200  # no header: the session's
    assert send(tree, "DELETE", headers=in_session(sid)).status == 200
    assert send(tree, body=rpc("tools/list"), headers=in_session(sid)).status == 404
    assert tree.client.call("session", ("get", sid)) is None


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "status"),
    [
        ("POST", "/mcp", {"origin": "http://evil.example"}, rpc("ping"), 403),  # a browser page elsewhere
        ("POST", "/mcp", {"origin": "http://rebind.example:8080", "host": "rebind.example:8080"}, rpc("ping"), 403),
        ("GET", "/mcp", {"host": "rebind.example"}, None, 421),  # DNS rebinding: a GET may come without Origin
        ("POST", "/other", {}, rpc("ping"), 404),
        ("PUT", "/mcp", {}, rpc("ping"), 405),
        ("POST", "/mcp", {"content-type": "text/plain"}, rpc("ping"), 415),
        ("POST", "/mcp", {"accept": "text/html"}, rpc("ping"), 406),
        ("POST", "/mcp", {}, b'{"jsonrpc": "2.0", "id": 1, "method": ', 400),  # not JSON: -32700
        ("POST", "/mcp", {}, [rpc("ping")], 400),  # a batch: not taken since 2025-06-18
        ("GET", "/mcp", {"accept": "application/json"}, None, 406),
    ],
)
def test_the_transport_refuses_what_breaks_its_rules(tree: Tree, method: str, path: str, headers: dict[str, str],
                                                     body: object, status: int) -> None:
    answer = send(tree, method, body, headers, path)
    assert answer.status == status, answer.body
    assert answer.json["jsonrpc"] == "2.0" and answer.json["error"]["code"] in (-32600, -32700)
    if status == 405:
        assert answer.headers["allow"] == "GET, POST, DELETE"


def test_loopback_and_allowed_origins_pass(tree: Tree) -> None:
    for origin in ("http://localhost:5173", "http://127.0.0.1:8080", "http://[::1]:3000", "https://app.example"):
        answer = send(tree, body=rpc("initialize", protocolVersion="2025-11-25"), headers={"origin": origin})
        assert answer.status == 200, (origin, answer.body)


def test_a_tool_call_is_an_event_stream_or_json_as_the_client_accepts(tree: Tree) -> None:
    sid, _ = initialize(tree)
    call = rpc("tools/call", 5, name="echo", arguments={"text": "hi"})
    stream = send(tree, body=call, headers=in_session(sid))
    assert stream.events == [{"jsonrpc": "2.0", "id": 5,
                              "result": {"content": [{"type": "text", "text": "hi"}], "isError": False}}]
    plain = send(tree, body=call, headers={**in_session(sid), "accept": "application/json"})
    assert plain.headers["content-type"] == "application/json" and plain.json["result"]["content"][0]["text"] == "hi"
    fib = send(tree, body=rpc("tools/call", 6, name="fib", arguments={"n": 25.0}), headers=in_session(sid))
    assert fib.events[0]["result"]["content"][0]["text"] == "75025"


def test_bad_arguments_follow_the_negotiated_version(tree: Tree) -> None:
    bad = rpc("tools/call", 9, name="fib", arguments={"n": "x"})
    old, _ = initialize(tree, "2025-06-18")
    refused = send(tree, body=bad, headers=in_session(old))
    assert refused.json["error"]["code"] == -32602 and 'argument "n" must be integer' in refused.json["error"]["message"]
    new, _ = initialize(tree, "2025-11-25")
    result = send(tree, body=bad, headers=in_session(new)).json["result"]  # answered at once: JSON
    assert result["isError"] is True and 'argument "n" must be integer' in result["content"][0]["text"]


def read_until(sock: socket.socket, marker: bytes, buf: bytes = b"") -> bytes:
    while marker not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before {marker!r}; got {buf[-300:]!r}")
        buf += chunk
    return buf


def test_the_get_stream_is_open_until_the_session_ends(tree: Tree) -> None:
    sid, _ = initialize(tree)
    with socket.create_connection(("127.0.0.1", http_port_of(tree)), timeout=10) as s:
        s.sendall(f"GET /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: text/event-stream\r\nmcp-session-id: {sid}\r\n\r\n"
                  .encode())
        head = read_until(s, b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ") and b"content-type: text/event-stream" in head
        assert b"transfer-encoding: chunked" in head
        wait_for(lambda: tree.client.call("network", {"op": "stats"})["http_streams"] >= 1, 10, "the stream")
        assert send(tree, "DELETE", headers=in_session(sid)).status == 200
        rest = read_until(s, b"0\r\n\r\n", head.partition(b"\r\n\r\n")[2])  # the stream's last chunk
        assert rest.endswith(b"0\r\n\r\n")


class Responses:
    """HTTP responses read off one socket with httptools' parser (pipelined answers may share a read)."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.bodies: list[bytes] = []
        self._body = b""

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        self.bodies.append(self._body)
        self._body = b""


def test_pipelined_requests_are_answered_in_order(tree: Tree) -> None:
    sid, _ = initialize(tree)
    bodies = [rpc("tools/call", 1, name="fib", arguments={"n": 27}), rpc("ping", 2), rpc("tools/list", 3)]
    raw = b"".join(b"POST /mcp HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n"
                   b"accept: application/json\r\nmcp-session-id: %s\r\ncontent-length: %d\r\n\r\n%s"
                   % (sid.encode(), len(body), body) for body in (json.dumps(b).encode() for b in bodies))
    answers = Responses()
    with socket.create_connection(("127.0.0.1", http_port_of(tree)), timeout=10) as s:
        s.sendall(raw)  # the slow tool call first: the quick answers wait behind it
        while len(answers.bodies) < len(bodies):
            chunk = s.recv(65536)
            assert chunk, f"closed after {len(answers.bodies)} answers"
            answers.parser.feed_data(chunk)
    assert [json.loads(body)["id"] for body in answers.bodies] == [1, 2, 3]


def test_a_body_over_max_line_is_refused_and_the_connection_closed(tree: Tree) -> None:
    big = json.dumps(rpc("tools/call", 1, name="echo", arguments={"text": "x" * (MAX_LINE + 10)})).encode()
    answer = send(tree, body=big)
    assert answer.status == 413 and answer.headers["connection"] == "close"
    heads = send(tree, body=rpc("ping"), headers={f"x-pad-{i}": "p" * 1000 for i in range(70)})
    assert heads.status == 431


def test_a_session_outlives_the_network_worker_that_opened_it(tree: Tree) -> None:
    sid, _ = initialize(tree, "2025-06-18")
    before = tree.pid_of("network")
    tree.client.kill("network")
    wait_for(lambda: tree.client.resolve("network").pid != before, 20, "the network to restart")
    # The new incarnation never saw this session: it finds it in the session component and adopts it.
    answer = send(tree, body=rpc("tools/call", 4, name="echo", arguments={"text": "again"}), headers=in_session(sid))
    assert answer.status == 200 and answer.events[0]["result"]["content"][0]["text"] == "again"
    assert tree.client.call("network", {"op": "stats"})["http_sessions_adopted"] == 1
    mismatch = send(tree, body=rpc("ping"), headers=in_session(sid, "2025-11-25"))
    assert mismatch.status == 400  # its version came along



def test_a_tcp_connections_session_is_not_an_http_session(tree: Tree) -> None:
    with socket.create_connection(("127.0.0.1", port_of(tree)), timeout=10) as s:
        s.sendall(json.dumps(rpc("initialize", protocolVersion="2025-11-25")).encode() + b"\n")
        sid = json.loads(read_until(s, b"\n"))["result"]["_meta"]["supervisor-tree/sessionId"]
        assert tree.client.call("session", ("get", sid))["transport"] == "tcp"
        assert send(tree, body=rpc("ping"), headers=in_session(sid)).status == 404
