"""A worker's figures and the thread that beats them to the node.

    beat = Heartbeat(stats=lambda: ..., inbound=req.inbound, ...)   # see incarnation.py
    beat.start(); ...; beat.stop()

The figures (`stats_of`) are what `supervise status` and the profiler triggers read:
counters published by the loop once per batch, the call latency p99 over the window
since the last beat, and the behaviour's own `statistics()`.
"""

from __future__ import annotations

import _thread
import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import zmq

from supervisor_tree.wire import channel

__all__ = ["Heartbeat", "Counters", "stats_of", "LAT_SIZE", "LAT_MASK"]

log = logging.getLogger("supervisor_tree.worker")

LAT_SIZE = 1024  # call latency ring (power of two)
LAT_MASK = LAT_SIZE - 1


class Counters(Protocol):
    """What the loop publishes (per batch) for the figures."""

    calls: int
    casts: int
    infos: int
    errors: int
    malformed: int
    max_batch: int
    lat: list[int]
    lat_i: int
    window_lat_i: int
    started: float

    def dropped_replies(self) -> int: ...
    def mailbox_figures(self) -> dict[str, object]: ...
    def worker_statistics(self) -> dict[str, object] | None: ...


def stats_of(c: Counters, reset_window: bool) -> dict[str, object]:
    """The worker's figures; `reset_window` starts a new latency window (one per heartbeat)."""
    end = c.lat_i
    stats: dict[str, object] = {
        "calls": c.calls, "casts": c.casts, "infos": c.infos,
        "errors": c.errors, "malformed": c.malformed,
        "dropped_replies": c.dropped_replies(),
        "call_p99_us": _p99_us(c.lat, c.window_lat_i, end),
        "max_batch": c.max_batch,
        "uptime_s": round(time.monotonic() - c.started, 3),
        **c.mailbox_figures(),  # mailbox_depth, and the overflow policy's counts (worker/mailbox.py)
    }
    own = c.worker_statistics()
    if own:
        stats["worker"] = own
    if reset_window:
        c.window_lat_i = end
        c.max_batch = 0
    return stats


def _p99_us(lat: list[int], since: int, end: int) -> int:
    n = min(end - since, LAT_SIZE)
    if n <= 0:
        return 0
    samples = sorted(lat[(end - k - 1) & LAT_MASK] for k in range(n))
    return samples[min(n - 1, (n * 99) // 100)] // 1000


class Heartbeat:
    """A thread with its own PUSH to the node's inbound socket, one beat per interval.

    Invariant: the thread owns a socket only between `_started` and `_done`; it checks
    `_stop` after setting `_started`, `stop()` checks `_started` after setting `_stop`,
    so either `stop()` waits for it or it never opens a socket.
    """

    def __init__(self, ctx: zmq.Context[Any], inbound: str, interval: float,
                 beat: Callable[[], bytes], reconnect_ivl: int) -> None:
        self._ctx, self._inbound, self._interval, self._beat = ctx, inbound, interval, beat
        self._reconnect_ivl = reconnect_ivl
        self._stop = threading.Event()
        self._started = threading.Event()
        self._done = threading.Event()

    def start(self) -> None:
        # _thread, not threading.Thread: Thread.start() waits until the new thread has
        # run, which put ~1 ms between "ready" and serving the first call on a busy host.
        # Started with SIGTERM blocked: a new thread that has not run yet could otherwise take
        # a stop request, and the main thread, asleep in a handler, would never hear of it.
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        try:
            _thread.start_new_thread(self._run, ())
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        if self._started.is_set():
            self._done.wait(timeout)

    def _run(self) -> None:
        self._started.set()
        if self._stop.is_set():
            return
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # the main thread takes stop requests (blocked already)
        sock = channel.make_socket(self._ctx, zmq.PUSH, reconnect_ivl=self._reconnect_ivl)
        try:
            channel.connect(sock, self._inbound)
            while not self._stop.wait(self._interval):
                try:
                    sock.send(self._beat(), zmq.NOBLOCK)  # an encoded, tagged notice
                except zmq.Again:
                    pass  # the node is not reading: it will see the misses itself
        finally:
            sock.close(0)
            self._done.set()
