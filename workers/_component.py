"""What the built-in components (registry, queue, session, pool) share.

Owns: dispatching call and cast messages to `op_<name>` methods; answering
expected refusals as errors without crashing; one timer for many deadlines;
the node's events feed (a SUB socket, drained on a timer); a watch on process
ids through pidfds.  Must not know any one component's state.

Messages take two shapes, both dispatched to the same method:

    {"op": "put", "item": 3, "block": False}     # JSON-friendly: `supervise call q '{"op":"depth"}'`
    ("put", 3, False)                            # the typed clients' fast path: positional

    class Counter(Component):
        def op_add(self, k: int = 1) -> int:      # {"op": "add", "k": 2} or ("add", 2)
            ...

An op that raises a `Refused` answers the caller with that error (the client
raises `CallError`, or the typed client's own exception) and the component keeps
running; anything else raised is a bug and crashes it, as OTP would.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import select
import time
from collections.abc import Callable
from typing import Any, ClassVar, NoReturn, TypeVar

import zmq

from supervisor_tree import NOREPLY, Worker
from supervisor_tree.client import CallError, RemoteError

log = logging.getLogger(__name__)

__all__ = ["Component", "Refused", "BadRequest", "NodeEvents", "PidWatch", "Token", "reraise", "expect"]

Token = tuple[bytes, bytes]
"""A deferred call's caller (`Worker.caller()`), answered later with `reply` or `reply_error`."""

_T = TypeVar("_T")

_DEADLINE = ("_component", "deadline")
_TICK = ("_component", "tick")


class Refused(Exception):
    """An expected refusal (full, empty, unknown name...): answered as an error, never a crash."""


class BadRequest(Refused):
    """The message names no op of this component, or its arguments do not fit the op."""


class Component(Worker):
    """A Worker whose calls and casts are `op_<name>` methods (see the module docstring).

    Subclasses may override `expire(now) -> next deadline | None` (waiters that
    timed out) and `tick(now)` (periodic work every `tick_interval` seconds once
    `start_ticking` ran).
    """

    _ops: ClassVar[dict[str, Callable[..., object]]] = {}
    _sigs: ClassVar[dict[str, inspect.Signature]] = {}
    tick_interval: float = 0.05
    _deadline_due: float | None = None  # when the one deadline timer fires (None: not armed)
    _deadline_timer: int = 0

    def __init_subclass__(cls, **kw: object) -> None:
        super().__init_subclass__(**kw)
        functions = inspect.getmembers(cls, inspect.isfunction)
        ops: dict[str, Callable[..., object]] = {name[3:]: fn for name, fn in functions if name.startswith("op_")}
        cls._ops = ops
        cls._sigs = {name: inspect.signature(fn) for name, fn in ops.items()}

    # -- dispatch --

    def handle_call(self, msg: object) -> object:
        try:
            if type(msg) is tuple and msg:  # the typed clients' positional form: no dict, no slice kept
                fn = self._ops.get(msg[0])
                if fn is not None:
                    return fn(self, *msg[1:])
            fn, args, kwargs = self._bind(msg)
            return fn(self, *args, **kwargs)
        except Refused as exc:
            self.reply_error(self.caller(), exc)
            return NOREPLY

    def handle_cast(self, msg: object) -> None:
        try:
            fn, args, kwargs = self._bind(msg)
            value = fn(self, *args, **kwargs)
        except Refused as exc:
            log.warning("%s %s: cast %r refused: %s", type(self).__name__, self.id, msg, exc)
            return
        if value is NOREPLY:
            log.warning("%s %s: cast %r waits for a reply nobody will read", type(self).__name__, self.id, msg)

    def _bind(self, msg: object) -> tuple[Callable[..., object], tuple[object, ...], dict[str, object]]:
        if type(msg) is tuple and msg:
            fn = self._ops.get(msg[0])
            if fn is not None:
                return fn, msg[1:], {}
        elif isinstance(msg, dict):
            name = msg.get("op")
            if isinstance(name, str) and (fn := self._ops.get(name)) is not None:
                kwargs = {k: v for k, v in msg.items() if k != "op"}
                try:
                    self._sigs[name].bind(self, **kwargs)
                except TypeError as exc:
                    raise BadRequest(f"{name}: {exc}; signature {name}{self._describe(name)}") from None
                return fn, (), kwargs
        known = ", ".join(sorted(self._ops))
        raise BadRequest(f'{type(self).__name__} takes {{"op": <name>, ...}} or (<name>, ...) with an op among {known}; got {msg!r:.200}')

    def _describe(self, name: str) -> str:
        params = list(self._sigs[name].parameters.values())[1:]
        return "(" + ", ".join(str(p) for p in params) + ")"

    # -- deadlines and ticks --

    def arm_deadline(self, deadline: float) -> None:
        """Make sure `expire` runs at `deadline` (monotonic) or earlier.  One timer serves every waiter."""
        due = self._deadline_due
        if due is not None and due <= deadline:
            return
        if due is not None:
            self.cancel_timer(self._deadline_timer)
        self._deadline_due = deadline
        self._deadline_timer = self.send_after(max(0.0, deadline - time.monotonic()), _DEADLINE)

    def expire(self, now: float) -> float | None:
        """Answer the waiters whose deadline passed; return the next deadline (None: no waiter left)."""
        return None

    def start_ticking(self, interval: float | None = None) -> None:
        if interval is not None:
            self.tick_interval = interval
        self.send_after(self.tick_interval, _TICK)

    def tick(self, now: float) -> None:
        """Periodic work (drain events, look for dead processes); runs every `tick_interval`."""

    def handle_info(self, msg: object) -> None:
        if msg == _DEADLINE:
            self._deadline_due = None
            nxt = self.expire(time.monotonic())
            if nxt is not None:
                self.arm_deadline(nxt)
        elif msg == _TICK:
            self.tick(time.monotonic())
            self.send_after(self.tick_interval, _TICK)
        else:
            self.on_info(msg)

    def on_info(self, msg: object) -> None:
        log.warning("%s %s: unexpected message %r; ignored", type(self).__name__, self.id, msg)


def deadline_of(timeout: float | None, default: float | None = None) -> float | None:
    """A monotonic deadline for a request's `timeout` (seconds; None: `default`; None and None: never)."""
    t = default if timeout is None else timeout
    return None if t is None else time.monotonic() + float(t)


# ---------------------------------------------------------------------------
# The node's events


class NodeEvents:
    """The node's supervisor reports (JSON lines on ipc://RUN/events), read without blocking.

    The SUB socket lives on the worker's context and is only touched by its main
    thread.  A subscriber connects asynchronously: reports published before the
    connection is made are not seen (pub/sub's slow joiner), so components that
    must not miss a death also check pids themselves (`PidWatch`).
    """

    def __init__(self, worker: Worker, kinds: tuple[str, ...] = ("exited", "started")) -> None:
        ctx = worker.context  # the worker's own context: no second I/O thread
        self.sock = ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.connect(f"ipc://{os.path.join(worker.run_dir, 'events')}")
        self.kinds = kinds
        self.seen = 0

    def drain(self) -> list[dict[str, Any]]:
        """Every report of the wanted kinds received since the last drain, oldest first."""
        out: list[dict[str, Any]] = []  # decoded JSON: walked by each component
        recv = self.sock.recv
        while True:
            try:
                frame = recv(zmq.NOBLOCK)
            except zmq.Again:
                return out
            try:
                rec = json.loads(frame)
            except ValueError:
                log.warning("events: a report that is not JSON: %r", frame[:80])
                continue
            self.seen += 1
            if rec.get("event") in self.kinds:
                out.append(rec)

    def close(self) -> None:
        self.sock.close(0)


class PidWatch:
    """Which of the watched processes died, through pidfds (no pid reuse race, one poll for all)."""

    def __init__(self) -> None:
        self._fds: dict[int, int] = {}  # pid -> pidfd
        self._pids: dict[int, int] = {}  # pidfd -> pid
        self._poll = select.poll()

    def watch(self, pid: int) -> bool:
        """Start watching `pid`; False when it is already gone."""
        if pid in self._fds:
            return True
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return False
        self._fds[pid] = fd
        self._pids[fd] = pid
        self._poll.register(fd, select.POLLIN)
        return True

    def unwatch(self, pid: int) -> None:
        fd = self._fds.pop(pid, None)
        if fd is not None:
            del self._pids[fd]
            self._poll.unregister(fd)
            os.close(fd)

    def dead(self) -> list[int]:
        """The watched pids that exited (they stay watched until `unwatch`)."""
        if not self._fds:
            return []
        return [self._pids[fd] for fd, _ in self._poll.poll(0)]

    def watched(self) -> list[int]:
        return list(self._fds)

    def __contains__(self, pid: int) -> bool:
        return pid in self._fds

    def close(self) -> None:
        for pid in list(self._fds):
            self.unwatch(pid)


# ---------------------------------------------------------------------------
# Client side


def reraise(exc: CallError, known: dict[str, type[Exception]]) -> NoReturn:
    """Raise the typed exception for a component's refusal (by its type name); else re-raise `exc`."""
    err = exc.error
    if isinstance(err, RemoteError) and err.type in known:
        raise known[err.type](err.message) from None
    raise exc


def expect(value: object, kind: type[_T], what: str) -> _T:
    """A component's reply, which arrives unpickled and so untyped, checked to be a `kind`.

        depth = expect(client.call("jobs", ("depth",)), int, "jobs: depth")
    """
    if isinstance(value, kind):
        return value
    raise TypeError(f"{what}: expected a {kind.__name__} reply; got {type(value).__name__} {value!r:.80}")
