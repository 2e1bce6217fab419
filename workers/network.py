"""The network component: an MCP server on MCP's Streamable HTTP and on a TCP line protocol.

Owns the worker around the servers: the listening sockets (bound in `init`, so
a taken port fails the start with the OS's reason), a thread running the
asyncio loop (uvloop when importable), the file-descriptor limit, and the calls
the tree can make to it.  Requests are served by `supervisor_tree.workers.net`:
`server` (TCP: newline-delimited JSON-RPC 2.0, flow control), `http` (HTTP/1.1
on httptools) and `streamable` + `sessions` (MCP's Streamable HTTP), `mcp` (the
methods, the same on both), `batch` (tool calls coalesced for the pool),
`bridge` (calls to the session and pool components from the loop, on raw
ZeroMQ file descriptors), `tools`, `config` (the init args).

    [[tree.children]]
    id = "network"
    start = "supervisor_tree.workers.network:Network"
    args = { port = 7411, http_port = 7412, session = "session", pool = "pool" }

    MCP clients: Streamable HTTP at http://127.0.0.1:7412/mcp (the official SDK's
    `Client("http://127.0.0.1:7412/mcp")`); or one line each way on TCP 127.0.0.1:7411:
    -> {"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}
    <- {"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"hi"}],"isError":false}}

    $ supervise call network '{"op": "address"}'
    {"host": "127.0.0.1", "port": 7411, "http_port": 7412, "url": "http://127.0.0.1:7412/mcp"}

Init args (net/config.py has the defaults): host, port (0: ephemeral, see
"address"), http (false: no HTTP), http_port (0: ephemeral), http_path,
allowed_origins, reuse_port (several network workers on one fixed port), standby and
overflow (such workers listening by turns, net/listener.py), backlog, max_line, max_connections,
max_pending (requests in flight per connection), write_high_water (unread
reply bytes per connection), session / pool (the worker ids to route to),
call_timeout, batches_in_flight, nofile; tools (per tool: inline = true runs it in this
process, not on the pool; or a tool of the config's own, net/config.py) and inline_max_ms.

    args = { port = 7411, tools = { echo = { inline = true } } }

Calls: {"op": "address"} -> {"host", "port"}; {"op": "stats"} -> counters (also in
the worker's heartbeat stats under "worker"); {"op": "listen"} / {"op": "rest"} ->
true (shards taking turns on one port: net/listener.py).

File descriptors: one per connection.  `init` raises RLIMIT_NOFILE's soft limit
to max_connections + 256 (up to the hard limit; as root past it) and, when the
limit stays lower, holds fewer connections and says so.  50,000 connections in
one process need ``ulimit -n 50256`` (hard); where the hard limit is lower (here:
20,000, without CAP_SYS_RESOURCE) run several workers with reuse_port, the later
ones as standby overflow (the default tree runs three).  See docs/network.md.

Why a thread: the worker's main thread runs the mailbox loop (supervisor_tree/worker/incarnation.py); the
asyncio loop runs beside it and never waits on ZeroMQ (docs/network.md).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading

from supervisor_tree import Worker
from supervisor_tree.spec import ExitReason
from supervisor_tree.workers.net.bridge import Upstream
from supervisor_tree.workers.net.config import NOFILE_MARGIN, NetworkSpec
from supervisor_tree.workers.net.http import HttpConnection
from supervisor_tree.workers.net.inline import Toolbox
from supervisor_tree.workers.net.listener import Endpoint, Listener
from supervisor_tree.workers.net.mcp import PROTOCOL_VERSIONS, Methods
from supervisor_tree.workers.net.server import Server, raise_nofile_limit
from supervisor_tree.workers.net.sessions import HttpSessions
from supervisor_tree.workers.net.streamable import Streamable

log = logging.getLogger(__name__)

START_TIMEOUT = 10.0  # seconds for the loop thread to be serving
STOP_TIMEOUT = 4.0  # seconds terminate waits for the loop thread (shutdown = 5000 ms leaves a margin)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when it is installed (`pip install supervisor-tree[fast]`), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class Network(Worker):
    def init(self, **args: object) -> None:
        spec = NetworkSpec.from_args(args)
        self.nofile = raise_nofile_limit(spec.nofile or spec.max_connections + NOFILE_MARGIN)
        room = self.nofile[0] - NOFILE_MARGIN
        if room < spec.max_connections:
            log.warning("network %s: RLIMIT_NOFILE is %d (hard %d), so it holds at most %d connections, not "
                        "max_connections = %d; raise the hard limit (ulimit -Hn %d) or run more workers with "
                        "reuse_port", self.id, self.nofile[0], self.nofile[1], room, spec.max_connections,
                        spec.max_connections + NOFILE_MARGIN)  # fmt: skip
            spec = dataclasses.replace(spec, max_connections=max(1, room))
        self.spec = spec
        self.toolbox = Toolbox.from_settings(spec.tools, spec.inline_max_ms)  # imports inline tools: fails the start
        self.loop = new_event_loop()
        tell = self._tell_overflow if spec.overflow else None
        endpoints = [Endpoint("tcp", spec.port, self._connection)]
        if spec.http:
            endpoints.append(Endpoint("http", spec.http_port, self._http_connection))
        self.listener = Listener(self.loop, spec, endpoints, tell)
        ports = self.listener.bind()
        self.address: dict[str, object] = {"host": spec.host, "port": ports["tcp"]}
        if spec.http:
            host = f"[{spec.host}]" if ":" in spec.host else spec.host
            self.address |= {"http_port": ports["http"], "url": f"http://{host}:{ports['http']}{spec.http_path}"}
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run_loop, name="network-loop", daemon=True)
        self.thread.start()
        if not self._ready.wait(START_TIMEOUT) or self._failure is not None:
            raise RuntimeError(f"network: the server did not start: {self._failure or 'timed out'}")
        log.info("network %s: serving MCP on tcp %s:%s%s", self.id, spec.host, self.address["port"],
                 f" and {self.address['url']}" if spec.http else "")

    # -- the loop thread --

    def _run_loop(self) -> None:
        loop, spec = self.loop, self.spec
        asyncio.set_event_loop(loop)
        try:
            self.upstream = Upstream(loop, self.context, self.run_dir, spec.call_timeout)
            self.methods = Methods(self.upstream, spec.session, spec.pool, spec.pool_wait, spec.batches_in_flight,
                                   self.toolbox)
            self.server = Server(spec, self.methods, self.listener)
            self.sessions = HttpSessions(self.upstream, spec.session, PROTOCOL_VERSIONS)
            self.streamable = Streamable(spec, self.methods, self.sessions)
            if not spec.standby:
                loop.run_until_complete(self.listener.start())
        except BaseException as exc:  # noqa: BLE001 - reported by init, which fails the start
            self._failure = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            loop.run_forever()
        except BaseException as exc:
            log.error("network %s: the event loop failed", self.id, exc_info=True)
            self.stop(exc)
        finally:
            self._shutdown_loop()

    def _connection(self) -> asyncio.Protocol:
        return self.server.connection()

    def _http_connection(self) -> asyncio.Protocol:
        return HttpConnection(self.server, self.streamable.handle)

    def _tell_overflow(self, op: str) -> None:
        """"listen" (this worker is nearly full) or "rest" (it has room again) to the next shard (loop thread)."""
        self.upstream.call(self.spec.overflow, {"op": op}, _logged_failure)

    def _shutdown_loop(self) -> None:
        loop = self.loop
        self.listener.close()
        self.sessions.close()  # ends the open GET streams
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
        if op in ("listen", "rest"):
            self.listener.from_any_thread(op)
            return True
        raise ValueError(f'network takes {{"op": ...}} with "address", "stats", "listen" or "rest"; got {msg!r:.200}')

    def statistics(self) -> dict[str, object]:
        """Counters of the loop thread, read from the heartbeat thread: every copy is one C call under the GIL."""
        server = getattr(self, "server", None)
        if server is None:
            return {"address": self.address}
        return {
            "address": self.address,
            "connections": len(server.conns),
            "max_connections": self.spec.max_connections,
            "listening": self.listener.listening,
            **self.listener.counts,
            "in_flight": self.upstream.in_flight,
            "queued_tool_calls": self.methods.batcher.queued,
            "nofile": list(self.nofile),
            **dict(server.counts),
            "http_sessions": len(self.sessions.local),
            **self.sessions.counts,
            **dict(self.streamable.counts),
            **dict(self.methods.counts),
            "inline_tools": sorted(self.toolbox.inline),
            "inline_calls": sum(list(self.toolbox.calls.values())),
            **dict(self.toolbox.counts),
            **dict(self.methods.batcher.counts),
            **{f"upstream_{k}": v for k, v in dict(self.upstream.counts).items()},
        }

    def terminate(self, reason: ExitReason) -> None:
        loop = getattr(self, "loop", None)
        thread = getattr(self, "thread", None)
        if loop is None or thread is None or not thread.is_alive():
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(STOP_TIMEOUT)


def _logged_failure(ok: bool, value: object) -> None:
    if not ok:
        log.warning("network: could not tell the overflow worker: %s", value)
