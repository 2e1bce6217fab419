"""The loop an incarnation serves its mailbox in, inside its own process.

Owns one round after another: one poll(2) on the control socket's, the mailbox's
and the wake pipe's fds, then up to `BATCH` mailbox frames, each a call, a cast,
an info, a batch of casts or a frame of pipelined calls, dispatched to the
behaviour's callbacks.  Counters are published once per round.  Must not fork,
and decides nothing about restarts: it returns the reason it stopped with (a
callback that raised: the exception).

    reason = serve(incarnation)          # incarnation.py's Incarnation (a `Loop`), started
"""

from __future__ import annotations

import pickle
import select
import time
from collections.abc import Callable
from typing import Protocol, cast

import zmq

from supervisor_tree.wire import channel, frames
from supervisor_tree.wire.auth import FrameKey
from supervisor_tree.wire.coalesce import serve_batch
from supervisor_tree.wire.endpoints import drain_fd
from supervisor_tree.wire.shapes import UNAUTHENTICATED
from supervisor_tree.worker.behaviour import NOREPLY, Worker
from supervisor_tree.worker.heartbeat import LAT_MASK
from supervisor_tree.worker.mailbox import Backlog
from supervisor_tree.worker.replies import HeldReplies, serve_calls
from supervisor_tree.worker.timers import Timers

__all__ = ["BATCH", "serve"]

BATCH = 256  # mailbox messages per round before the control socket is looked at again


class Loop(Protocol):
    """What the loop needs of the incarnation (incarnation.py imports this module)."""

    worker: Worker | None
    mailbox: zmq.Socket[bytes]
    control: zmq.Socket[bytes]
    replies: channel.ReplySender
    wake_r: int
    key: FrameKey
    timers: Timers
    halt: bool
    current: tuple[bytes, bytes] | None
    calls: int
    casts: int
    infos: int
    errors: int
    max_batch: int
    lat: list[int]
    lat_i: int

    @property
    def box(self) -> Backlog | None: ...

    def drop(self, peer: str, kind: str, why: str) -> None: ...
    def _serve_control(self) -> None: ...
    def _on_halt(self) -> object: ...
    def _fire_timers(self, handle_info: Callable[[object], None]) -> None: ...
    def _reply_ok(self, ref8: bytes, value: object) -> bytes: ...
    def _malformed(self, frame: bytes, end: int, exc: BaseException) -> None: ...
    def _reply_error(self, reply_to: bytes, ref8: bytes, exc: BaseException) -> None: ...


def serve(inc: Loop) -> object:
    """Serve until a stop; returns the stop reason (see exit_status)."""
    worker = inc.worker
    assert worker is not None
    handle_call, handle_cast, handle_info = worker.handle_call, worker.handle_cast, worker.handle_info
    control, wake = inc.control, inc.wake_r
    box = inc.box
    assert box is not None
    sock_recv = inc.mailbox.recv
    send = inc.replies.send
    held = HeldReplies(send, inc.key, inc._reply_ok)  # a calls frame's replies: one frame back
    # One poll(2) on raw fds.  A ZMQ_FD fires for a message only if its socket was seen empty since: the
    # control socket is read to Again when it fires; a blocking poll follows a round that saw the mailbox empty.
    control_fd = int(control.getsockopt(zmq.FD))
    fds = select.poll()
    for fd in (control_fd, int(inc.mailbox.getsockopt(zmq.FD)), wake):
        fds.register(fd, select.POLLIN)
    # plain ints: `int & zmq.POLLIN` runs the enum's Python __and__, and constructs a PollEvent, on every lone call
    events, EVENTS, POLLIN = cast("Callable[[int], int]", inc.mailbox.getsockopt), int(zmq.EVENTS), int(zmq.POLLIN)
    inc._serve_control()  # what came before the loop
    poll = fds.poll
    key = inc.key
    verify = key.verify
    split_call, reply_frame, loads = channel.split_call, channel.reply_frame, pickle.loads
    CALL, CAST, INFO, BATCH_FRAME, CALLS = channel.CALL, channel.CAST, channel.INFO, channel.BATCH, frames.CALLS
    NOBLOCK, Again, clock = zmq.NOBLOCK, zmq.Again, time.perf_counter_ns
    lat, lat_i = inc.lat, inc.lat_i
    timeout = 0  # the mailbox may hold what came before the loop
    while True:
        if inc.halt:
            reason = inc._on_halt()
            if reason is not None:
                return reason
        if inc.timers:
            timeout = inc.timers.wait_ms(timeout)
        for fd, _ in poll(timeout):
            if fd == control_fd:
                inc._serve_control()  # may arm a fault, which wraps the handlers: read them again
                handle_call, handle_cast, handle_info = worker.handle_call, worker.handle_cast, worker.handle_info
            elif fd == wake:
                drain_fd(wake)
        if inc.halt:
            timeout = 0
            continue
        n = calls = casts = infos = 0
        recv = box.before_round(sock_recv)
        seen_empty = False  # the socket itself, since its last commands: a blocking poll may wait
        try:
            if inc.timers:
                inc._fire_timers(handle_info)
            while n < BATCH:
                if n == 1 and recv is sock_recv and not events(EVENTS) & POLLIN:
                    seen_empty = True  # a frame that came alone (its caller waits): cheaper than raising Again
                    break
                try:
                    frame = recv(NOBLOCK)
                except Again:
                    seen_empty = recv is sock_recv or box.drained
                    break
                n += 1
                end = verify(frame)
                if end < 0:  # not tagged with the run's key: not one byte of it is read
                    inc.drop("a sender (mailbox PULL)", UNAUTHENTICATED, f"frame of {len(frame)} bytes without the run's tag")
                    continue
                kind = frame[0]
                if kind == CALL:
                    try:
                        ref8, reply_to, payload = split_call(frame, end)
                        msg = loads(payload)
                    except Exception as exc:  # noqa: BLE001
                        inc._malformed(frame, end, exc)
                        continue
                    t0 = clock()
                    inc.current = (ref8, reply_to)
                    try:
                        value = handle_call(msg)
                    except Exception as exc:
                        send(reply_to, reply_frame(key, ref8, False, channel.RemoteError.from_exception(exc)))
                        raise
                    lat[lat_i & LAT_MASK] = clock() - t0
                    lat_i += 1
                    calls += 1
                    inc.current = None
                    if value is not NOREPLY:
                        send(reply_to, inc._reply_ok(ref8, value))
                elif kind == CALLS:  # calls pipelined together (call_many): each as if it came alone
                    k, lat_i = serve_calls(inc, frame, end, handle_call, held, lat_i)
                    calls += k
                elif kind == CAST:
                    try:
                        msg = loads(memoryview(frame)[1:end])
                    except Exception as exc:  # noqa: BLE001
                        inc._malformed(frame, end, exc)
                        continue
                    casts += 1
                    handle_cast(msg)
                elif kind == INFO:
                    try:
                        msg = loads(memoryview(frame)[1:end])
                    except Exception as exc:  # noqa: BLE001
                        inc._malformed(frame, end, exc)
                        continue
                    infos += 1
                    handle_info(msg)
                elif kind == BATCH_FRAME:  # casts coalesced by a sender: served one by one, in order
                    n += serve_batch(inc, frame, end, handle_cast) - 1
                else:
                    inc._malformed(frame, end, ValueError(f"unknown frame kind {frame[:1]!r}"))
                if inc.halt:
                    break
        except Exception as exc:  # noqa: BLE001 - a callback raised: the worker crashes
            inc.errors += 1
            return exc
        finally:
            inc.calls += calls
            inc.casts += casts
            inc.infos += infos
            inc.lat_i = lat_i
            if n > inc.max_batch:
                inc.max_batch = n
        box.after_round(n >= BATCH)
        timeout = -1 if seen_empty and not box.pending else 0


