"""A session store worker: data under random ids, expiring after a TTL; and its typed client.

Owns the sessions and their expiry.  Expiry costs nothing per request: each
session sits in one time bucket (one per `sweep_interval` seconds) no later than
its expiry, and a `send_after` timer empties the buckets that have passed.  A
touch only moves the session's deadline; the sweep that finds it alive moves it
to the bucket of its new deadline then, so the buckets hold one entry per session
however often sessions are touched.  A read checks the one session's deadline, so
an expired session is never returned even before its bucket is swept.

    # tree: [[tree.children]] id = "sessions", start = "supervisor_tree.workers.session:Session", args = { ttl = 1800 }
    s = SessionClient(client, "sessions")
    sid = s.create({"user": 42})                 # a random id (22 url-safe characters)
    s.update(sid, {"cart": [1, 2]})              # merges keys; False if the session is gone
    s.get(sid)                                   # {"user": 42, "cart": [1, 2]}, None once expired
    s.touch(sid)                                 # a new TTL from now
    s.batch([("get", sid), ("touch", sid)])      # many ops, one round trip

    $ supervise call sessions '{"op": "count"}'
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

from supervisor_tree.client import CallError, Client
from supervisor_tree.workers._component import BadRequest, Component, expect, reraise
from supervisor_tree.workers._pipelined import typed_future, typed_list

__all__ = ["Session", "SessionClient"]

_SWEEP = ("session", "sweep")


class Session(Component):
    """Sessions with a TTL.  Ops (dict or tuple form, see supervisor_tree.workers._component):

    create(data=None, ttl=None) -> id         get(id) -> data | null
    update(id, data, replace=False) -> bool    (merges `data`'s keys, or replaces the whole data)
    touch(id, ttl=None) -> bool               delete(id) -> bool
    count() -> int (live sessions)             stats() -> counters
    batch(ops) -> [result, ...]  ops: [["get", id], ["touch", id], ...]; a refused op
        answers {"error": "..."} in its place, the others still run.

    Init args: ttl (s, default 1800), sliding (false: only touch/update extend a
    session; true: get does too), sweep_interval (s, default 1.0).
    """

    # Reads, and writes that leave the same state when repeated (update merges the same data again).
    idempotent_calls = frozenset({"get", "touch", "update", "count", "stats"})

    def init(self, ttl: float = 1800.0, sliding: bool = False, sweep_interval: float = 1.0) -> None:
        if not ttl > 0 or not sweep_interval > 0:
            raise ValueError(f"ttl and sweep_interval must be > 0 seconds; got ttl={ttl!r}, sweep_interval={sweep_interval!r}")
        self.ttl = float(ttl)
        self.sliding = bool(sliding)
        self.grain = float(sweep_interval)
        # Invariant: a live session's id is in the bucket of its slot (entry[3]), which is no later than the
        # slot of its deadline; other entries of its id (a deleted session's, or before a touch brought its
        # deadline nearer) sit in buckets of other slots, where the sweep skips them.
        self.sessions: dict[str, list[Any]] = {}  # id -> [data, expires_at (monotonic), ttl, slot]
        self.buckets: dict[int, list[str]] = {}  # slot -> ids expiring in it
        self.swept = self._slot(time.monotonic()) - 1  # every slot up to this one is empty
        self.counts = {"created": 0, "expired": 0, "deleted": 0}
        self.send_after(self.grain, _SWEEP)
        self._batch_ops: dict[str, Callable[..., object]] = {
            "create": self.op_create, "get": self.op_get, "update": self.op_update,
            "touch": self.op_touch, "delete": self.op_delete, "count": self.op_count,
        }  # fmt: skip

    # -- ops --

    def op_create(self, data: Any = None, ttl: float | None = None) -> str:
        sid = secrets.token_urlsafe(16)
        life = self.ttl if ttl is None else _positive(ttl)
        entry = [{} if data is None else data, 0.0, life, 0]
        self.sessions[sid] = entry
        self._expire_at(sid, entry, time.monotonic() + life)
        self.counts["created"] += 1
        return sid

    def op_get(self, id: str) -> Any:
        entry = self._live(id)
        if entry is None:
            return None
        if self.sliding:
            self._expire_at(id, entry, time.monotonic() + entry[2])
        return entry[0]

    def op_update(self, id: str, data: Any, replace: bool = False) -> bool:
        entry = self._live(id)
        if entry is None:
            return False
        if replace or not isinstance(entry[0], dict) or not isinstance(data, dict):
            entry[0] = data
        else:
            entry[0].update(data)
        self._expire_at(id, entry, time.monotonic() + entry[2])
        return True

    def op_touch(self, id: str, ttl: float | None = None) -> bool:
        entry = self._live(id)
        if entry is None:
            return False
        if ttl is not None:
            entry[2] = _positive(ttl)
        self._expire_at(id, entry, time.monotonic() + entry[2])
        return True

    def op_delete(self, id: str) -> bool:
        if self.sessions.pop(id, None) is None:
            return False
        self.counts["deleted"] += 1
        return True

    def op_count(self) -> int:
        self._sweep(time.monotonic())  # only the passed buckets: the count is exact to the grain
        return len(self.sessions)

    def op_stats(self) -> dict[str, Any]:
        return {**self.counts, "sessions": len(self.sessions), "buckets": len(self.buckets),
                "entries": sum(map(len, self.buckets.values())), "ttl": self.ttl}

    def op_batch(self, ops: list[Any]) -> list[Any]:
        out = []
        table = self._batch_ops
        for op in ops:
            try:
                out.append(table[op[0]](*op[1:]))
            except (KeyError, IndexError, TypeError) as exc:
                out.append({"error": f"bad op {op!r:.80}: {type(exc).__name__}: {exc}"})
            except BadRequest as exc:
                out.append({"error": str(exc)})
        return out

    # -- expiry --

    def _slot(self, t: float) -> int:
        return math.ceil(t / self.grain)

    def _live(self, sid: str) -> list[Any] | None:
        entry = self.sessions.get(sid)
        if entry is not None and entry[1] <= time.monotonic():
            del self.sessions[sid]  # expired; its bucket will find it gone
            self.counts["expired"] += 1
            return None
        return entry

    def _expire_at(self, sid: str, entry: list[Any], when: float) -> None:
        entry[1] = when
        slot = self._slot(when)
        if entry[3] == 0 or slot < entry[3]:  # new, or due sooner than its bucket: a later deadline waits for the sweep
            self._put(sid, entry, slot)

    def _put(self, sid: str, entry: list[Any], slot: int) -> None:
        entry[3] = slot
        bucket = self.buckets.get(slot)
        if bucket is None:
            self.buckets[slot] = [sid]
        else:
            bucket.append(sid)

    def _sweep(self, now: float) -> None:
        last = self._slot(now) - 1  # slots whose whole interval has passed
        sessions = self.sessions
        for slot in range(self.swept + 1, last + 1):
            for sid in self.buckets.pop(slot, ()):
                entry = sessions.get(sid)
                if entry is None or entry[3] != slot:
                    continue  # deleted or expired already, or moved to a sooner bucket
                if entry[1] <= now:
                    del sessions[sid]
                    self.counts["expired"] += 1
                else:  # touched since it was put here: into the bucket of its deadline now
                    self._put(sid, entry, max(self._slot(entry[1]), last + 1))
        self.swept = max(self.swept, last)

    def on_info(self, msg: object) -> None:
        if msg == _SWEEP:
            self._sweep(time.monotonic())
            self.send_after(self.grain, _SWEEP)
        else:
            super().on_info(msg)


def _positive(ttl: object) -> float:
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0:
        raise BadRequest(f"ttl must be a number of seconds > 0; got {ttl!r}")
    return float(ttl)


class SessionClient:
    """The typed client: tuple messages, refusals as exceptions (BadRequest)."""

    def __init__(self, client: Client, session_id: str = "session") -> None:
        self.client = client
        self.worker_id = session_id

    def create(self, data: Any = None, ttl: float | None = None) -> str:
        return expect(self._call(("create", data, ttl)), str, "session: create")

    def get(self, sid: str) -> Any:
        return self._call(("get", sid))

    def update(self, sid: str, data: Any, replace: bool = False) -> bool:
        return expect(self._call(("update", sid, data, replace)), bool, "session: update")

    def touch(self, sid: str, ttl: float | None = None) -> bool:
        return expect(self._call(("touch", sid, ttl)), bool, "session: touch")

    def delete(self, sid: str) -> bool:
        return expect(self._call(("delete", sid)), bool, "session: delete")

    def count(self) -> int:
        return expect(self._call(("count",)), int, "session: count")

    def stats(self) -> dict[str, Any]:
        return expect(self._call(("stats",)), dict, "session: stats")

    def batch(self, ops: list[tuple[Any, ...]]) -> list[Any]:
        return expect(self._call(("batch", ops)), list, "session: batch")

    def get_async(self, sid: str) -> Future[Any]:
        """`get` without waiting for its answer: a Future of the session's data."""
        return typed_future(self.client.call_async(self.worker_id, ("get", sid)), _ERRORS, None, "session: get")

    def each(self, ops: Sequence[tuple[Any, ...]], window: int = 100) -> list[Any]:
        """Each op (("create", data), ("get", sid), ...) its own call, `window` in flight (pipelined): the
        answers in order, the first refusal raised.  (`batch` is one call; this is one op per request.)"""
        results = self.client.call_many(self.worker_id, list(ops), window=window, return_exceptions=True)
        return typed_list(results, _ERRORS, None, "session")

    def _call(self, msg: tuple[object, ...]) -> object:
        try:
            return self.client.call(self.worker_id, msg)
        except CallError as exc:
            reraise(exc, _ERRORS)


_ERRORS: dict[str, type[Exception]] = {"BadRequest": BadRequest}
