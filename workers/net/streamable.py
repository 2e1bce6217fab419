"""MCP's Streamable HTTP transport (protocol 2025-06-18 and 2025-11-25) on the network worker's endpoint.

Owns the transport's rules, on one path (`http_path`, default /mcp); the methods
are mcp.Methods, the same as on TCP, and the sessions net/sessions.py:

    POST    one JSON-RPC message (application/json).  A request is answered with
            application/json, except tools/call, answered with a text/event-stream
            of one event when the client accepts it: a call cancelled by
            notifications/cancelled then ends as an empty stream (a client that
            accepts only JSON gets 202).  A notification or a response: 202.
    GET     a text/event-stream for messages from the server, open until the
            session ends.  This server sends none on it (no sampling, no list
            changes): keep-alive comments only.
    DELETE  ends the session (200); later requests naming it get 404.

Checked in this order, each failure answered with its status and a JSON-RPC
error without an id: Origin (403, unless absent, a loopback origin or in
allowed_origins) and, on a loopback address, Host (421: DNS rebinding); the
path (404); the method (405); Content-Type (415) and Accept (406); the body
(400: not JSON-RPC, or a batch); MCP-Protocol-Version (400: not a version this
server speaks, or not the session's; absent: the session's); Mcp-Session-Id
(400 when missing on anything but initialize, 404 when it names no session).
An initialize answers the new session's id in the Mcp-Session-Id header.

    streamable = Streamable(spec, methods, sessions)
    conn = HttpConnection(server, streamable.handle)
"""

from __future__ import annotations

import collections
import ipaddress
from typing import TYPE_CHECKING

from supervisor_tree.workers.net import rpc
from supervisor_tree.workers.net.config import NetworkSpec
from supervisor_tree.workers.net.http import JSON, SSE, Exchange, Headers
from supervisor_tree.workers.net.mcp import PROTOCOL_VERSIONS, Methods
from supervisor_tree.workers.net.sessions import HttpSession, HttpSessions

if TYPE_CHECKING:
    from supervisor_tree.workers.net.batch import Call

SESSION_HEADER = b"mcp-session-id"
VERSION_HEADER = b"mcp-protocol-version"
ALLOW = ((b"allow", b"GET, POST, DELETE"),)
EVENT = b"event: message\ndata: "  # + one JSON line (it ends in "\n") + "\n": one SSE event
_accepts_cache: dict[bytes | None, tuple[bool, bool]] = {}  # clients send the same few headers again and again
_loopback_cache: dict[bytes, bool] = {}


def accepts(accept: bytes | None) -> tuple[bool, bool]:
    """(JSON acceptable, SSE acceptable) for an Accept header (none: anything is)."""
    known = _accepts_cache.get(accept)
    if known is not None:
        return known
    json_ok = sse_ok = accept is None
    for item in (accept or b"").lower().split(b","):
        kind, _, params = item.strip().partition(b";")
        if b"q=0" in params.replace(b" ", b"") and not any(c in params for c in b"123456789"):
            continue  # q=0: not acceptable
        json_ok |= kind in (b"application/json", b"application/*", b"*/*")
        sse_ok |= kind in (b"text/event-stream", b"text/*", b"*/*")
    if len(_accepts_cache) > 64:
        _accepts_cache.clear()
    _accepts_cache[accept] = (json_ok, sse_ok)
    return json_ok, sse_ok


def is_loopback_host(host: bytes) -> bool:
    """Is `host` (a Host header or an origin's host, with or without port) a name of this machine's loopback?"""
    known = _loopback_cache.get(host)
    if known is None:
        known = _is_loopback(host)
        if len(_loopback_cache) > 256:
            _loopback_cache.clear()
        _loopback_cache[host] = known
    return known


def _is_loopback(host: bytes) -> bool:
    name = host.decode("latin-1").lower()
    if name.startswith("["):
        name = name[1:].partition("]")[0]
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class HttpPeer:
    """The mcp.Peer of one POSTed request: its answer goes back on its exchange."""

    __slots__ = ("ex", "session", "stream", "sessions", "call", "opened_id")

    def __init__(self, ex: Exchange, session: HttpSession | None, stream: bool, sessions: HttpSessions) -> None:
        self.ex, self.session, self.stream, self.sessions = ex, session, stream, sessions
        self.call: Call | None = None
        self.opened_id: bytes | None = None

    @property
    def closed(self) -> bool:
        return self.ex.closed

    @property
    def version(self) -> str | None:
        return self.session.version if self.session is not None else None

    def reply(self, line: bytes) -> None:
        self.ex.respond(200, line, JSON, self._headers())

    def begin(self, call: Call | None) -> None:
        if call is not None and self.session is not None:
            self.call = call
            self.session.calls[call.rid] = self

    def end(self, line: bytes, call: Call | None) -> None:
        session = self.session
        if call is not None and session is not None and session.calls.get(call.rid) is self:
            del session.calls[call.rid]
        if self.stream:
            self.ex.respond(200, EVENT + line + b"\n", SSE)
        else:
            self.ex.respond(200, line, JSON, self._headers())

    def cancel(self, rid: object) -> bool:
        """The session's call `rid` (on whichever exchange it came) is dropped; its exchange ends empty."""
        other = self.session.calls.pop(rid, None) if self.session is not None else None
        if other is None or other.call is None or other.call.cancelled:
            return False
        other.call.cancelled = True
        if other.stream:
            other.ex.respond(200, b"", SSE)  # a stream that ends without an answer
        else:
            other.ex.respond(202)  # accepted; no answer will follow
        return True

    def opened(self, session: str, version: str) -> bool:
        if self.ex.closed:
            return False
        self.session = self.sessions.open(session, version)
        self.opened_id = session.encode()
        return True

    def describe(self) -> dict[str, object]:
        return {"transport": "http", "peer": self.ex.peer_name()}

    def _headers(self) -> Headers:
        return ((b"mcp-session-id", self.opened_id),) if self.opened_id is not None else ()


class Streamable:
    """The endpoint's handler (loop thread only)."""

    def __init__(self, spec: NetworkSpec, methods: Methods, sessions: HttpSessions) -> None:
        self.path = spec.http_path.encode()
        self.methods = methods
        self.sessions = sessions
        self.origins = frozenset(o.rstrip("/").encode() for o in spec.allowed_origins)
        self.loopback = is_loopback_host(spec.host.encode())
        self.counts = collections.Counter[str]()

    def handle(self, ex: Exchange) -> None:
        h = ex.headers
        origin = h.get(b"origin")
        if origin is not None and not self._origin_allowed(origin):
            return self._refuse(ex, 403, f"Forbidden: Origin {origin.decode('latin-1')!r} is not allowed "
                                         "(loopback origins are; others go in the network's allowed_origins)")
        host = h.get(b"host")
        if self.loopback and host is not None and not _loopback_cache.get(host) and not is_loopback_host(host):
            return self._refuse(ex, 421, f"Misdirected Request: Host {host.decode('latin-1')!r} is not this "
                                         "loopback server (a DNS rebinding?)")
        if ex.path != self.path:
            return self._refuse(ex, 404, f"Not Found: the MCP endpoint is {self.path.decode()}")
        if ex.method == b"POST":
            return self._post(ex)
        if ex.method == b"GET":
            return self._get(ex)
        if ex.method == b"DELETE":
            return self._delete(ex)
        self._refuse(ex, 405, f"Method Not Allowed: {ex.method.decode('latin-1')}; the endpoint takes GET, POST "
                              "and DELETE", headers=ALLOW)

    # -- the methods --

    def _post(self, ex: Exchange) -> None:
        h = ex.headers
        if not h.get(b"content-type", b"").lower().startswith(JSON):
            return self._refuse(ex, 415, "Unsupported Media Type: a POST carries one JSON-RPC message as "
                                         "application/json")
        json_ok, sse_ok = accepts(h.get(b"accept"))
        if not (json_ok or sse_ok):
            return self._refuse(ex, 406, "Not Acceptable: answers are application/json or text/event-stream")
        try:
            req = rpc.parse(ex.body)
        except rpc.RpcError as exc:
            self.counts[f"error{exc.code}"] += 1
            return ex.respond(400, exc.line())
        if req.method == "initialize" and not req.notification:  # the version is negotiated in the body
            return self.methods.handle(HttpPeer(ex, None, False, self.sessions), req)
        session = self._session(ex, req.id)
        if session is not None:
            self._post_in(ex, req, session, sse_ok)

    def _post_in(self, ex: Exchange, req: rpc.Request, session: HttpSession | None, sse_ok: bool) -> None:
        if session is None or not self._version_fits(ex, session, req.id):
            return
        self.methods.handle(HttpPeer(ex, session, sse_ok and req.method == "tools/call", self.sessions), req)
        if req.notification:
            ex.respond(202)

    def _get(self, ex: Exchange) -> None:
        if not accepts(ex.headers.get(b"accept"))[1]:
            return self._refuse(ex, 406, "Not Acceptable: the GET stream is text/event-stream")
        session = self._session(ex, None)
        if session is not None:
            self._get_in(ex, session)

    def _get_in(self, ex: Exchange, session: HttpSession | None) -> None:
        if session is None or not self._version_fits(ex, session, None):
            return
        if ex.closed:
            return
        ex.open_stream()
        session.streams.add(ex)
        ex.on_close = session.streams.discard

    def _delete(self, ex: Exchange) -> None:
        session = self._session(ex, None)
        if session is not None:
            self._delete_in(ex, session)

    def _delete_in(self, ex: Exchange, session: HttpSession | None) -> None:
        if session is None or not self._version_fits(ex, session, None):
            return

        def deleted(ok: bool, value: object) -> None:
            if ok:
                ex.respond(200)
            else:
                ex.respond(503, rpc.error_line(None, rpc.UPSTREAM_UNAVAILABLE, f"cannot end the session: {value}"))

        self.sessions.end(session.id, deleted)

    # -- checks --

    def _session(self, ex: Exchange, rid: object) -> HttpSession | None:
        """The request's session now (the fast path), or None: refused here, or asked of the session
        component, after which the method's `_..._in` runs with what it said."""
        raw = ex.headers.get(SESSION_HEADER)
        if raw is None:
            self._refuse(ex, 400, "Bad Request: Mcp-Session-Id header required (initialize first)", rid)
            return None
        version = ex.headers.get(VERSION_HEADER)
        if version is not None and version.decode("latin-1") not in PROTOCOL_VERSIONS:
            self._refuse(ex, 400, f"Bad Request: unsupported MCP-Protocol-Version {version.decode('latin-1')!r}; "
                                  f"this server speaks {', '.join(PROTOCOL_VERSIONS)}", rid,
                         data={"supported": list(PROTOCOL_VERSIONS), "requested": version.decode("latin-1")})
            return None
        sid = raw.decode("latin-1")
        session = self.sessions.get(sid)
        if session is None:
            self.sessions.find(sid, lambda ok, found: self._found(ex, rid, ok, found))
        return session

    def _found(self, ex: Exchange, rid: object, ok: bool, found: object) -> None:
        """The session component's answer for a session this worker did not know."""
        if not ok:
            return ex.respond(503, rpc.error_line(rid, rpc.UPSTREAM_UNAVAILABLE, f"cannot look the session up: {found}"))
        session = found if isinstance(found, HttpSession) else None
        if session is None:
            return self._refuse(ex, 404, "Not Found: no such session (ended or expired); initialize a new one", rid,
                                code=rpc.SESSION_NOT_FOUND)
        if ex.method == b"POST":
            req = rpc.parse(ex.body)  # parsed once already: it parses
            self._post_in(ex, req, session, accepts(ex.headers.get(b"accept"))[1])
        elif ex.method == b"GET":
            self._get_in(ex, session)
        else:
            self._delete_in(ex, session)

    def _version_fits(self, ex: Exchange, session: HttpSession, rid: object) -> bool:
        version = ex.headers.get(VERSION_HEADER)
        if version is None or version.decode("latin-1") == session.version:
            return True
        self._refuse(ex, 400, f"Bad Request: MCP-Protocol-Version {version.decode('latin-1')!r} is not the "
                              f"version this session negotiated ({session.version})", rid)
        return False

    def _origin_allowed(self, origin: bytes) -> bool:
        origin = origin.rstrip(b"/")
        if origin in self.origins:
            return True
        scheme, sep, host = origin.partition(b"://")
        return bool(sep) and scheme.lower() in (b"http", b"https") and is_loopback_host(host)

    def _refuse(self, ex: Exchange, status: int, message: str, rid: object = None, headers: Headers = (),
                code: int = rpc.INVALID_REQUEST, data: object = None) -> None:  # fmt: skip
        self.counts[f"http_refused_{status}"] += 1
        ex.respond(status, rpc.error_line(rid, code, message, data), JSON, headers)
