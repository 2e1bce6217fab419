"""A worker's view of its own mailbox: how deep it is, and what happens past its `mailbox_limit`.

Owns `Backlog`: messages taken off the mailbox socket ahead of the loop.  ZeroMQ
does not tell how many messages wait in a socket, so before a round, at most every
`PROBE_EVERY_S` (every round when a limit is configured), the loop *probes*: it moves
what waits into `pending` (up to `PROBE_CAP`), which gives the depth, and then serves
`pending` first.  An idle worker's probe is one recv that finds nothing.  A round that
started from `pending` probes again when `pending` runs out and a probe is due, so a
round of slow handlers keeps its depth known; without a limit, rounds that start with
nothing pending read the socket directly (the fast path: ~300 ns a message cheaper).
With a limit, a round ends when `pending` is served: nothing bypasses the policy.

Overflow policies, applied by a probe when more than `limit` messages wait:
- backpressure: the probe takes at most `limit`; the rest stay in ZeroMQ's queues,
  whose high-water marks are set to the limit, so senders wait (the default);
- reject: the newest messages past the limit are refused: a call gets an error
  reply (`MailboxFull`; only an authentic one: its reply address is read only when the
  frame carries the run's tag), a cast or info is dropped; counted in `rejected`;
- drop_oldest: the oldest messages past the limit are dropped the same way; counted
  in `dropped`.

Must not dispatch anything: the loop (incarnation.py) does.

    box = Backlog(mailbox_sock, replies, "jobs#3", key, limit=1000, policy="reject")
    recv = box.before_round(mailbox_sock.recv)      # probes when due; then up to BATCH messages
    box.after_round(n == BATCH)

Depth and limits count messages: a batch frame (casts a sender coalesced, wire/coalesce.py)
counts as the casts it carries (`wire.frames.batch_count`, read once its tag is checked),
and a batch that straddles the limit is cut there (`_trim`: the casts past it refused).

The depth figure: `pending` as it is served (live), or, once `pending` is empty while
the worker is still behind (its rounds are full batches), what the last probe found;
0 once a round empties the mailbox.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import zmq

from supervisor_tree.wire import channel, frames
from supervisor_tree.wire.auth import FrameKey
from supervisor_tree.wire.shapes import BadFrame

log = logging.getLogger("supervisor_tree.worker")

__all__ = ["Backlog", "POLICIES", "PROBE_CAP", "PROBE_EVERY_S"]

POLICIES = ("backpressure", "reject", "drop_oldest")
PROBE_CAP = 10_000  # without a limit, a probe moves at most this many (the depth then reads ">= cap")
PROBE_EVERY_S = 0.5


class Backlog:
    """Invariant: `pending` holds frames in arrival order, all older than anything still in the socket;
    `sizes` holds how many messages each carries (1, or a batch's count), `msgs` their sum."""

    def __init__(self, sock: zmq.Socket[bytes], replies: channel.ReplySender, who: str, key: FrameKey,
                 limit: int | None = None, policy: str = "backpressure") -> None:
        self._recv = sock.recv
        self._replies = replies
        self._key = key
        self.who = who
        self.limit = limit
        self.policy = policy
        self.pending: deque[bytes] = deque()
        self.sizes: deque[int] = deque()
        self.msgs = 0
        self.in_hand = 0  # casts of the batch frame the loop is serving that wait their turn (wire/coalesce.py)
        self.behind = False  # the last round drained a full batch: more may wait
        self.capped = False  # the last probe stopped at its cap: more wait than `pending` holds
        self.measured = 0  # what the last probe found waiting
        self.dropped = 0
        self.rejected = 0
        self._next_probe = 0.0
        if limit is not None and policy == "backpressure":
            sock.setsockopt(zmq.RCVHWM, max(1, limit))  # connections made from now on; peers connect after ready

    def recv(self, flags: int = 0) -> bytes:
        """The next message: `pending` first (raises zmq.Again when there is none to give).

        With a limit, nothing bypasses the policy: once `pending` is served the round ends
        and the next one probes.  Without, the round goes on from the socket, probing again
        when due (a round of slow handlers can last long: its depth stays known).
        """
        pending = self.pending
        if pending:
            self.msgs -= self.sizes.popleft()
            return pending.popleft()
        if self.limit is not None:
            raise zmq.Again()
        now = time.monotonic()
        if now >= self._next_probe:
            self.probe(now)
            if pending:
                self.msgs -= self.sizes.popleft()
                return pending.popleft()
        return self._recv(flags)

    def put_back(self, frame: bytes) -> None:
        """`frame` (a batch's casts not yet served: the loop stopped inside it) is served first."""
        self.pending.appendleft(frame)
        n = self._size(frame)
        self.sizes.appendleft(n)
        self.msgs += n

    def _size(self, frame: bytes) -> int:
        """How many messages `frame` carries: a batch's count once its tag is checked, else 1."""
        if len(frame) <= frames.BATCH_HEAD or frame[0] != channel.BATCH:
            return 1
        end = self._key.verify(frame)
        try:
            return frames.batch_count(frame, end) if end > 0 else 1
        except BadFrame:
            return 1

    def before_round(self, sock_recv: Callable[[int], bytes]) -> Callable[[int], bytes]:
        """Probe when due; the recv the round should use (ours while `pending` has messages)."""
        if self.limit is not None:
            self.probe(0.0)
            return self.recv  # every message passes the policy: the round serves what the probe took, then ends
        now = time.monotonic()
        if now >= self._next_probe:
            self.probe(now)
        return self.recv if self.pending else sock_recv

    @property
    def drained(self) -> bool:
        """With a limit: the last probe read the socket until Again, so the loop may block on its ZMQ_FD."""
        return self.limit is not None and not self.capped

    def after_round(self, full: bool) -> None:
        """`full`: the round drained a whole batch, so more may wait."""
        self.behind = full

    def probe(self, now: float) -> None:
        """Move what waits in the socket into `pending`, then apply the overflow policy."""
        self._next_probe = now + PROBE_EVERY_S
        limit = self.limit
        if limit is None:
            cap = PROBE_CAP
        elif self.policy == "backpressure":
            cap = limit
        else:
            cap = limit + PROBE_CAP  # over the limit on purpose: the policy trims it below
        pending, sizes, recv, again, size = self.pending, self.sizes, self._recv, zmq.Again, self._size
        try:
            while self.msgs < cap:
                frame = recv(zmq.NOBLOCK)
                pending.append(frame)
                n = size(frame)
                sizes.append(n)
                self.msgs += n
            self.capped = True
        except again:
            self.capped = False
        if limit is not None and self.policy != "backpressure":
            while self.msgs > limit:
                self._trim(limit)
        self.measured = self.msgs

    def _trim(self, limit: int) -> None:
        """Refuse the newest (reject) or oldest (drop_oldest) frame past `limit`; a batch only in part."""
        oldest = self.policy == "drop_oldest"
        frame, n = (self.pending.popleft(), self.sizes.popleft()) if oldest else (self.pending.pop(), self.sizes.pop())
        self.msgs -= n
        excess = self.msgs + n - limit
        if oldest:
            why = f"dropped: the oldest message past mailbox_limit {limit} (policy drop_oldest)"
        else:
            why = f"rejected: mailbox_limit {limit} reached (policy reject)"
        if n > excess:  # a batch across the limit: the casts within it stay
            bodies = channel.split_batch(frame, self._key.verify(frame))  # counted by _size: it parses
            keep = bodies[excess:] if oldest else bodies[: n - excess]
            kept = channel.encode_batch(self._key, keep)
            if oldest:
                self.pending.appendleft(kept)
                self.sizes.appendleft(len(keep))
            else:
                self.pending.append(kept)
                self.sizes.append(len(keep))
            self.msgs += len(keep)
            n = excess
        if oldest:
            self.dropped += n
        else:
            self.rejected += n
        self._refuse(frame, why)

    def _refuse(self, frame: bytes, why: str) -> None:
        """A call gets `MailboxFull` as its error reply; anything else is dropped (logged at 1, 10, 100, ...)."""
        end = self._key.verify(frame)  # no tag: its reply address is no more to be trusted than the rest
        if end > 0 and frame[0] == channel.CALL:
            try:
                ref8, reply_to, _ = channel.split_call(frame, end)
            except ValueError:
                pass
            else:
                error = channel.RemoteError("MailboxFull", why)
                self._replies.send(reply_to, channel.reply_frame(self._key, ref8, False, error))
                return
        lost = self.dropped + self.rejected
        if str(lost).rstrip("0") == "1":
            log.warning("worker %s: %s (%d messages refused so far)", self.who, why, lost)

    def depth(self) -> int:
        """Messages waiting: `pending` while it lasts, else the last probe's count while still behind."""
        n = self.msgs + self.in_hand
        return n if n or not self.behind else self.measured

    def figures(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mailbox_depth": self.depth()}
        if self.capped and self.limit is None:
            out["mailbox_depth_capped"] = True
        if self.limit is not None:
            out.update(mailbox_limit=self.limit, mailbox_policy=self.policy,
                       mailbox_dropped=self.dropped, mailbox_rejected=self.rejected)
        return out
