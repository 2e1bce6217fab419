"""Helpers of the MCP tests: the default tree on free ports, and the official MCP SDK's client on either transport.

`DefaultTree` starts the built-in default tree as a user does (`supervise start
--detach`, no config), with $SUPERVISE_NETWORK_PORT and
$SUPERVISE_NETWORK_HTTP_PORT set to free ports.  `mcp_client(tree, "http")` is
the SDK's `Client` on MCP's Streamable HTTP (the URL); `mcp_client(tree,
"tcp")` is the same `Client` on `tcp_lines`, a small transport that carries the
SDK's messages as newline-delimited JSON over one TCP connection (what the
network's TCP port speaks).  `until` waits for a condition inside async code.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import mcp_types
import psutil
from mcp import Client
from mcp.shared.message import SessionMessage
from nodes import supervise, wait_for

from supervisor_tree.client import Client as TreeClient
from supervisor_tree.config.default_tree import HTTP_PORT_ENV, PORT_ENV
from supervisor_tree.wire import rundir


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DefaultTree:
    """The default tree on free ports, in a private run directory."""

    def __init__(self) -> None:
        self.port, self.http_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http_port}/mcp"
        self.run_dir = Path(tempfile.mkdtemp(prefix="st-", dir="/tmp"))  # short: ipc paths have a length limit
        self._client: TreeClient | None = None

    def start(self) -> None:
        saved = {k: os.environ.get(k) for k in (PORT_ENV, HTTP_PORT_ENV)}
        os.environ[PORT_ENV], os.environ[HTTP_PORT_ENV] = str(self.port), str(self.http_port)
        try:
            started = supervise("start", "--detach", "--run-dir", str(self.run_dir), "--timeout", "60", timeout=90)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        assert started.returncode == 0, started.stderr

    def cli(self, *args: str) -> None:
        out = supervise(*args, "--run-dir", str(self.run_dir))
        assert out.returncode == 0, (args, out.stdout, out.stderr)

    @property
    def client(self) -> TreeClient:
        if self._client is None:
            self._client = TreeClient(self.run_dir, timeout=10.0)
        return self._client

    def stats(self) -> dict[str, Any]:
        """The listening network shard's counters (network.1: the others are standbys)."""
        return self.client.call("network.1", {"op": "stats"})  # type: ignore[no-any-return]

    def processes(self) -> set[int]:
        """Every process of the node: the node, its fork server, the standbys and the workers."""
        info = rundir.read_info(self.run_dir)
        assert info is not None
        node = psutil.Process(info.pid)
        return {node.pid} | {p.pid for p in node.children(recursive=True)}

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
        if rundir.is_locked(self.run_dir):
            supervise("stop", "--run-dir", str(self.run_dir), timeout=120)
        info = rundir.read_info(self.run_dir)
        if rundir.is_locked(self.run_dir) and info:
            os.kill(info.pid, signal.SIGKILL)
        wait_for(lambda: not rundir.is_locked(self.run_dir), 30, "the default node to stop")
        shutil.rmtree(self.run_dir, ignore_errors=True)


@asynccontextmanager
async def tcp_lines(host: str, port: int) -> AsyncIterator[tuple[Any, Any]]:
    """An MCP SDK transport: JSON-RPC messages as lines on one TCP connection (like the SDK's stdio transport)."""
    stream = await anyio.connect_tcp(host, port)
    read_send, read_recv = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_send, write_recv = anyio.create_memory_object_stream[SessionMessage](0)

    async def reader() -> None:
        buf = b""
        async with read_send:
            try:
                while True:
                    buf += await stream.receive()
                    *lines, buf = buf.split(b"\n")
                    for line in lines:
                        await read_send.send(SessionMessage(mcp_types.jsonrpc_message_adapter.validate_json(line)))
            except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                pass

    async def writer() -> None:
        async with write_recv:
            async for message in write_recv:
                await stream.send(message.message.model_dump_json(by_alias=True, exclude_unset=True).encode() + b"\n")

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        tg.start_soon(writer)
        try:
            yield read_recv, write_send
        finally:
            tg.cancel_scope.cancel()
            await stream.aclose()


def mcp_client(tree: DefaultTree, transport: str, **kwargs: Any) -> Client:
    """The SDK's Client on the tree's network: "http" (Streamable HTTP) or "tcp" (lines)."""
    server: Any = tree.url if transport == "http" else tcp_lines("127.0.0.1", tree.port)
    return Client(server, **kwargs)


async def until(predicate: Callable[[], object], timeout: float = 20.0, what: str = "condition") -> Any:
    """`wait_for` for async code: the SDK's tasks run while this waits."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await anyio.sleep(0.01)  # re-check; the condition lives in another process
