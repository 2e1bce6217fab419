"""The methods the network server answers, modelled on an MCP server, routed to the tree.

Owns what each JSON-RPC method means: `initialize` opens a session in the session
component, `ping` answers at once, `tools/list` lists `tools.TOOLS`, `tools/call`
runs the tool as a task on the pool component; a connection's session is deleted
when the connection ends.  It turns a reply (or a failure) from the tree into a
JSON-RPC result or error line.  No sockets: lines come from and go to a
`server.Connection`; calls go through a `bridge.Upstream`.

    methods = Methods(upstream, session_id="session", pool_id="pool")
    methods.dispatch(conn, b'{"jsonrpc":"2.0","id":1,"method":"tools/call",'
                           b'"params":{"name":"echo","arguments":{"text":"hi"}}}')
    # later, on conn: {"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"hi"}],"isError":false}}

Messages to the components (their positional fast path; the dict forms are the
same ops, see workers/session.py and workers/pool.py):

    session:  ("create", {...})                        -> "<session id>"
              ("delete", "<session id>")               -> bool
    pool:     ("run_many", "supervisor_tree.workers.net.tools:run_tool",
               [["supervisor_tree.workers.net.tools:echo", ["hi"]], ...], pool_wait, chunk)
                                                       -> [[True, "hi"], ...]

Tool calls are coalesced by `batch.Batcher` (one run_many per tool carries the
calls that queued while earlier batches were at the pool); `run_tool` keeps one
failing call from failing its batch.
A tool that raised is a tool error (MCP: a result with ``isError: true``); a
pool that exited, timed out, had no free member or is not running is a JSON-RPC
server error (-32001, -32002, -32003), never a hang.
"""

from __future__ import annotations

import collections
import logging
from typing import TYPE_CHECKING

from supervisor_tree.client import RemoteError
from supervisor_tree.workers.net import rpc
from supervisor_tree.workers.net.batch import Batcher, Item
from supervisor_tree.workers.net.bridge import Upstream, UpstreamError
from supervisor_tree.workers.net.tools import TOOLS, Tool

if TYPE_CHECKING:
    from supervisor_tree.workers.net.server import Connection

log = logging.getLogger(__name__)

PROTOCOL_VERSIONS = ("2025-06-18", "2025-03-26", "2024-11-05")  # newest first
SERVER_INFO = {"name": "supervisor_tree", "version": "0.1.0"}
CAPABILITIES = {"tools": {"listChanged": False}}

_POOL_CODES = {"MemberExited": rpc.UPSTREAM_UNAVAILABLE, "PoolTimeout": rpc.OVERLOADED}
_UPSTREAM_CODES = {"exited": rpc.UPSTREAM_UNAVAILABLE, "unavailable": rpc.UPSTREAM_UNAVAILABLE,
                   "timeout": rpc.UPSTREAM_TIMEOUT, "overloaded": rpc.OVERLOADED}  # fmt: skip


def session_create(data: dict[str, object]) -> object:
    return ("create", data)  # the session component's positional fast path; answers the new id


def session_delete(session: str) -> object:
    return ("delete", session)


def pool_error(rid: object, err: object, tool: str) -> bytes:
    """The error line for a tool call the pool did not run."""
    if isinstance(err, RemoteError):
        code = _POOL_CODES.get(err.type, rpc.INTERNAL_ERROR)
        return rpc.error_line(rid, code, f"tool {tool!r} did not run: {err}", {"worker": "pool", "reason": err.type})
    return upstream_error(rid, err, f"tool {tool!r} did not run")


def tool_result(value: object) -> dict[str, object]:
    """MCP's CallToolResult for a task's return value (text content; objects also as structuredContent)."""
    if isinstance(value, str):
        return {"content": [{"type": "text", "text": value}], "isError": False}
    text = rpc._dumps(value)
    if isinstance(value, dict):
        return {"content": [{"type": "text", "text": text}], "structuredContent": value, "isError": False}
    return {"content": [{"type": "text", "text": text}], "isError": False}


def upstream_error(rid: object, err: object, what: str) -> bytes:
    """The error line for a call to the tree that failed (not a tool error)."""
    if isinstance(err, UpstreamError):
        return rpc.error_line(rid, _UPSTREAM_CODES.get(err.kind, rpc.INTERNAL_ERROR), f"{what}: {err.detail}",
                              {"worker": err.worker_id, "reason": err.kind})
    return rpc.error_line(rid, rpc.INTERNAL_ERROR, f"{what}: {err}")


class Methods:
    """Dispatch of request lines to methods (loop thread only)."""

    def __init__(self, upstream: Upstream, session_id: str = "session", pool_id: str = "pool",
                 pool_wait: float = 2.5, batches_in_flight: int = 4) -> None:
        self.upstream = upstream
        self.session_id = session_id
        self.pool_id = pool_id
        self.counts = collections.Counter[str]()
        self.batcher = Batcher(upstream, pool_id, self._finish_batch, batches_in_flight, pool_wait)
        self._table = {"ping": self._ping, "initialize": self._initialize, "tools/list": self._tools_list,
                       "tools/call": self._tools_call}  # fmt: skip
        self._tools_listing = {"tools": [t.listing() for t in TOOLS.values()]}

    def dispatch(self, conn: Connection, line: bytes) -> None:
        self.counts["requests"] += 1
        try:
            req = rpc.parse(line)
        except rpc.RpcError as exc:
            self.counts[f"error{exc.code}"] += 1
            conn.reply(exc.line())
            return
        if req.notification:  # no reply, not even an error (notifications/initialized, ...)
            self.counts["notifications"] += 1
            return
        method = self._table.get(req.method)
        if method is None:
            self.counts[f"error{rpc.METHOD_NOT_FOUND}"] += 1
            conn.reply(rpc.error_line(req.id, rpc.METHOD_NOT_FOUND, f"Method not found: {req.method!r}; this "
                                      f"server has {', '.join(self._table)}"))
            return
        try:
            method(conn, req)
        except rpc.RpcError as exc:
            self.counts[f"error{exc.code}"] += 1
            conn.reply(rpc.error_line(req.id, exc.code, exc.message, exc.data))

    # -- methods --

    def _ping(self, conn: Connection, req: rpc.Request) -> None:
        conn.reply(rpc.result_line(req.id, {}))

    def _tools_list(self, conn: Connection, req: rpc.Request) -> None:
        conn.reply(rpc.result_line(req.id, self._tools_listing))

    def _initialize(self, conn: Connection, req: rpc.Request) -> None:
        params = _params(req)
        wanted = params.get("protocolVersion", PROTOCOL_VERSIONS[0])
        version = wanted if wanted in PROTOCOL_VERSIONS else PROTOCOL_VERSIONS[0]
        peer = conn.transport.get_extra_info("peername") if conn.transport else None
        data = {"client": params.get("clientInfo"), "protocolVersion": version,
                "peer": f"{peer[0]}:{peer[1]}" if peer else None}  # fmt: skip
        rid = req.id
        conn.begin()

        def done(ok: bool, value: object) -> None:
            if not ok:
                conn.end(upstream_error(rid, value, "cannot open a session"))
                return
            session = str(value)
            if conn.closed:  # the client left while its session was being made
                self.close_session(session)
            elif conn.session is not None:
                self.close_session(conn.session)  # a second initialize replaces the first session
            if not conn.closed:
                conn.session = session
            conn.end(rpc.result_line(rid, {"protocolVersion": version, "capabilities": CAPABILITIES,
                                           "serverInfo": SERVER_INFO, "sessionId": session}))

        self.upstream.call(self.session_id, session_create(data), done)

    def _tools_call(self, conn: Connection, req: rpc.Request) -> None:
        params = _params(req)
        name = params.get("name")
        tool = TOOLS.get(name) if isinstance(name, str) else None
        if tool is None:
            raise rpc.RpcError(rpc.INVALID_PARAMS, f"Unknown tool: {name!r}; tools: {', '.join(TOOLS)}", req.id)
        arguments = params.get("arguments", {})
        problem = tool.check(arguments)
        if problem is not None or not isinstance(arguments, dict):  # checked: a dict when no problem
            raise rpc.RpcError(rpc.INVALID_PARAMS, f"Invalid params for tool {tool.name!r}: {problem}", req.id)
        conn.begin()
        self.batcher.add(tool, conn, req.id, tool.positional(arguments))

    def _finish_batch(self, tool: Tool, batch: list[Item], ok: bool, value: object) -> None:
        """The pool's answer to a batch of tool calls, as one reply line per call."""
        counts, text_line = self.counts, rpc.text_result_line
        if ok and isinstance(value, list) and len(value) == len(batch):
            for (conn, rid, _, _), (good, out) in zip(batch, value):
                if not good:  # the tool raised: a tool error, reported in the result (MCP)
                    counts["tool_errors"] += 1
                    conn.end(text_line(rid, out, True))
                elif type(out) is str:
                    conn.end(text_line(rid, out))
                else:
                    conn.end(rpc.result_line(rid, tool_result(out)))
            return
        counts["upstream_errors"] += len(batch)
        if ok:
            value = f"the pool answered {type(value).__name__} {value!r:.80} for {len(batch)} calls"
        for conn, rid, _, _ in batch:
            conn.end(pool_error(rid, value, tool.name))

    # -- sessions --

    def close_session(self, session: str) -> None:
        self.upstream.call(self.session_id, session_delete(session), _ignore)


def _params(req: rpc.Request) -> dict[str, object]:
    if req.params is None:
        return {}
    if not isinstance(req.params, dict):
        raise rpc.RpcError(rpc.INVALID_PARAMS, f"Invalid params: {req.method} takes an object; got an array", req.id)
    return req.params


def _ignore(ok: bool, value: object) -> None:
    if not ok:
        log.debug("network: closing a session failed: %s", value)
