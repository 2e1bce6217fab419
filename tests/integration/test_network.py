"""The network component over real TCP: a node from a config, JSON-RPC clients on loopback sockets.

Each test speaks newline-delimited JSON-RPC 2.0 to a `supervisor_tree.workers.network:Network`
worker of a real node (session, pool manager + members, network), and checks
what a client sees and what the tree holds.  Waits are on conditions or socket
reads with deadlines.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from network_trees import MAX_LINE, port_of, start_tree, tree_config
from nodes import Tree, wait_for

pytestmark = pytest.mark.timeout(120)

@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tree]:
    t = start_tree(tmp_path_factory.mktemp("net"), tree_config())
    yield t
    t.stop()


class Rpc:
    """A blocking JSON-RPC client on one TCP connection; every read has a deadline."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.ids = iter(range(1, 1 << 30))

    def send_line(self, line: bytes) -> None:
        self.sock.sendall(line + b"\n")

    def read(self) -> dict[str, Any]:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return json.loads(line)  # type: ignore[no-any-return]

    def request(self, method: str, params: object = None) -> dict[str, Any]:
        msg: dict[str, object] = {"jsonrpc": "2.0", "id": next(self.ids), "method": method}
        if params is not None:
            msg["params"] = params
        self.send_line(json.dumps(msg).encode())
        reply = self.read()
        assert reply["id"] == msg["id"], reply
        return reply

    def call_tool(self, name: str, **arguments: object) -> dict[str, Any]:
        return self.request("tools/call", {"name": name, "arguments": arguments})

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def rpc(tree: Tree) -> Iterator[Rpc]:
    c = Rpc(port_of(tree))
    yield c
    c.close()


def test_initialize_opens_a_session_that_ends_with_the_connection(tree: Tree, rpc: Rpc) -> None:
    params = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "pytest", "version": "1"}}
    result = rpc.request("initialize", params)["result"]
    assert result["protocolVersion"] == "2025-06-18"
    assert result["serverInfo"]["name"] == "supervisor_tree"
    assert "tools" in result["capabilities"]
    sid = result["_meta"]["supervisor-tree/sessionId"]
    data = tree.client.call("session", ("get", sid))
    assert data["client"] == {"name": "pytest", "version": "1"}
    assert data["peer"].startswith("127.0.0.1:")
    rpc.send_line(b'{"jsonrpc":"2.0","method":"notifications/initialized"}')  # a notification: no reply
    assert rpc.request("ping")["result"] == {}
    rpc.close()
    wait_for(lambda: tree.client.call("session", ("get", sid)) is None, 10, "the session to end with its connection")


def test_ping_and_tools_list(rpc: Rpc) -> None:
    assert rpc.request("ping") == {"jsonrpc": "2.0", "id": 1, "result": {}}
    tools = {t["name"]: t for t in rpc.request("tools/list")["result"]["tools"]}
    assert {"echo", "fib", "sha256_loop"} <= set(tools)
    assert tools["echo"]["inputSchema"]["required"] == ["text"]


def test_tools_call_runs_echo_and_a_cpu_bound_tool_on_the_pool(tree: Tree, rpc: Rpc) -> None:
    before = tree.client.call("pool", ("stats",))["batches"]
    echo = rpc.call_tool("echo", text="héllo\nworld")["result"]
    assert echo == {"content": [{"type": "text", "text": "héllo\nworld"}], "isError": False}
    assert rpc.call_tool("fib", n=25)["result"]["content"][0]["text"] == "75025"
    digest = rpc.call_tool("sha256_loop", rounds=1000, data="x")["result"]["content"][0]["text"]
    assert len(digest) == 64
    assert tree.client.call("pool", ("stats",))["batches"] >= before + 3  # they ran on the pool


@pytest.mark.parametrize(
    ("line", "code", "rid"),
    [
        (b'{"jsonrpc": "2.0", "id": 1, "method": ', -32700, None),  # malformed JSON
        (b"\xff\xfe not utf-8", -32700, None),
        (b'{"jsonrpc": "1.0", "id": 7, "method": "ping"}', -32600, 7),  # not 2.0
        (b'{"id": 8, "method": "ping"}', -32600, 8),
        (b'{"jsonrpc": "2.0", "id": 9, "method": 5}', -32600, 9),
        (b'[{"jsonrpc": "2.0", "id": 10, "method": "ping"}]', -32600, None),  # batches are not taken
        (b'{"jsonrpc": "2.0", "id": 11, "method": "resources/list"}', -32601, 11),  # unknown method
        (b'{"jsonrpc": "2.0", "id": 12, "method": "tools/call", "params": {"name": "nope"}}', -32602, 12),
        (b'{"jsonrpc": "2.0", "id": 13, "method": "tools/call", "params": {"name": "fib", "arguments": {"n": "x"}}}',
         -32602, 13),
        (b'{"jsonrpc": "2.0", "id": 14, "method": "tools/call", "params": {"name": "fib", "arguments": {"n": 99}}}',
         -32602, 14),
        (b'{"jsonrpc": "2.0", "id": 15, "method": "tools/call", "params": [1]}', -32602, 15),
    ],
)
def test_bad_requests_get_their_error_and_the_connection_goes_on(rpc: Rpc, line: bytes, code: int, rid: object) -> None:
    rpc.send_line(line)
    reply = rpc.read()
    assert reply["jsonrpc"] == "2.0" and reply["id"] == rid and reply["error"]["code"] == code, reply
    assert rpc.request("ping")["result"] == {}


def test_an_oversized_line_is_skipped_to_its_newline(rpc: Rpc) -> None:
    big = json.dumps({"jsonrpc": "2.0", "id": 99, "method": "tools/call",
                      "params": {"name": "echo", "arguments": {"text": "x" * (3 * MAX_LINE)}}}).encode()
    for i in range(0, len(big), 10_000):  # in pieces, as a slow client sends it
        rpc.sock.sendall(big[i:i + 10_000])
    rpc.send_line(b"")
    reply = rpc.read()
    assert reply["id"] is None and reply["error"]["code"] == -32600 and "max_line" in reply["error"]["message"]
    just_fits = "y" * (MAX_LINE - 200)
    assert rpc.call_tool("echo", text=just_fits)["result"]["content"][0]["text"] == just_fits
    assert rpc.request("ping")["result"] == {}


def test_address_and_stats_are_published(tree: Tree) -> None:
    port = port_of(tree)
    assert port > 0
    stats = tree.client.call("network", {"op": "stats"})
    http = stats["address"]["http_port"]
    assert stats["address"] == {"host": "127.0.0.1", "port": port, "http_port": http,
                                "url": f"http://127.0.0.1:{http}/mcp"}

    def heartbeat_stats() -> dict[str, Any] | None:
        status = tree.client.status()
        entry = next((w for w in _walk(status) if w.get("id") == "network" and w.get("stats")), None)
        return entry["stats"].get("worker") if entry else None

    assert wait_for(heartbeat_stats, 10, "the network's own stats in its heartbeat")["address"]["port"] == port


def _walk(node: object) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def test_a_client_that_never_reads_is_paused_not_buffered(tree: Tree, rpc: Rpc) -> None:
    pid = tree.pid_of("network")
    rss_before = psutil.Process(pid).memory_info().rss
    hog = socket.create_connection(("127.0.0.1", port_of(tree)))
    hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # it never reads: keep its kernel buffers small
    hog.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    hog.setblocking(False)
    line = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": {"name": "echo", "arguments": {"text": "z" * 1000}}}).encode() + b"\n"
    # 60 MB of requests (and as many bytes of replies): more than loopback's kernel buffers take (tcp_rmem
    # autotunes a receiver up to 32 MiB here), so the server must stop reading to stay bounded.
    payload, sent, deadline = line * 60_000, 0, time.monotonic() + 60
    stalled_since = None
    while sent < len(payload) and time.monotonic() < deadline:
        try:
            sent += hog.send(payload[sent:sent + 65536])
            stalled_since = None
        except BlockingIOError:
            stalled_since = stalled_since or time.monotonic()
            if time.monotonic() - stalled_since > 1.0:
                if tree.client.call("network", {"op": "stats"}).get("write_pauses", 0) >= 1:
                    break  # the server stopped reading us because we leave its replies unread: what the test wants
                stalled_since = None  # only slow (reading waits on max_pending while the pool answers): send on
            select_writable(hog, 0.05)
    try:
        assert stalled_since is not None and sent < len(payload), f"the server read all {sent} bytes of a client that reads nothing"
        stats = tree.client.call("network", {"op": "stats"})
        assert stats["write_pauses"] >= 1 and stats["read_pauses"] >= 1, stats
        # Everyone else is still served meanwhile.
        assert rpc.request("ping")["result"] == {}
        assert rpc.call_tool("echo", text="still here")["result"]["content"][0]["text"] == "still here"
        growth = psutil.Process(pid).memory_info().rss - rss_before
        assert growth < 32 * 2**20, f"the server grew by {growth / 2**20:.1f} MiB for one client that does not read"
    finally:
        hog.close()
    wait_for(lambda: tree.client.call("network", {"op": "stats"})["connections"] == 1, 10, "the hog to be gone")


def select_writable(sock: socket.socket, timeout: float) -> None:
    import select

    select.select([], [sock], [], timeout)


def test_2000_concurrent_connections_are_all_answered(tree: Tree) -> None:
    port = port_of(tree)

    async def one(i: int) -> tuple[int, bool]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b'{"jsonrpc":"2.0","id":%d,"method":"ping"}\n' % i)
            writer.write(b'{"jsonrpc":"2.0","id":%d,"method":"tools/call",'
                         b'"params":{"name":"echo","arguments":{"text":"c%d"}}}\n' % (i, i))
            await writer.drain()
            first = json.loads(await reader.readline())
            second = json.loads(await reader.readline())
            ok = first == {"jsonrpc": "2.0", "id": i, "result": {}} and \
                second["result"]["content"][0]["text"] == f"c{i}"
            return i, ok
        finally:
            writer.close()
            await writer.wait_closed()

    async def all_of_them() -> list[tuple[int, bool]]:
        gate = asyncio.Semaphore(500)  # connects in flight, under the listen backlog

        async def gated(i: int) -> tuple[int, bool]:
            async with gate:
                return await one(i)

        tasks = [asyncio.create_task(gated(i)) for i in range(2000)]
        return await asyncio.wait_for(asyncio.gather(*tasks), 25)

    t0 = time.monotonic()
    results = asyncio.run(all_of_them())
    assert [i for i, ok in results if not ok] == []
    assert time.monotonic() - t0 < 25


@pytest.fixture
def private_tree(tmp_path: Path) -> Iterator[Tree]:
    t = start_tree(tmp_path, tree_config(max_connections=3, call_timeout=2.0))
    yield t
    t.stop()


def test_max_connections_refuses_with_an_error_line(private_tree: Tree) -> None:
    port = port_of(private_tree)
    held = [Rpc(port) for _ in range(3)]
    try:
        for c in held:
            assert c.request("ping")["result"] == {}
        extra = Rpc(port)
        reply = extra.read()
        assert reply["error"]["code"] == -32012 and "max_connections" in reply["error"]["message"]
        with pytest.raises(ConnectionError):
            extra.read()
        extra.close()
    finally:
        for c in held:
            c.close()


def test_shards_on_one_port_take_turns(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    shards = tree_config().replace(
        'id = "network"\nstart = "supervisor_tree.workers.network:Network"\n'
        f'args = {{ port = 0, max_line = {MAX_LINE}, max_connections = 5000, call_timeout = 3.0 }}',
        f'id = "net.a"\nstart = "supervisor_tree.workers.network:Network"\n'
        f'args = {{ port = {port}, reuse_port = true, max_connections = 4, overflow = "net.b" }}\n\n'
        f'[[tree.children]]\nid = "net.b"\nstart = "supervisor_tree.workers.network:Network"\n'
        f'args = {{ port = {port}, reuse_port = true, max_connections = 4, standby = true }}')
    assert "net.b" in shards
    t = start_tree(tmp_path, shards)
    conns: list[Rpc] = []
    try:
        def stats(shard: str) -> dict[str, Any]:
            return t.client.call(shard, {"op": "stats"})  # type: ignore[no-any-return]

        assert stats("net.b")["listening"] is False  # a standby: bound, not listening
        for _ in range(4):  # the 4th fills net.a: it wakes net.b and stops listening
            conns.append(Rpc(port))
            assert conns[-1].request("ping")["result"] == {}
        assert stats("net.a")["connections"] == 4
        wait_for(lambda: stats("net.b")["listening"] and not stats("net.a")["listening"], 10, "net.b to take over")
        for _ in range(3):
            conns.append(Rpc(port))
            assert conns[-1].call_tool("echo", text="b")["result"]["content"][0]["text"] == "b"
        assert (stats("net.a")["connections"], stats("net.b")["connections"]) == (4, 3)
        for c in conns[:2]:
            c.close()
        # net.a has room again: it listens, and net.b rests (keeping its connections)
        wait_for(lambda: stats("net.a")["listening"] and not stats("net.b")["listening"], 10, "net.a to take over")
        assert stats("net.b")["connections"] == 3
        conns.append(Rpc(port))
        assert conns[-1].request("ping")["result"] == {}
        assert stats("net.a")["connections"] == 3
    finally:
        for c in conns:
            c.close()
        t.stop()


@pytest.mark.parametrize("victim", ["manager", "members"])
def test_killing_the_pool_under_load_gives_errors_not_hangs_then_service_resumes(private_tree: Tree,
                                                                                 victim: str) -> None:
    t = private_tree
    port = port_of(t)
    manager = t.pid_of("pool")
    outcomes: dict[str, int] = {}
    # ~0.1 s of CPU each, 8 always in flight over 2 members: at any moment the manager holds calls and both
    # members run one, so either kill catches calls in flight.
    request = (b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"sha256_loop",'
               b'"arguments":{"rounds":300000}}}\n')

    async def load(stop: asyncio.Event) -> None:
        """Two connections, each with 4 tool calls always in flight, until `stop`; every reply is read."""

        async def conn() -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request * 4)
            in_flight = 4
            try:
                while in_flight:
                    reply = json.loads(await asyncio.wait_for(reader.readline(), 20.0))  # a hang fails here (loaded: slow)
                    in_flight -= 1
                    key = "ok" if "result" in reply else str(reply["error"]["code"])
                    outcomes[key] = outcomes.get(key, 0) + 1
                    if not stop.is_set():
                        writer.write(request)
                        in_flight += 1
            finally:
                writer.close()

        await asyncio.gather(conn(), conn())

    def kill() -> None:
        if victim == "manager":  # pool_sup (one_for_all) restarts the manager and its members
            t.client.kill("pool")
        else:  # pool_members restarts them; the manager fails the calls they were running
            for member in t.client.which_children("pool_members"):
                t.client.kill(member["key"])

    async def steps(stop: asyncio.Event, running: asyncio.Task[None]) -> None:
        await _until(lambda: outcomes.get("ok", 0) >= 10, 30)
        kill()
        await _until(lambda: any(k != "ok" for k in outcomes), 30)  # the calls in flight fail, not hang
        ok_so_far = outcomes.get("ok", 0)
        await _until(lambda: outcomes.get("ok", 0) >= ok_so_far + 20, 30)  # service resumed
        stop.set()
        await asyncio.wait_for(running, 30)

    async def scenario() -> None:
        stop = asyncio.Event()
        running = asyncio.create_task(load(stop))
        try:
            await steps(stop, running)
        except BaseException:  # noqa: BLE001 - cleanup, then re-raised or reported
            running.cancel()
            raise AssertionError(f"outcomes {outcomes}; network {t.client.call('network', {'op': 'stats'})}") from None

    asyncio.run(scenario())
    assert set(outcomes) <= {"ok", "-32010", "-32011", "-32012"}, outcomes
    assert outcomes.get("-32010", 0) >= 1, outcomes  # "exited": the manager, or MemberExited
    if victim == "manager":
        assert t.pid_of("pool") != manager


async def _until(predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s")
        await asyncio.sleep(0.01)  # the load runs on this loop: yield to it, then look again
