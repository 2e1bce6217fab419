"""Tool calls to the pool, coalesced: one `run_many` carries many calls of one tool.

Owns the queue of tool calls waiting for the pool and the rule that says when
they go: at once while fewer than `in_flight` batches of that tool are at the
pool, else with the next batch after one of those comes back.  So a lone call
waits for nothing, and under load the batches grow by themselves until the
pool keeps up (DESIGN.md: batch by serialization; coalesce when a queue builds
up).  Turning a batch's answer into reply lines is the caller's `finish`.

    batcher = Batcher(upstream, "pool", finish, in_flight=4, pool_wait=2.5)
    batcher.add(tool, conn, rid, ["hi"])        # finish(tool, batch, ok, value) runs when the pool answers

The pool request (workers/pool.py's positional form):

    ("run_many", "supervisor_tree.workers.net.tools:run_tool", [[task, args], ...], pool_wait, tool.chunk)
        -> [[True, value] | [False, "Type: message"], ...]   one per call, in order

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
from supervisor_tree.workers.net.tools import RUN_TOOL, TOOLS, Tool

MAX_BATCH = 256  # tool calls in one pool request
Item = tuple[Any, object, list[object], float]  # (connection, request id, positional args, queued at)
Finish = Callable[[Tool, list[Item], bool, object], None]


class Batcher:
    def __init__(self, upstream: Upstream, pool_id: str, finish: Finish, in_flight: int = 4,
                 pool_wait: float = 2.5) -> None:  # fmt: skip
        self.upstream = upstream
        self.pool_id = pool_id
        self.finish = finish
        self.in_flight = max(1, in_flight)
        self.pool_wait = pool_wait
        self._queued: dict[str, list[Item]] = {}
        self._in_flight: collections.Counter[str] = collections.Counter()
        self._armed = False
        self.counts = collections.Counter[str]()

    @property
    def queued(self) -> int:
        return sum(len(q) for q in list(self._queued.values()))  # list(): stats read it from another thread

    def add(self, tool: Tool, conn: Any, rid: object, args: list[object]) -> None:
        queue = self._queued.get(tool.name)
        if queue is None:
            queue = self._queued[tool.name] = []
        queue.append((conn, rid, args, time.monotonic()))
        if not self._armed and self._in_flight[tool.name] < self.in_flight:
            self._armed = True  # send after this turn of the loop has read everything it can
            self.upstream.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._armed = False
        for name in list(self._queued):
            self._send(name)

    def _send(self, name: str) -> None:
        queue = self._queued.get(name)
        tool = TOOLS[name]
        while queue and self._in_flight[name] < self.in_flight:
            batch = queue[:MAX_BATCH]
            del queue[:MAX_BATCH]
            stale_before = time.monotonic() - self.upstream.timeout
            if batch[0][3] < stale_before:  # the oldest first: only a batch that starts stale has stale calls
                stale = [item for item in batch if item[3] < stale_before]
                batch = batch[len(stale):]
                self.counts["timeouts"] += len(stale)
                self.finish(tool, stale, False, UpstreamError("timeout", self.pool_id, "queued for the pool longer "
                                                              f"than call_timeout = {self.upstream.timeout:g} s"))
                if not batch:
                    continue
            self._in_flight[name] += 1
            self.counts["batches"] += 1
            self.counts["tool_calls"] += len(batch)
            msg = ("run_many", RUN_TOOL, [[tool.task, item[2]] for item in batch], self.pool_wait, tool.chunk)
            self.upstream.call(self.pool_id, msg, self._on_answer(tool, batch))
        if queue is not None and not queue:
            del self._queued[name]

    def _on_answer(self, tool: Tool, batch: list[Item]) -> Callable[[bool, object], None]:
        def answered(ok: bool, value: object) -> None:
            self._in_flight[tool.name] -= 1
            self.finish(tool, batch, ok, value)
            if tool.name in self._queued:
                self._send(tool.name)

        return answered
