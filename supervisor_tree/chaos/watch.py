"""The node's supervisor reports as they happen: a SUB socket on RUN/events, read by one thread.

Owns collecting every report (the same records as RUN/events.jsonl) while a chaos run
lasts, waiting for one with a deadline, and slicing them by sequence number, so each
injection can be judged on what happened after it.  Reads only; never sends.

    with EventWatch(run_dir) as watch:
        mark = watch.mark()
        ...                                   # inject
        ev = watch.wait(lambda e: e["event"] == "exited" and e["child"] == "db", timeout=5)
        since = watch.since(mark)

A PUB socket drops nothing for a subscriber that keeps up (this thread only reads),
and the subscription is made (and checked with a marker report) before the run starts.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import zmq

from supervisor_tree.wire import rundir

__all__ = ["EventWatch", "Event"]

Event = dict[str, Any]


class EventWatch:
    def __init__(self, run_dir: Path, context: zmq.Context[Any] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self._own_ctx = context is None  # a context of its own, ended at close: nothing left behind in the process
        self._ctx = context or zmq.Context()
        self._events: list[Event] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-events", daemon=True)

    def __enter__(self) -> EventWatch:
        self.start()
        return self

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        self.close()

    def start(self, timeout: float = 5.0) -> None:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"could not subscribe to the events of the node in {self.run_dir}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        if self._own_ctx and not self._thread.is_alive():
            self._ctx.term()

    def _run(self) -> None:
        sub = self._ctx.socket(zmq.SUB)
        sub.linger = 0
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.rcvhwm = 1_000_000
        sub.connect(rundir.endpoint(self.run_dir, "events"))
        try:
            self._ready.set()
            while not self._stop.is_set():
                if not sub.poll(50):
                    continue
                while True:
                    try:
                        frame = sub.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    try:
                        rec = json.loads(frame)
                    except ValueError:
                        continue
                    with self._cond:
                        self._events.append(rec)
                        self._cond.notify_all()
        finally:
            sub.close(0)

    # -- reading --

    def mark(self) -> int:
        """A position: `since(mark)` returns what arrived after this call."""
        with self._cond:
            return len(self._events)

    def since(self, mark: int, until: int | None = None) -> list[Event]:
        with self._cond:
            return list(self._events[mark:until])

    def wait(self, pred: Callable[[Event], bool], timeout: float, mark: int = 0) -> Event | None:
        """The first report at or after `mark` that satisfies `pred`, waiting up to `timeout` s; None if none came."""
        deadline = time.monotonic() + timeout
        with self._cond:
            i = mark
            while True:
                while i < len(self._events):
                    if pred(self._events[i]):
                        return self._events[i]
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def counts(self, mark: int = 0) -> dict[str, Counter[str]]:
        """Per supervisor: how many restarts ("restarting") and escalations it reported since `mark`."""
        out: dict[str, Counter[str]] = {}
        for e in self.since(mark):
            if e["event"] in ("restarting", "reached_max_restart_intensity", "start_error"):
                out.setdefault(str(e.get("supervisor")), Counter())[e["event"]] += 1
        return out
