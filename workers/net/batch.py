"""Tool calls to the pool, coalesced: one `run_many` carries many calls of one tool.

Owns the queue of tool calls waiting for the pool and the rule that says when
they go: at once while fewer than `in_flight` batches of that tool are at the
pool, else with the next batch after one of those comes back.  So a lone call
waits for nothing, and under load the batches grow by themselves until the
pool keeps up (DESIGN.md: batch by serialization; coalesce when a queue builds
up).  Turning a batch's answer into reply lines is the caller's `finish`.

    batcher = Batcher(upstream, "pool", finish, in_flight=4, pool_wait=2.5)
    call = Call(peer, rid, ["hi"])
    batcher.add(tool, call)                     # finish(tool, calls, ok, value) runs when the pool answers
    call.cancelled = True                       # notifications/cancelled: not sent if still queued here

The pool request (workers/pool.py's positional form):

    ("run_many", "supervisor_tree.workers.net.tools:run_tool", [[task, args], ...], pool_wait, tool.chunk)
        -> [[True, value] | [False, "Type: message"], ...]   one per call, in order

A cancelled call (`call.cancelled`, set by its peer) that is still queued here
is dropped when its batch goes: its task never starts.  One already at the pool
runs; `finish` drops its answer.

Invariant: `_in_flight[name]` counts the batches of tool `name` sent and not yet
answered (the bridge answers every call, with an error at the latest after its
timeout, so the count always comes back down).  A call that waited here longer
than the bridge's timeout is answered with that timeout instead of being sent.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import Any

from supervisor_tree.workers.net.bridge import Upstream, UpstreamError
from supervisor_tree.workers.net.tools import RUN_TOOL, Tool

MAX_BATCH = 256  # tool calls in one pool request


class Call:
    """One tools/call on its way to the pool: who gets the answer (`peer`: a connection or an HTTP
    exchange, see mcp.Peer), under which request id, the task's positional args, when it queued."""

    __slots__ = ("peer", "rid", "args", "queued_at", "cancelled")

    def __init__(self, peer: Any, rid: object, args: list[object]) -> None:
        self.peer, self.rid, self.args = peer, rid, args
        self.queued_at = time.monotonic()
        self.cancelled = False


Finish = Callable[[Tool, list[Call], bool, object], None]


class Batcher:
    def __init__(self, upstream: Upstream, pool_id: str, finish: Finish, in_flight: int = 4,
                 pool_wait: float = 2.5) -> None:  # fmt: skip
        self.upstream = upstream
        self.pool_id = pool_id
        self.finish = finish
        self.in_flight = max(1, in_flight)
        self.pool_wait = pool_wait
        self._queued: dict[str, list[Call]] = {}
        self._tools: dict[str, Tool] = {}  # by name, as `add` was given them
        self._in_flight: collections.Counter[str] = collections.Counter()
        self._armed = False
        self.counts = collections.Counter[str]()

    @property
    def queued(self) -> int:
        return sum(len(q) for q in list(self._queued.values()))  # list(): stats read it from another thread

    def add(self, tool: Tool, call: Call) -> None:
        queue = self._queued.get(tool.name)
        if queue is None:
            queue = self._queued[tool.name] = []
            self._tools[tool.name] = tool
        queue.append(call)
        if not self._armed and self._in_flight[tool.name] < self.in_flight:
            self._armed = True  # send after this turn of the loop has read everything it can
            self.upstream.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._armed = False
        for name in list(self._queued):
            self._send(name)

    def _send(self, name: str) -> None:
        queue = self._queued.get(name)
        tool = self._tools[name]
        while queue and self._in_flight[name] < self.in_flight:
            batch = queue[:MAX_BATCH]
            del queue[:MAX_BATCH]
            live = [call for call in batch if not call.cancelled]
            if len(live) < len(batch):
                self.counts["cancelled_before_start"] += len(batch) - len(live)
                batch = live
            if not batch:
                continue
            stale_before = time.monotonic() - self.upstream.timeout
            if batch[0].queued_at < stale_before:  # the oldest first: only a batch that starts stale has stale calls
                stale = [call for call in batch if call.queued_at < stale_before]
                batch = batch[len(stale):]
                self.counts["timeouts"] += len(stale)
                self.finish(tool, stale, False, UpstreamError("timeout", self.pool_id, "queued for the pool longer "
                                                              f"than call_timeout = {self.upstream.timeout:g} s"))
                if not batch:
                    continue
            self._in_flight[name] += 1
            self.counts["batches"] += 1
            self.counts["tool_calls"] += len(batch)
            msg = ("run_many", RUN_TOOL, [[tool.task, call.args] for call in batch], self.pool_wait, tool.chunk)
            self.upstream.call(self.pool_id, msg, self._on_answer(tool, batch))
        if queue is not None and not queue:
            del self._queued[name]

    def _on_answer(self, tool: Tool, batch: list[Call]) -> Callable[[bool, object], None]:
        def answered(ok: bool, value: object) -> None:
            self._in_flight[tool.name] -= 1
            self.finish(tool, batch, ok, value)
            if tool.name in self._queued:
                self._send(tool.name)

        return answered
