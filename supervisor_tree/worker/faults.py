"""Faults a chaos run asks a worker to inject into itself (supervisor_tree/chaos).

Owns, inside a worker process, the faults that need the worker's cooperation:

* ``exception``: the next handler (call or cast) raises `InjectedFault`: a crash, as a bug would;
* ``slow``: every reply waits `ms` more (for `count` messages or `duration` seconds);
* ``drop``: messages are dropped unread, with `probability` (calls get no reply: the caller times out);
* start faults, read from ``RUN/faults/ID.json`` by the next incarnation before `init`:
  ``{"start_delay": s}`` (once) and ``{"fail_starts": n}`` (the next n starts fail).

A running fault wraps the behaviour's handlers on the instance (the loop re-reads them
after every control message); clearing it puts the class's back.  Nothing here runs
unless a chaos run asked: the cost of a worker that was never faulted is one failed
`open` at start.

    client.control_worker("db", "fault", {"kind": "slow", "ms": 20, "duration": 5})
    client.control_worker("db", "fault", {"kind": "clear"})
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from supervisor_tree.wire.shapes import MALFORMED, BadFrame, describe, is_a
from supervisor_tree.worker.behaviour import NOREPLY, Worker

__all__ = ["InjectedFault", "control", "fault_args", "before_init", "start_fault_path", "KINDS", "ARGS"]

KINDS = ("exception", "slow", "drop")
_NONE = type(None)
# The "fault" op's arguments (what `control` takes), checked before anything is armed.
ARGS: dict[str, tuple[type, ...]] = {"kind": (str,), "count": (int, _NONE), "duration": (int, float, _NONE),
                           "probability": (int, float), "ms": (int, float), "seed": (int, _NONE)}
_WRAPPED = ("handle_call", "handle_cast")


class InjectedFault(RuntimeError):
    """Raised by a handler (or `init`) because a chaos run asked for it."""


@dataclass
class _Armed:
    kind: str
    count: int | None  # messages left (None: until `until`)
    until: float | None  # monotonic deadline (None: until `count` runs out)
    probability: float = 1.0
    ms: float = 0.0
    rng: random.Random = field(default_factory=random.Random)
    fired: int = 0

    def live(self, now: float) -> bool:
        return (self.count is None or self.count > 0) and (self.until is None or now < self.until)

    def hits(self) -> bool:
        if self.probability < 1.0 and self.rng.random() >= self.probability:
            return False
        if self.count is not None:
            self.count -= 1
        self.fired += 1
        return True


_armed: list[_Armed] = []  # one incarnation per process: the process's faults


def control(worker: Worker | None, kind: str = "", count: int | None = None, duration: float | None = None,
            probability: float = 1.0, ms: float = 0.0, seed: int | None = None) -> dict[str, object]:
    """The worker control op "fault": arm one (`kind` in KINDS), `clear` them all, or `list` them."""
    if worker is None:
        raise RuntimeError("fault: the worker is not running yet")
    if kind == "clear":
        _armed.clear()
        _unwrap(worker)
        return {"armed": []}
    if kind not in (*KINDS, "list"):
        raise ValueError(f"fault kind must be one of {', '.join(KINDS)}, clear or list; got {kind!r}")
    if kind != "list":
        if count is None and duration is None:
            count = 1
        until = time.monotonic() + duration if duration is not None else None
        _armed.append(_Armed(kind, count, until, float(probability), float(ms), random.Random(seed)))
        _wrap(worker)
    now = time.monotonic()
    return {"armed": [{"kind": a.kind, "count": a.count, "fired": a.fired} for a in _armed if a.live(now)]}


def fault_args(kwargs: dict[str, Any]) -> dict[str, Any]:
    """`kwargs` when they are the "fault" op's (names in ARGS, of its types); raises BadFrame."""
    for name, value in kwargs.items():
        expected = ARGS.get(name)
        if expected is None:
            raise BadFrame(MALFORMED, f"fault: unknown argument {name[:40]!r}; expected {', '.join(ARGS)}")
        if not is_a(value, expected):
            raise BadFrame(MALFORMED, f"fault: {name} must be {'|'.join(t.__name__ for t in expected)}; "
                                      f"got {describe(value)}")
    return kwargs


def _wrap(worker: Worker) -> None:
    for name in _WRAPPED:
        if name not in vars(worker):
            setattr(worker, name, _faulty(worker, getattr(type(worker), name).__get__(worker), name == "handle_call"))


def _unwrap(worker: Worker) -> None:
    for name in _WRAPPED:
        vars(worker).pop(name, None)


def _faulty(worker: Worker, handler: Callable[[object], object], is_call: bool) -> Callable[[object], object]:
    def handle(msg: object) -> object:
        now = time.monotonic()
        live = [a for a in _armed if a.live(now)]
        if len(live) != len(_armed):
            _armed[:] = live
        for armed in live:
            if armed.kind == "drop" and armed.hits():
                return NOREPLY if is_call else None  # read and thrown away: no reply ever goes out
            if armed.kind == "exception" and armed.hits():
                raise InjectedFault(f"chaos: exception injected into worker {worker.id!r}")
        delay = sum(a.ms for a in live if a.kind == "slow" and a.hits())
        if delay:
            time.sleep(delay / 1000)  # the fault is the latency itself
        return handler(msg)

    return handle


def start_fault_path(run_dir: str, worker_id: str) -> str:
    return os.path.join(run_dir, "faults", f"{worker_id}.json")


def before_init(run_dir: str, worker_id: str) -> None:
    """Apply the start faults a chaos run left for this worker: a delay, or a failed start."""
    path = start_fault_path(run_dir, worker_id)
    try:
        with open(path) as f:
            plan = json.load(f)
    except (FileNotFoundError, ValueError):
        return
    delay = float(plan.pop("start_delay", 0) or 0)
    fail = int(plan.get("fail_starts", 0) or 0)
    if fail > 0:
        plan["fail_starts"] = fail - 1
    if any(plan.values()):
        tmp = f"{path}.{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(plan, f)
        os.replace(tmp, path)
    else:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    if delay > 0:
        time.sleep(delay)  # the fault is the slow start itself
    if fail > 0:
        raise InjectedFault(f"chaos: start of worker {worker_id!r} fails on purpose ({fail - 1} more to fail)")
