"""Replies a worker holds back while it answers a burst of pipelined calls, sent as one frame per caller.

Owns coalescing replies (`wire.frames.encode_replies`): the loop (incarnation.py) sends
the first reply of a round at once, so a lone call waits for nothing, and hands this
module the rest of the round's replies; they leave together when the round ends, when
one caller has `MAX_HELD` waiting, or before the next call once the oldest has waited
`MAX_HOLD_NS` (a slow handler does not hold earlier answers back).  One frame per caller
instead of one per reply: the sends, not the handlers, are what a burst of small calls
costs (DESIGN.md: batch by serialization, not by frames).  Must not touch the mailbox.

    held = HeldReplies(replies.send, key, loop._reply_ok)
    held.hold(reply_to, ref8, value, now_ns)
    held.flush()
"""

from __future__ import annotations

from collections.abc import Callable

from supervisor_tree.wire.auth import FrameKey
from supervisor_tree.wire.frames import encode_replies

__all__ = ["HeldReplies", "MAX_HELD", "MAX_HOLD_NS"]

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
