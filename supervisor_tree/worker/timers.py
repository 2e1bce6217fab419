"""A worker's timers (`Worker.send_after`): erlang:send_after inside one process.

    timers = Timers()
    tid = timers.add(0.5, "tick")       # "tick" goes to handle_info in 0.5 s
    timers.cancel(tid)
    poll_ms = timers.wait_ms(-1)        # the loop's poll timeout, shortened to the next timer
    for msg in timers.due(): ...        # the messages whose time has come, oldest first

Main thread only: the loop owns it.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Iterator

__all__ = ["Timers"]


class Timers:
    """A heap of (due, id, msg); a cancelled timer stays in the heap until it surfaces."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, object]] = []
        self._live: set[int] = set()
        self._ids = 0

    def __bool__(self) -> bool:
        return bool(self._heap)

    def add(self, seconds: float, msg: object) -> int:
        self._ids += 1
        heapq.heappush(self._heap, (time.monotonic() + max(0.0, seconds), self._ids, msg))
        self._live.add(self._ids)
        return self._ids

    def cancel(self, timer_id: int) -> None:
        self._live.discard(timer_id)

    def wait_ms(self, timeout: int) -> int:
        """`timeout` (ms, -1 for none), shortened to the next live timer."""
        heap = self._heap
        while heap and heap[0][1] not in self._live:
            heapq.heappop(heap)
        if not heap or timeout == 0:
            return timeout
        wait = max(0, int((heap[0][0] - time.monotonic()) * 1000) + 1)
        return wait if timeout < 0 else min(wait, timeout)

    def due(self) -> Iterator[object]:
        """Pop and yield each live timer's message whose time has come; stop early by breaking."""
        now = time.monotonic()
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, tid, msg = heapq.heappop(heap)
            if tid in self._live:
                self._live.discard(tid)
                yield msg
