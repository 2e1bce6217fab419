"""The methods of the network's MCP server, routed to the tree; the same for TCP and HTTP.

Owns what each JSON-RPC method means: `initialize` negotiates the protocol
version and opens a session in the session component, `ping` answers at once,
`tools/list` lists the worker's tools (inline.Toolbox), `tools/call` runs the tool
as a task on the pool component, or here on the loop when the config marks it
inline (no trip to the pool; a tool that raises, inline or pooled, answers a tool
error), `notifications/cancelled` drops a call still waiting.  It turns
a reply (or a failure) from the tree into a JSON-RPC result or error line.  No
sockets: a request comes with its `Peer` (a TCP connection, server.py; or one
HTTP exchange of an MCP session, streamable.py) and its answer goes back there;
calls go through a `bridge.Upstream`.

    methods = Methods(upstream, session_id="session", pool_id="pool")
    methods.dispatch(conn, b'{"jsonrpc":"2.0","id":1,"method":"tools/call",'
                           b'"params":{"name":"echo","arguments":{"text":"hi"}}}')
    # later, on conn: {"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"hi"}],"isError":false}}

Protocol versions: 2025-11-25 and 2025-06-18.  `initialize` answers the version
the client asked for when it is one of those, else the newest (the client may
then disconnect: MCP's lifecycle).  Arguments that do not fit a tool's schema
are a -32602 error, except under 2025-11-25, where they are a tool error (a
result with ``isError: true``) that the model can read and correct; a peer that
negotiated nothing gets -32602.  The session id is in the initialize result's
``_meta`` (``"supervisor-tree/sessionId"``) and, over HTTP, the Mcp-Session-Id
header.

Messages to the components (their positional fast path; the dict forms are the
same ops, see workers/session.py and workers/pool.py):

    session:  ("create", {...})                        -> "<session id>"
              ("delete", "<session id>")               -> bool
    pool:     ("run_many", "supervisor_tree.workers.net.tools:run_tool",
               [["supervisor_tree.workers.net.tools:echo", ["hi"]], ...], pool_wait, chunk)
                                                       -> [[True, "hi"], ...]

Tool calls are coalesced by `batch.Batcher`; `run_tool` keeps one failing call
from failing its batch.  A tool that raised is a tool error; a pool that
exited, timed out, had no free member or is not running is a JSON-RPC server
error (-32010, -32011, -32012), never a hang.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from time import perf_counter
from typing import Protocol

from supervisor_tree.client import RemoteError
from supervisor_tree.workers.net import rpc
from supervisor_tree.workers.net.batch import Batcher, Call
from supervisor_tree.workers.net.bridge import Upstream, UpstreamError
from supervisor_tree.workers.net.inline import Toolbox
from supervisor_tree.workers.net.tools import Tool

log = logging.getLogger(__name__)

PROTOCOL_VERSIONS = ("2025-11-25", "2025-06-18")  # newest first
TOOL_ERROR_VERSIONS = frozenset({"2025-11-25"})  # where bad tool arguments are a tool error, not -32602
SESSION_META = "supervisor-tree/sessionId"  # the initialize result's _meta key for the session id
SERVER_INFO = {"name": "supervisor_tree", "title": "supervisor_tree", "version": "0.1.0"}
CAPABILITIES = {"tools": {"listChanged": False}}
INSTRUCTIONS = "Tools run as tasks on a supervised pool of worker processes; echo is cheap, fib and sha256_loop burn CPU."

_POOL_CODES = {"MemberExited": rpc.UPSTREAM_UNAVAILABLE, "PoolTimeout": rpc.OVERLOADED}
_UPSTREAM_CODES = {"exited": rpc.UPSTREAM_UNAVAILABLE, "unavailable": rpc.UPSTREAM_UNAVAILABLE,
                   "timeout": rpc.UPSTREAM_TIMEOUT, "overloaded": rpc.OVERLOADED}  # fmt: skip


class Peer(Protocol):
    """Where a request came from and where its answer goes (server.Connection, streamable.HttpPeer)."""

    @property
    def closed(self) -> bool: ...  # its answer can no longer be delivered
    @property
    def version(self) -> str | None: ...  # the protocol version negotiated by initialize (None: none yet)
    def reply(self, line: bytes) -> None: ...  # the answer, now
    def begin(self, call: Call | None) -> None: ...  # the answer comes later, by `end`; a tool call may be cancelled
    def end(self, line: bytes, call: Call | None) -> None: ...
    def cancel(self, rid: object) -> bool: ...  # notifications/cancelled for request `rid`: False if not pending
    def opened(self, session: str, version: str) -> bool: ...  # initialize opened `session`: False if the peer left
    def describe(self) -> dict[str, object]: ...  # what the session component keeps of the peer


def session_create(data: dict[str, object]) -> object:
    return ("create", data)  # the session component's positional fast path; answers the new id


def session_delete(session: str) -> object:
    return ("delete", session)


def initialize_result(version: str, session: str) -> dict[str, object]:
    return {"protocolVersion": version, "capabilities": CAPABILITIES, "serverInfo": SERVER_INFO,
            "instructions": INSTRUCTIONS, "_meta": {SESSION_META: session}}  # fmt: skip


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


def value_line(rid: object, out: object) -> bytes:
    """The reply line for a tool's return value; one that JSON cannot carry (a set, bytes) is the tool's error."""
    if type(out) is str:
        return rpc.text_result_line(rid, out)
    try:
        return rpc.result_line(rid, tool_result(out))
    except (TypeError, ValueError) as exc:
        return rpc.text_result_line(rid, f"TypeError: the tool returned what JSON cannot carry: {exc}", True)


def upstream_error(rid: object, err: object, what: str) -> bytes:
    """The error line for a call to the tree that failed (not a tool error)."""
    if isinstance(err, UpstreamError):
        return rpc.error_line(rid, _UPSTREAM_CODES.get(err.kind, rpc.INTERNAL_ERROR), f"{what}: {err.detail}",
                              {"worker": err.worker_id, "reason": err.kind})
    return rpc.error_line(rid, rpc.INTERNAL_ERROR, f"{what}: {err}")


class Methods:
    """Dispatch of requests to methods (loop thread only)."""

    def __init__(self, upstream: Upstream, session_id: str = "session", pool_id: str = "pool",
                 pool_wait: float = 2.5, batches_in_flight: int = 4, toolbox: Toolbox | None = None) -> None:
        self.upstream = upstream
        self.toolbox = toolbox = toolbox or Toolbox.from_settings()
        self.tools, self.inline = toolbox.tools, toolbox.inline
        self.session_id = session_id
        self.pool_id = pool_id
        self.counts = collections.Counter[str]()
        self.batcher = Batcher(upstream, pool_id, self._finish_batch, batches_in_flight, pool_wait)
        self._table = {"ping": self._ping, "initialize": self._initialize, "tools/list": self._tools_list,
                       "tools/call": self._tools_call}  # fmt: skip
        self._tools_listing = {"tools": [t.listing() for t in self.tools.values()]}

    def dispatch(self, peer: Peer, line: bytes) -> None:
        """One line of the TCP transport.  A well-formed tools/call goes straight to `_call_tool` (the hot
        path: no `Request` made); anything else through `rpc.request`'s checks and `handle`."""
        try:
            msg = rpc.loads(line)
            if type(msg) is dict and msg.get("method") == "tools/call":
                rid, params = msg.get("id"), msg.get("params")
                if (type(rid) is int or type(rid) is str) and type(params) is dict and msg.get("jsonrpc") == "2.0":
                    self.counts["requests"] += 1
                    try:
                        self._call_tool(peer, rid, params)
                    except rpc.RpcError as exc:
                        self.counts[f"error{exc.code}"] += 1
                        peer.reply(exc.line())
                    return
            req = rpc.request(msg)
        except rpc.RpcError as exc:
            self.counts["requests"] += 1
            self.counts[f"error{exc.code}"] += 1
            peer.reply(exc.line())
            return
        self.handle(peer, req)

    def handle(self, peer: Peer, req: rpc.Request) -> None:
        """One parsed message, from either transport."""
        self.counts["requests"] += 1
        if req.notification:  # no reply, not even an error (notifications/initialized, responses, ...)
            if req.method == "notifications/cancelled":
                self._cancelled(peer, req)
            else:
                self.counts["notifications"] += 1
            return
        method = self._table.get(req.method)
        if method is None:
            self.counts[f"error{rpc.METHOD_NOT_FOUND}"] += 1
            peer.reply(rpc.error_line(req.id, rpc.METHOD_NOT_FOUND, f"Method not found: {req.method!r}; this "
                                      f"server has {', '.join(self._table)}"))
            return
        try:
            method(peer, req)
        except rpc.RpcError as exc:
            self.counts[f"error{exc.code}"] += 1
            peer.reply(rpc.error_line(req.id, exc.code, exc.message, exc.data))

    # -- methods --

    def _ping(self, peer: Peer, req: rpc.Request) -> None:
        peer.reply(rpc.result_line(req.id, {}))

    def _tools_list(self, peer: Peer, req: rpc.Request) -> None:
        peer.reply(rpc.result_line(req.id, self._tools_listing))

    def _initialize(self, peer: Peer, req: rpc.Request) -> None:
        params = _params(req)
        wanted = params.get("protocolVersion")
        version = wanted if isinstance(wanted, str) and wanted in PROTOCOL_VERSIONS else PROTOCOL_VERSIONS[0]
        data = {"client": params.get("clientInfo"), "protocolVersion": version, **peer.describe()}
        rid = req.id
        peer.begin(None)

        def done(ok: bool, value: object) -> None:
            if not ok:
                peer.end(upstream_error(rid, value, "cannot open a session"), None)
                return
            session = str(value)
            if not peer.opened(session, version):  # the client left while its session was being made
                self.close_session(session)
            peer.end(rpc.result_line(rid, initialize_result(version, session)), None)

        self.upstream.call(self.session_id, session_create(data), done)

    def _tools_call(self, peer: Peer, req: rpc.Request) -> None:
        self._call_tool(peer, req.id, _params(req))

    def _call_tool(self, peer: Peer, rid: object, params: dict[str, object]) -> None:
        name = params.get("name")
        tool = self.tools.get(name) if type(name) is str else None
        if tool is None:
            raise rpc.RpcError(rpc.INVALID_PARAMS, f"Unknown tool: {name!r}; tools: {', '.join(self.tools)}", rid)
        arguments = params.get("arguments", {})
        args = tool.quick_positional(arguments)
        if args is None:
            problem = tool.check(arguments)
            if problem is not None or not isinstance(arguments, dict):  # checked: a dict when no problem
                message = f"Invalid arguments for tool {tool.name!r}: {problem}"
                if peer.version in TOOL_ERROR_VERSIONS:
                    self.counts["invalid_arguments"] += 1
                    peer.reply(rpc.text_result_line(rid, message, True))
                    return
                raise rpc.RpcError(rpc.INVALID_PARAMS, message, rid)
            args = tool.positional(arguments)
        fn = self.inline.get(tool.name)
        if fn is not None:
            peer.reply(self._run_inline(tool, fn, rid, args))
            return
        call = Call(peer, rid, args)
        peer.begin(call)
        self.batcher.add(tool, call)

    def _run_inline(self, tool: Tool, fn: Callable[..., object], rid: object, args: list[object]) -> bytes:
        """A tool marked inline, run here: its reply line, as the pool's answer would make it (net/inline.py)."""
        t0 = perf_counter()
        try:
            line = value_line(rid, fn(*args))
        except BaseException as exc:  # noqa: BLE001 - even SystemExit: the tool's error is its caller's answer
            self.counts["tool_errors"] += 1
            line = rpc.text_result_line(rid, f"{type(exc).__name__}: {exc}", True)
        took = perf_counter() - t0
        calls = self.toolbox.calls
        calls[tool.name] += 1
        if took > self.toolbox.max_s:
            self.toolbox.took(tool.name, took, calls[tool.name])
        return line

    def _cancelled(self, peer: Peer, req: rpc.Request) -> None:
        """MCP's notifications/cancelled: the reply is dropped, and a call still queued here is not sent."""
        params = req.params if isinstance(req.params, dict) else {}
        if "requestId" in params and peer.cancel(params["requestId"]):
            self.counts["cancelled"] += 1
        else:
            self.counts["cancelled_unknown"] += 1  # answered already, or never asked: MCP says ignore it

    def _finish_batch(self, tool: Tool, batch: list[Call], ok: bool, value: object) -> None:
        """The pool's answer to a batch of tool calls, as one reply line per call."""
        counts, text_line = self.counts, rpc.text_result_line
        if ok and isinstance(value, list) and len(value) == len(batch):
            for call, (good, out) in zip(batch, value):
                if call.cancelled:
                    counts["cancelled_answers_dropped"] += 1
                elif not good:  # the tool raised: a tool error, reported in the result (MCP)
                    counts["tool_errors"] += 1
                    call.peer.end(text_line(call.rid, out, True), call)
                else:
                    call.peer.end(value_line(call.rid, out), call)
            return
        counts["upstream_errors"] += len(batch)
        if ok:
            value = f"the pool answered {type(value).__name__} {value!r:.80} for {len(batch)} calls"
        for call in batch:
            if call.cancelled:
                counts["cancelled_answers_dropped"] += 1
            else:
                call.peer.end(pool_error(call.rid, value, tool.name), call)

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
