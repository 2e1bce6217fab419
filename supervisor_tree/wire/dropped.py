"""Frames a receiver throws away: counted, and logged at most once per second per peer.

Owns `Dropped`, which every receive path uses for what it will not act on (a frame
without the run's tag, one of the wrong shape, a payload that does not unpickle), so
that a flood of bad frames costs a counter increment each, not a log line each.  The
first drop from a peer is logged at once; later ones within `interval` only counted,
and the next line says how many were left unlogged.  Peers are kept LRU-bounded (a
sender that changes its identity every frame cannot grow this table).

    drops = Dropped(log, "node control socket")
    drops.drop("client 5f3a", "unauthenticated", "frame of 12 bytes without the run's tag")
    drops.total, drops.counts["unauthenticated"]         # 1, 1
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable

__all__ = ["Dropped"]


class Dropped:
    def __init__(self, logger: logging.Logger, where: str, *, interval: float = 1.0, max_peers: int = 256,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log, self.where, self._interval, self._max, self._clock = logger, where, interval, max_peers, clock
        self._peers: collections.OrderedDict[str, list[float]] = collections.OrderedDict()  # peer -> [last logged, unlogged]
        self.total = 0
        self.counts: collections.Counter[str] = collections.Counter()

    def drop(self, peer: str, kind: str, why: str) -> None:
        """Count one dropped frame from `peer`; `kind` is a short category ("unauthenticated", "malformed")."""
        self.total += 1
        self.counts[kind] += 1
        now = self._clock()
        entry = self._peers.get(peer)
        if entry is None:
            if len(self._peers) >= self._max:
                self._peers.popitem(last=False)
            entry = self._peers[peer] = [-float("inf"), 0]
        else:
            self._peers.move_to_end(peer)
        if now - entry[0] < self._interval:
            entry[1] += 1
            return
        unlogged = int(entry[1])
        entry[0], entry[1] = now, 0
        more = f" ({unlogged} more from this peer since the last line)" if unlogged else ""
        self._log.warning("%s: dropped a frame from %s (%s): %s%s; %d dropped in all",
                          self.where, peer, kind, why, more, self.total)

    def summary(self) -> dict[str, int]:
        """{"total": n, kind: n, ...}: what `supervise status` shows."""
        return {"total": self.total, **self.counts}
