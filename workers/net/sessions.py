"""The MCP sessions of the HTTP transport, as one network worker knows them.

Owns the local table of the sessions its HTTP clients use (Mcp-Session-Id ->
the negotiated version, the tool calls in flight that `notifications/cancelled`
may name, the open GET streams), kept in step with the session component, which
holds the truth.  A session opened by `initialize` on another shard of the port
(net/listener.py), or before this worker restarted, is asked of the component
and adopted; one the component does not know (never opened, expired, deleted),
or that a TCP connection opened, is not found (the transport answers 404).  An entry idle for IDLE_S leaves the
table (the component keeps the session); a session in use, or with a stream
open, is touched in the component at most once per TOUCH_S, so it expires there
only when nobody uses it.  Open streams get a comment every KEEPALIVE_S, so
that idle proxies and clients see the connection alive.

    sessions = HttpSessions(upstream, "session")
    s = sessions.open(sid, "2025-11-25")                  # initialize answered here
    sessions.find(sid, lambda ok, s: ...)                 # (True, HttpSession | None) or (False, error)
    sessions.end(sid, lambda ok, value: ...)              # DELETE: the component forgets it; streams end

Loop thread only.  The session component's ops used: ("get", id) -> data | None,
("touch", id) -> bool, ("delete", id) -> bool (workers/session.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from supervisor_tree.workers.net.bridge import Upstream

if TYPE_CHECKING:
    from supervisor_tree.workers.net.http import Exchange

IDLE_S = 60.0  # s an unused entry stays in the local table
TOUCH_S = 60.0  # s between touches of a session in use
KEEPALIVE_S = 15.0  # s between keep-alive comments on an open stream
SWEEP_S = 5.0
KEEPALIVE = b": keep-alive\n\n"

Found = Callable[[bool, object], None]  # (True, HttpSession | None) or (False, the error)


class HttpSession:
    __slots__ = ("id", "version", "calls", "streams", "used", "touched", "kept_alive")

    def __init__(self, sid: str, version: str) -> None:
        now = time.monotonic()
        self.id, self.version = sid, version
        self.calls: dict[object, Any] = {}  # request id -> the streamable.HttpPeer waiting for its tool call
        self.streams: set[Exchange] = set()  # open GET streams
        self.used = self.touched = self.kept_alive = now


class HttpSessions:
    def __init__(self, upstream: Upstream, worker_id: str, versions: tuple[str, ...]) -> None:
        self.upstream = upstream
        self.worker_id = worker_id
        self.versions = versions
        self.local: dict[str, HttpSession] = {}
        self._asking: dict[str, list[Found]] = {}
        self._sweeper = upstream.loop.call_later(SWEEP_S, self._sweep)
        self.counts = {"http_sessions_opened": 0, "http_sessions_adopted": 0, "http_sessions_ended": 0}

    def open(self, sid: str, version: str) -> HttpSession:
        session = self.local[sid] = HttpSession(sid, version)
        self.counts["http_sessions_opened"] += 1
        return session

    def get(self, sid: str) -> HttpSession | None:
        """The session when this worker knows it already (the fast path); else None: ask with `find`."""
        session = self.local.get(sid)
        if session is not None:
            session.used = now = time.monotonic()
            if now - session.touched > TOUCH_S:
                self._touch(session, now)
        return session

    def find(self, sid: str, found: Found) -> None:
        session = self.get(sid)
        if session is not None:
            found(True, session)
            return
        waiting = self._asking.get(sid)
        if waiting is not None:
            waiting.append(found)
            return
        self._asking[sid] = [found]
        self.upstream.call(self.worker_id, ("get", sid), lambda ok, value: self._answered(sid, ok, value))

    def _answered(self, sid: str, ok: bool, data: object) -> None:
        waiting = self._asking.pop(sid, [])
        session: object = None
        if ok and sid in self.local:  # opened here meanwhile
            session = self.local[sid]
        elif ok and isinstance(data, dict) and data.get("transport") == "http" and \
                data.get("protocolVersion") in self.versions:  # a TCP connection's session is that connection's
            session = self.local[sid] = HttpSession(sid, data["protocolVersion"])
            self.counts["http_sessions_adopted"] += 1
        for found in waiting:
            found(ok, session if ok else data)

    def end(self, sid: str, done: Callable[[bool, object], None]) -> None:
        """DELETE: the session ends here at once, and in the component (`done` runs with its answer)."""
        self._forget(sid)
        self.counts["http_sessions_ended"] += 1
        self.upstream.call(self.worker_id, ("delete", sid), done)

    def _forget(self, sid: str) -> None:
        session = self.local.pop(sid, None)
        if session is not None:
            for ex in list(session.streams):
                ex.end()
            session.streams.clear()

    def _touch(self, session: HttpSession, now: float) -> None:
        session.touched = now
        sid = session.id

        def touched(ok: bool, alive: object) -> None:
            if ok and alive is False:  # expired in the component: it is over here too
                self._forget(sid)

        self.upstream.call(self.worker_id, ("touch", sid), touched)

    def _sweep(self) -> None:
        now = time.monotonic()
        for sid, session in list(self.local.items()):
            if session.streams:
                if now - session.kept_alive >= KEEPALIVE_S:
                    session.kept_alive = now
                    for ex in list(session.streams):
                        ex.send(KEEPALIVE)
                if now - session.touched > TOUCH_S:
                    self._touch(session, now)
            elif not session.calls and now - session.used > IDLE_S:
                del self.local[sid]
        self._sweeper = self.upstream.loop.call_later(SWEEP_S, self._sweep)

    def close(self) -> None:
        self._sweeper.cancel()
        for sid in list(self.local):
            self._forget(sid)
