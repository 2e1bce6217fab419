"""The network component: a TCP server speaking newline-delimited JSON-RPC 2.0, like an MCP server.

Owns the worker around the server: the listening socket (bound in `init`, so a
taken port fails the start with the OS's reason), a thread running the asyncio
loop (uvloop when importable), the file-descriptor limit, and the calls the
tree can make to it.  Requests are served by `workers.net`: `server` (TCP,
framing, flow control), `mcp` (the methods), `bridge` (calls to the session
and pool components from the loop, on raw ZeroMQ file descriptors), `tools`.

    [[tree.children]]
    id = "network"
    start = "workers.network:Network"
    args = { port = 7411, session = "session", pool = "pool" }

    $ printf '%s\\n' '{"jsonrpc":"2.0","id":1,"method":"ping"}' | nc -q1 127.0.0.1 7411
    {"jsonrpc":"2.0","id":1,"result":{}}
    $ supervise call network '{"op": "address"}'
    {"host": "127.0.0.1", "port": 7411}

Init args: host ("127.0.0.1"), port (0: ephemeral, see "address"), max_line
(1 MiB), max_connections (50,000), max_pending (64 requests in flight per
connection), write_high_water (256 KiB), backlog (4096), session / pool (the
worker ids to route to), call_timeout (s, 5.0: a request the tree has not answered
by then gets -32002; a tool call waits at most half of it for a free pool member),
nofile (the RLIMIT_NOFILE soft limit to raise to; default max_connections + 1024),
reuse_port (false; true lets several network workers listen on one fixed port,
SO_REUSEPORT, the kernel spreading connections over them: see docs/network.md),
batches_in_flight (4: tool-call batches of one tool at the pool at once; calls
arriving meanwhile wait for the next batch, see net/batch.py).

Calls: {"op": "address"} -> {"host", "port"}; {"op": "stats"} -> counters (also in
the worker's heartbeat stats under "worker").

Why a thread: the worker's main thread runs the mailbox loop (worker.py); the
asyncio loop runs beside it and never waits on ZeroMQ (docs/network.md).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time

from supervisor_tree import Worker
from supervisor_tree.spec import ExitReason

from .net.bridge import Upstream
from .net.mcp import Methods
from .net.server import Server, ServerConfig, raise_nofile_limit

log = logging.getLogger(__name__)

START_TIMEOUT = 10.0  # seconds for the loop thread to be serving


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when it is installed (`pip install supervisor-tree[fast]`), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()  # type: ignore[no-any-return]


class Network(Worker):
    def init(self, host: str = "127.0.0.1", port: int = 0, max_line: int = 1 << 20, max_connections: int = 50_000,
             max_pending: int = 64, write_high_water: int = 256 * 1024, backlog: int = 4096,
             session: str = "session", pool: str = "pool", call_timeout: float = 5.0,
             nofile: int | None = None, reuse_port: bool = False, batches_in_flight: int = 4) -> None:  # fmt: skip
        self.config = ServerConfig(host, port, max_line, max_connections, max_pending, write_high_water, backlog)
        self.nofile = raise_nofile_limit(nofile or max_connections + 1024)
        if self.nofile[0] < max_connections + 64:
            log.warning("network: RLIMIT_NOFILE is %d (hard %d): fewer than max_connections = %d can be held; "
                        "raise it (ulimit -n %d) before starting the node", self.nofile[0], self.nofile[1],
                        max_connections, max_connections + 1024)  # fmt: skip
        self.listener = socket.create_server((host, port), backlog=backlog, reuse_port=reuse_port)
        self.listener.setblocking(False)
        self.address = {"host": host, "port": self.listener.getsockname()[1]}
        self.route = {"session": session, "pool": pool, "call_timeout": call_timeout,
                      "batches_in_flight": batches_in_flight}
        self.loop = new_event_loop()
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run_loop, name="network-loop", daemon=True)
        self.thread.start()
        if not self._ready.wait(START_TIMEOUT) or self._failure is not None:
            raise RuntimeError(f"network: the server did not start: {self._failure or 'timed out'}")
        log.info("network: serving JSON-RPC on %s:%d", host, self.address["port"])

    # -- the loop thread --

    def _run_loop(self) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)
        try:
            self.upstream = Upstream(loop, self._ctx, self.run_dir, self.route["call_timeout"])  # type: ignore[arg-type]
            self.methods = Methods(self.upstream, self.route["session"], self.route["pool"],  # type: ignore[arg-type]
                                   pool_wait=self.route["call_timeout"] / 2,  # type: ignore[operator]
                                   batches_in_flight=self.route["batches_in_flight"])  # type: ignore[arg-type]
            self.server = Server(self.config, self.methods)
            self.listening = loop.run_until_complete(
                loop.create_server(self.server.connection, sock=self.listener, backlog=self.config.backlog))
        except BaseException as exc:  # noqa: BLE001 - reported by init, which fails the start
            self._failure = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            loop.run_forever()
        except BaseException as exc:  # noqa: BLE001 - the loop died: the worker crashes with the reason
            log.error("network: the event loop failed", exc_info=True)
            self.stop(exc)
        finally:
            self._shutdown_loop()

    def _shutdown_loop(self) -> None:
        loop = self.loop
        self.listening.close()
        self.server.close_all()
        self.upstream.close()
        loop.run_until_complete(asyncio.sleep(0))  # let the aborted transports call connection_lost
        loop.close()

    # -- calls from the tree --

    def handle_call(self, msg: object) -> object:
        op = msg.get("op") if isinstance(msg, dict) else msg
        if op == "address":
            return dict(self.address)
        if op == "stats":
            return self.statistics()
        raise ValueError(f'network takes {{"op": "address"}} or {{"op": "stats"}}; got {msg!r:.200}')

    def statistics(self) -> dict[str, object]:
        server = getattr(self, "server", None)
        if server is None:
            return {"address": self.address}
        return {
            "address": self.address,
            "connections": len(server.conns),
            "in_flight": self.upstream.in_flight,
            "nofile": list(self.nofile),
            **dict(server.counts),
            **dict(self.methods.counts),
            **dict(self.methods.batcher.counts),
            "queued_tool_calls": self.methods.batcher.queued,
            **{f"upstream_{k}": v for k, v in self.upstream.counts.items()},
        }

    def terminate(self, reason: ExitReason) -> None:
        loop = getattr(self, "loop", None)
        if loop is None or not self.thread.is_alive():
            return
        loop.call_soon_threadsafe(loop.stop)
        deadline = time.monotonic() + 5.0
        self.thread.join(max(0.0, deadline - time.monotonic()))
