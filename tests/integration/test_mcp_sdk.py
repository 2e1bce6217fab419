"""The default tree as an MCP server, driven by the official MCP SDK's client (a client nobody here wrote).

Every test runs over both transports of the network component: MCP's Streamable
HTTP (the SDK's own transport, at the URL) and the TCP line protocol (the SDK's
messages carried as lines by `mcp_clients.tcp_lines`).  The tree is the
built-in default one (`supervise start`, no config) on free ports.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import anyio
import jsonschema
import psutil
import pytest
from mcp.shared.exceptions import MCPError
from mcp_clients import DefaultTree, mcp_client, until
from nodes import wait_for

pytestmark = pytest.mark.timeout(120)

SESSION_META = "supervisor-tree/sessionId"
BLOCKER = {"rounds": 1_500_000, "data": "block"}  # ~0.6 s of CPU on a pool member: keeps it busy


@pytest.fixture(scope="module")
def tree() -> Iterator[DefaultTree]:
    t = DefaultTree()
    t.start()
    yield t
    t.stop()


@pytest.fixture(params=["http", "tcp"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def session_id(client: object) -> str:
    result = client.session.initialize_result  # type: ignore[attr-defined]
    return str(result.meta[SESSION_META])


def test_initialize_negotiates_and_lists_valid_tools(tree: DefaultTree, transport: str) -> None:
    async def scenario() -> str:
        async with mcp_client(tree, transport) as c:
            assert c.protocol_version == "2025-11-25"
            assert c.server_info is not None and c.server_info.name == "supervisor_tree"
            assert c.server_capabilities.tools is not None
            await c.session.send_ping()  # ping is in 2025-11-25 (the Client wrapper warns of 2026)
            tools = {t.name: t for t in (await c.list_tools()).tools}
            assert set(tools) == {"echo", "fib", "sha256_loop"}
            for tool in tools.values():
                jsonschema.Draft202012Validator.check_schema(tool.input_schema)  # MCP 2025-11-25's default dialect
            sid = session_id(c)
            data = tree.client.call("session", ("get", sid))
            assert data["transport"] == transport and data["protocolVersion"] == "2025-11-25"
            return sid

    sid = anyio.run(scenario)
    # The client is gone (HTTP: it sent DELETE; TCP: it closed the connection): so is its session.
    wait_for(lambda: tree.client.call("session", ("get", sid)) is None, 10, "the session to end with its client")


def test_each_tool_runs_on_the_pool(tree: DefaultTree, transport: str) -> None:
    async def scenario() -> None:
        async with mcp_client(tree, transport) as c:
            echo = await c.call_tool("echo", {"text": "héllo\nworld"})
            assert not echo.is_error and echo.content[0].text == "héllo\nworld"  # type: ignore[union-attr]
            fib = await c.call_tool("fib", {"n": 20.0})  # an integral float is an integer (JSON Schema)
            assert not fib.is_error and fib.content[0].text == "6765"  # type: ignore[union-attr]
            sha = await c.call_tool("sha256_loop", {"rounds": 3, "data": "x"})
            digest = b"x"
            for _ in range(3):
                digest = hashlib.sha256(digest).digest()
            assert sha.content[0].text == digest.hex()  # type: ignore[union-attr]

    before = tree.client.call("pool", ("stats",))["batches"]
    anyio.run(scenario)
    assert tree.client.call("pool", ("stats",))["batches"] >= before + 3  # they ran on the pool


def test_bad_arguments_are_a_tool_error_and_an_unknown_tool_is_refused(tree: DefaultTree, transport: str) -> None:
    async def scenario() -> None:
        async with mcp_client(tree, transport) as c:
            for arguments, why in (({"n": 99}, 'argument "n" must be <= 32'), ({"n": 2.5}, "must be integer"),
                                   ({}, 'argument "n" is required'), ({"n": 1, "m": 2}, 'unknown argument "m"')):
                result = await c.call_tool("fib", arguments)  # 2025-11-25: a tool error the model can read
                assert result.is_error and why in result.content[0].text, (arguments, result)  # type: ignore[union-attr]
            with pytest.raises(MCPError) as info:
                await c.call_tool("no_such_tool", {})
            assert info.value.error.code == -32602 and "Unknown tool" in info.value.error.message
            assert (await c.call_tool("echo", {"text": "still here"})).content[0].text == "still here"  # type: ignore[union-attr]

    anyio.run(scenario)


def test_100_calls_in_flight_are_all_answered(tree: DefaultTree, transport: str) -> None:
    got: dict[int, str] = {}

    async def scenario() -> None:
        async with mcp_client(tree, transport) as c:

            async def one(i: int) -> None:
                result = await c.call_tool("echo", {"text": f"call {i}"})
                got[i] = result.content[0].text  # type: ignore[union-attr]

            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    for i in range(100):
                        tg.start_soon(one, i)

    anyio.run(scenario)
    assert got == {i: f"call {i}" for i in range(100)}


def test_a_cancelled_call_is_dropped_and_not_run_when_it_was_still_waiting(tree: DefaultTree, transport: str) -> None:
    """Four long calls, sent one by one, take the four pool members and the network's four batches in flight
    for the tool; a fifth waits in the network's queue.  Cancelled there (the SDK sends notifications/cancelled),
    it never reaches the pool.  One cancelled while it runs finishes on the pool, and its answer is dropped."""

    async def scenario() -> None:
        async with mcp_client(tree, transport) as c:
            before = tree.stats()
            sent = before.get("tool_calls", 0)
            blockers: list[object] = []

            async def blocker() -> None:
                try:
                    blockers.append(await c.call_tool("sha256_loop", BLOCKER))
                except MCPError as exc:  # a machine so busy that it took longer than call_timeout: -32011
                    assert exc.error.code == -32011, exc.error
                    blockers.append(exc)

            async def cancellable(scope: anyio.CancelScope, arguments: dict[str, object]) -> None:
                with scope:
                    await c.call_tool("sha256_loop", arguments)

            async with anyio.create_task_group() as tg:
                for i in range(4):  # one at a time: each its own batch
                    tg.start_soon(blocker)
                    await until(lambda: tree.stats().get("tool_calls", 0) >= sent + i + 1, 20,  # noqa: B023
                                f"long call {i + 1} to reach the pool")
                waiting = anyio.CancelScope()
                tg.start_soon(cancellable, waiting, {"rounds": 1, "data": "never"})
                await until(lambda: tree.stats()["queued_tool_calls"] == 1, 20, "a fifth call to wait in the queue")
                waiting.cancel()
            assert len(blockers) == 4  # each answered (its result, or a timeout on a very busy machine)
            after = await until(lambda: (s := tree.stats())["cancelled_before_start"] >
                                before.get("cancelled_before_start", 0) and s, 20, "the queued call to be dropped")
            assert after["tool_calls"] == sent + 4  # the fifth never went to the pool
            assert after["cancelled"] == before.get("cancelled", 0) + 1

            async with anyio.create_task_group() as tg:
                running = anyio.CancelScope()
                tg.start_soon(cancellable, running, BLOCKER)
                await until(lambda: tree.stats()["tool_calls"] > sent + 4, 20, "a sixth call to reach the pool")
                running.cancel()
            await until(lambda: tree.stats().get("cancelled_answers_dropped", 0) >
                        before.get("cancelled_answers_dropped", 0), 20, "the running call's answer to be dropped")
            assert (await c.call_tool("echo", {"text": "after"})).content[0].text == "after"  # type: ignore[union-attr]

    anyio.run(scenario)


def test_a_session_survives_restarts_of_the_pool(tree: DefaultTree, transport: str) -> None:
    """`supervise terminate pool` + `restart pool`, twice, under a live session: the session goes on, the pool
    holds exactly its configured size again, and the tree holds no more processes than before."""

    async def call_until_it_works(c: object, text: str) -> None:
        async def works() -> bool:
            try:
                result = await c.call_tool("echo", {"text": text})  # type: ignore[attr-defined]
            except MCPError as exc:  # the pool is restarting: a -32010 or -32011, never a hang
                assert exc.error.code in (-32010, -32011, -32012), exc.error
                return False
            return result.content[0].text == text  # type: ignore[no-any-return]

        with anyio.fail_after(30):
            while not await works():
                await anyio.sleep(0.05)  # then ask again: the manager comes back within the deadline

    async def scenario() -> None:
        async with mcp_client(tree, transport) as c:
            await call_until_it_works(c, "before")
            sid = session_id(c)
            await until(lambda: tree.client.count_children("pool_members")["active"] == 4, 20,
                        "overflow members of earlier tests to be reaped")  # so that `before` is the pool at its size
            before = tree.processes()
            for round_ in range(2):
                manager = tree.client.resolve("pool").pid
                tree.cli("terminate", "pool")
                tree.cli("restart", "pool")
                assert tree.client.resolve("pool").pid != manager
                await call_until_it_works(c, f"after restart {round_}")
                stats = tree.client.call("pool", ("stats",))
                assert (stats["members"], stats["size"]) == (4, 4), stats
                assert tree.client.count_children("pool_members")["active"] == 4
            assert tree.client.call("session", ("get", sid)) is not None  # the same session, still there
            await c.session.send_ping()  # ping is in 2025-11-25 (the Client wrapper warns of 2026)
            try:
                await until(lambda: len(tree.processes()) == len(before), 30, "the tree's process count")
            except AssertionError:
                now = tree.processes()
                raise AssertionError(f"the tree held {len(before)} processes before, {len(now)} now: gone "
                                     f"{_described(before - now)}, new {_described(now - before)}") from None

    anyio.run(scenario)


def _described(pids: set[int]) -> list[str]:
    out = []
    for pid in sorted(pids):
        try:
            p = psutil.Process(pid)
            out.append(f"{pid} {p.status()} ppid {p.ppid()} {' '.join(p.cmdline())[:80]}")
        except psutil.NoSuchProcess:
            out.append(f"{pid} (gone)")
    return out
