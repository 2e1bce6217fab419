"""A worker's control socket: the ops served beside its mailbox (ping, stats, marks, code, fault, profile_start,
profile_stop, tracemalloc).

Owns the serving of that socket inside the worker process.  A frame is acted on only
when it carries the run's tag, is a call, and its payload is ``(op, kwargs)`` with op a
str and kwargs a table with str keys; an authentic call is always answered (the op's
value, or the error as a `RemoteError`), and nothing here can raise out of the loop.

    serve_control(incarnation)      # when the control socket is readable
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import zmq

from supervisor_tree.wire import channel
from supervisor_tree.wire.auth import FrameKey
from supervisor_tree.wire.shapes import MALFORMED, BadFrame, describe
from supervisor_tree.worker import code, faults, standby
from supervisor_tree.worker.spawn import SpawnRequest

__all__ = ["serve_control", "OPS"]

OPS = ("ping", "stats", "marks", "code", "fault", "profile_start", "profile_stop", "tracemalloc")


class Host(Protocol):
    """What the running incarnation lends the control socket."""

    key: FrameKey
    control: zmq.Socket[bytes]
    replies: channel.ReplySender
    req: SpawnRequest
    worker: Any

    def stats(self, reset_window: bool) -> dict[str, object]: ...
    def drop(self, peer: str, kind: str, why: str) -> None: ...


def serve_control(host: Host) -> None:
    """Serve every control frame waiting; never raises."""
    while True:
        try:
            frame = host.control.recv(zmq.NOBLOCK)
        except zmq.Again:
            return
        msg = channel.decode(host.key, frame)
        if isinstance(msg, channel.Malformed):
            host.drop("a sender (control PULL)", msg.kind, msg.reason)
            continue
        if not isinstance(msg, channel.Call):
            host.drop("a sender (control PULL)", MALFORMED, f"the control socket takes calls only; got {type(msg).__name__}")
            continue
        try:
            op, kwargs = _parse(channel.loads_payload(msg.payload))
            out = channel.encode_reply(host.key, msg.ref, True, _run(host, op, kwargs))
        except Exception as exc:  # noqa: BLE001 - a failed op is answered, never a crash
            if isinstance(exc, BadFrame):
                host.drop(msg.reply_to, exc.kind, exc.reason)
            out = channel.encode_reply(host.key, msg.ref, False, channel.RemoteError.from_exception(exc))
        host.replies.send(msg.reply_to.encode(), out)


def _parse(payload: object) -> tuple[str, dict[str, Any]]:
    if not (isinstance(payload, (tuple, list)) and len(payload) == 2):
        raise BadFrame(MALFORMED, f"a control call is (op, kwargs); got {describe(payload)}")
    op, kwargs = payload
    if not isinstance(op, str):
        raise BadFrame(MALFORMED, f"a control op is a str; got {describe(op)}")
    if not (isinstance(kwargs, dict) and all(isinstance(k, str) for k in kwargs)):
        raise BadFrame(MALFORMED, f"control {op[:40]!r}: kwargs must be a dict with str keys; got {describe(kwargs)}")
    return op, kwargs


def _run(host: Host, op: str, kwargs: dict[str, Any]) -> object:
    if op == "ping":
        return "pong"
    if op == "stats":
        return host.stats(reset_window=False)
    if op == "marks":  # when this process reached each step of its start (worker/standby.py MARKS)
        return dict(standby.MARKS)
    if op == "code":  # supervise reload --code: the files this worker's code reaches, as they were at its start
        return code.record(host.worker, code.code_roots(host.req.sys_path), host.req.generation)
    if op == "fault":  # a chaos run's fault (worker/faults.py); the serving loop re-reads the handlers after this
        return faults.control(host.worker, **faults.fault_args(kwargs))
    if op in ("profile_start", "profile_stop"):
        from supervisor_tree.profiling import yappi_engine  # written beside this module; imported only when used

        fn: Callable[..., object] = yappi_engine.start if op == "profile_start" else yappi_engine.stop
        return fn(**kwargs)
    if op == "tracemalloc":  # `supervise memwatch --snapshot`: top allocation sites (tracemem.py)
        from supervisor_tree.worker.tracemem import tracemalloc_op

        return tracemalloc_op(**kwargs)
    raise ValueError(f"unknown control op {op[:40]!r}; expected {', '.join(OPS)}")
