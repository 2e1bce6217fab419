"""Pipelined calls, a worker's side: the calls that came in one frame (`serve_calls`), answered in one frame.

A calls frame (`frames.CALLS`: what `Client.call_many` sends, the calls it had room for)
is served call by call, exactly as if each had come alone: the same handler, the same
`Worker.caller()`, a stop between two of them leaves the rest unanswered (their caller
sees the worker exit).  Their replies are held (`HeldReplies`) and leave together
(`frames.encode_replies`) when the frame is served, when `MAX_HELD` wait, or before the
next call once the oldest waited `MAX_HOLD_NS`.  One frame back instead of one per
reply: the sends, not the handlers, are what a burst of small calls costs (DESIGN.md:
batch by serialization, not by frames).  A call that came alone is answered at once by
the loop (incarnation.py), never held.  `send_answers`: deferred answers a handler gives together
(`Worker.reply_many`, e.g. a pool member's batch of tasks), one frame per caller.  Must
not touch the mailbox.

    held = HeldReplies(replies.send, key, loop._reply_ok)
    held.hold(reply_to, ref8, value, now_ns)
    held.flush()
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from supervisor_tree.wire.auth import FrameKey
from supervisor_tree.wire.frames import RemoteError, encode_replies, reply_frame, split_calls
from supervisor_tree.worker.behaviour import NOREPLY
from supervisor_tree.worker.heartbeat import LAT_MASK

__all__ = ["HeldReplies", "MAX_HELD", "MAX_HOLD_NS", "serve_calls", "send_answers"]

MAX_HELD = 128  # replies to one caller in one frame at most
MAX_HOLD_NS = 1_000_000  # 1 ms: held longer than this, they leave before the next call is handled


class HeldReplies:
    """The replies held in this round, per reply address, in the order they were made."""

    __slots__ = ("held", "since", "_send", "_key", "_one")

    def __init__(self, send: Callable[[bytes, bytes], object], key: FrameKey,
                 one: Callable[[bytes, object], bytes]) -> None:
        self.held: dict[bytes, list[tuple[bytes, object]]] = {}
        self.since = 0  # perf_counter_ns of the oldest held reply
        self._send, self._key, self._one = send, key, one

    def hold(self, reply_to: bytes, ref8: bytes, value: object, now_ns: int) -> None:
        if not self.held:
            self.since = now_ns
        got = self.held.get(reply_to)
        if got is None:
            self.held[reply_to] = [(ref8, value)]
        else:
            got.append((ref8, value))
            if len(got) >= MAX_HELD:
                self._send_to(reply_to, self.held.pop(reply_to))

    def flush(self) -> None:
        held, self.held = self.held, {}
        for reply_to, items in held.items():
            self._send_to(reply_to, items)

    def _send_to(self, reply_to: bytes, items: list[tuple[bytes, object]]) -> None:
        if len(items) > 1:
            try:
                frame = encode_replies(self._key, [(int.from_bytes(r, "little"), True, v) for r, v in items])
            except Exception:  # noqa: BLE001 - a value that does not pickle: each reply alone says which
                pass
            else:
                self._send(reply_to, frame)
                return
        for ref8, value in items:
            self._send(reply_to, self._one(ref8, value))


def send_answers(send: Callable[[bytes, bytes], object], key: FrameKey, one: Callable[[bytes, object], bytes],
                 answers: list[tuple[tuple[bytes, bytes], bool, object]]) -> None:
    """Deferred calls answered together (`Worker.reply_many`): (token, ok, value or the exception) each; the
    answers to one caller leave in one frame (`encode_replies`), in the order given."""
    by_caller: dict[bytes, list[tuple[int, bool, object]]] = {}
    for (ref8, reply_to), ok, value in answers:
        if not ok:
            value = RemoteError.from_exception(value) if isinstance(value, BaseException) else RemoteError("Error", str(value))
        by_caller.setdefault(reply_to, []).append((int.from_bytes(ref8, "little"), ok, value))
    for reply_to, items in by_caller.items():
        if len(items) > 1:
            try:
                frame = encode_replies(key, items)
            except Exception:  # noqa: BLE001 - a value that does not pickle: each reply alone says which
                pass
            else:
                send(reply_to, frame)
                continue
        for ref, ok, value in items:
            ref8 = ref.to_bytes(8, "little")
            send(reply_to, one(ref8, value) if ok else reply_frame(key, ref8, False, value))


class _Loop(Protocol):
    """What `serve_calls` needs of the incarnation (incarnation.py imports this module)."""

    key: FrameKey
    current: tuple[bytes, bytes] | None
    lat: list[int]
    halt: bool

    def _malformed(self, frame: bytes, end: int, exc: BaseException) -> None: ...
    def _reply_error(self, reply_to: bytes, ref8: bytes, exc: BaseException) -> None: ...


def serve_calls(loop: _Loop, frame: bytes, end: int, handle_call: Callable[[object], object], held: HeldReplies,
                lat_i: int) -> tuple[int, int]:
    """Handle each call of a calls frame in order; (calls handled, the latency ring's next index).

    Replies are held (`held`) and sent when the frame is done (or before a crash); a handler that
    raises is answered with its error, then the exception propagates (the worker crashes, as for
    a lone call)."""
    try:
        reply_to, calls = split_calls(frame, end)
    except Exception as exc:  # noqa: BLE001 - a frame that does not decode is not a crash
        loop._malformed(frame, end, exc)
        return 0, lat_i
    clock, lat, n = time.perf_counter_ns, loop.lat, 0
    try:
        for ref, msg in calls:
            ref8 = ref.to_bytes(8, "little")
            t0 = clock()
            if held.held and t0 - held.since > MAX_HOLD_NS:
                held.flush()
            loop.current = (ref8, reply_to)
            try:
                value = handle_call(msg)
            except Exception as exc:
                loop._reply_error(reply_to, ref8, exc)
                raise
            lat[lat_i & LAT_MASK] = clock() - t0
            lat_i += 1
            n += 1
            loop.current = None
            if value is not NOREPLY:
                held.hold(reply_to, ref8, value, t0)
            if loop.halt:
                break
    finally:
        held.flush()
    return n, lat_i
