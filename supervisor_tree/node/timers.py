"""The node's timers: named one-shot deadlines on the monotonic clock.

Owns only the bookkeeping; what a timer means belongs to its owner (a supervisor
path, or the node itself).  Setting an (owner, key) again replaces the earlier timer;
a cancelled or replaced timer never fires.

    >>> t = Timers()
    >>> t.set("root", ("backoff", "db"), 0.0)
    >>> t.pop_due(float("inf"))
    ('root', ('backoff', 'db'))
    >>> t.pop_due(float("inf")) is None
    True
"""

from __future__ import annotations

import heapq
import itertools
import time

Key = tuple[object, ...]


class Timers:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str, Key]] = []
        self._live: dict[tuple[str, Key], int] = {}  # (owner, key) -> seq of its current timer
        self._seq = itertools.count(1)

    def set(self, owner: str, key: Key, delay: float) -> None:
        seq = next(self._seq)
        self._live[(owner, key)] = seq
        heapq.heappush(self._heap, (time.monotonic() + delay, seq, owner, key))

    def cancel(self, owner: str, key: Key) -> None:
        self._live.pop((owner, key), None)

    def next_deadline(self) -> float | None:
        """When the earliest timer is due (a cancelled one may wake the loop early: harmless)."""
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> tuple[str, Key] | None:
        """The next live timer due at `now`, removed; None when none is."""
        while self._heap and self._heap[0][0] <= now:
            _, seq, owner, key = heapq.heappop(self._heap)
            if self._live.get((owner, key)) == seq:
                del self._live[(owner, key)]
                return owner, key
        return None
