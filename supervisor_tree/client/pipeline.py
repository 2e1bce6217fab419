"""Many calls in flight from one thread: `Sender` (the Client's Caller, with a frame-level send) and `call_many`.

Owns the client's side of pipelining: sending a call without waiting for the one
before it, matching replies to calls by ref, failing exactly the calls a dead
incarnation owed (`CalleeExited`), a deadline per call (`CallTimeout`).  The frame
layout is `wire.frames`'; the sockets are the Client's own (one PUSH per mailbox, one
PULL for replies), so calls and casts to one worker keep their order.  Futures
resolved by a reader thread are `inflight.py`'s; this module starts no thread.

    results = call_many(client, "db", [("get", k) for k in keys], timeout=5.0, window=100)

`call_many` sends up to `window` calls, then one more for each reply read; calls sent
together go in one frame (`frames.CALLS`; not to a worker with a `mailbox_limit`, whose
limit counts messages), answered call by call, replies coalesced by the worker; a message
not yet sent when its callee dies goes to the next incarnation (as `Client.call`
would send it), the ones in flight fail with `CalleeExited`.  No retries.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import zmq

from supervisor_tree.client.errors import CalleeBusy, CalleeExited, CallError, CallTimeout, ClientError
from supervisor_tree.client.target import Target
from supervisor_tree.wire.auth import FrameKey
from supervisor_tree.wire.channel import (
    Caller,
    Malformed,
    PeerBusy,
    PeerUnavailable,
    Replies,
    Reply,
    decode,
    encode_call,
)
from supervisor_tree.wire.dropped import Dropped
from supervisor_tree.wire.endpoints import readable
from supervisor_tree.wire.frames import encode_calls

__all__ = ["Client", "Sender", "call_many", "drain_replies"]

MAX_CALLS_PER_FRAME = 128  # calls pipelined together in one frame at most (a worker answers them one by one)
_DEATH_GRACE_MS = 20  # a dead callee's last replies may still be on their way through our I/O thread
_EXITING_GRACE_S = 1.0  # a callee whose connection closed (it is exiting) is seen dead on its pidfd within this
_NOBLOCK, _POLLIN = int(zmq.NOBLOCK), int(zmq.POLLIN)
_UNSET = object()


def drain_replies(sock: zmq.Socket[bytes], key: FrameKey, dropped: Dropped, answer: Callable[[Reply], None]) -> int:
    """Read every frame waiting on the reply socket `sock` (to Again: its fd is edge-triggered) and give
    each reply, those a coalesced frame carries included, to `answer`.  A frame without the run's tag
    is counted in `dropped`, never read; returns how many other frames (not replies) were thrown away."""
    recv, other = sock.recv, 0
    while True:
        try:
            frame = recv(_NOBLOCK)
        except zmq.Again:
            return other
        reply = decode(key, frame)
        if type(reply) is Reply:
            answer(reply)
        elif type(reply) is Replies:  # a burst's replies, coalesced by the worker
            for one in reply.replies:
                answer(one)
        elif isinstance(reply, Malformed):
            dropped.drop("an unnamed sender (PULL)", reply.kind, reply.reason)
        else:
            other += 1


class Sender(Caller):
    """The Client's Caller, plus sending a frame made elsewhere (a call with another reply address,
    a ref taken here): what `call_many` and `call_async` send through, on the same sockets as
    `call` and `cast`, so that one worker sees one caller's messages in the order they were sent."""

    def take_ref(self) -> int:
        """A fresh ref for a call encoded elsewhere: refs never repeat within one Caller."""
        ref = self._next_ref
        self._next_ref = ref + 1
        return ref

    def send_frame(self, endpoint: str, frame: bytes, alive_fd: int | None) -> None:
        """Send a sealed frame: the hot path (no liveness check: the caller watches the pidfd), then,
        when the socket is new, full or gone, the checked path (PeerBusy / PeerUnavailable as `send_call`)."""
        with self._lock:  # the Flusher thread sends held casts on these sockets too (coalesce.py)
            if self._boxes:  # casts held for any peer leave first, as before any call
                self._flush_others(endpoint)
                box = self._boxes.get(endpoint)
                if box is not None and box.held:
                    self._send(endpoint, frame, alive_fd, True)  # this peer's held casts, then the frame
                    return
            sock = self._peers.get(endpoint)
            if sock is not None:
                try:
                    sock.send(frame, _NOBLOCK)
                    return
                except zmq.Again:
                    pass
            self._send(endpoint, frame, alive_fd, True)


class Client(Protocol):
    """What pipelining needs of a `client.Client` (which imports this module, so it is named here)."""

    run_dir: Path
    ctx: zmq.Context[Any]
    _targets: dict[str, Target]

    @property
    def key(self) -> FrameKey: ...
    @property
    def sender(self) -> Sender: ...
    def _live_target(self, worker_id: str, deadline: float) -> Target: ...
    def _let_go(self, target: Target) -> None: ...
    def _last_exit(self, worker_id: str) -> object: ...
    def _wait_room(self, caller: Caller, target: Target, deadline: float, worker_id: str) -> None: ...
    def clone(self) -> Client: ...
    def close(self) -> None: ...


class _Batch:
    """One `call_many`: the results by position, the calls in flight by ref, their deadlines in send order."""

    def __init__(self, client: Client, worker_id: str, msgs: Sequence[object], timeout: float, window: int) -> None:
        self.client, self.worker_id, self.msgs = client, worker_id, msgs
        self.timeout, self.window = timeout, max(1, window)
        self.results: list[object] = [_UNSET] * len(msgs)
        self.failed: list[int] = []  # positions whose result is the exception the call failed with
        self.inflight: dict[int, int] = {}  # ref -> position
        self.deadlines: deque[tuple[float, int]] = deque()  # (deadline, ref), in send order: one timeout for all
        self.sent = 0
        self.done = 0
        self.target: Target | None = None

    def run(self) -> list[object]:
        sender = self.client.sender
        pull = sender.reply_socket
        while self.done < len(self.msgs):
            if self.sent < len(self.msgs) and len(self.inflight) < self.window:
                self._send_some(sender)
            if not self.inflight:
                continue  # nothing to wait for: the loop sends (or has failed) the rest
            target = self.target
            items: list[tuple[Any, int]] = [(pull, _POLLIN)]
            if target is not None and target.pidfd is not None:
                items.append((target.pidfd, _POLLIN))
            wait_ms = max(0, int((self.deadlines[0][0] - time.monotonic()) * 1000) + 1) if self.deadlines else 1000
            ready = zmq.zmq_poll(items, wait_ms)
            if ready:
                self._read(sender)
                if len(ready) > 1 or (ready[0][0] is not pull):
                    self._callee_died(sender)
            self._expire()
        return self.results

    # -- sending --

    def _send_some(self, sender: Sender) -> None:
        client, msgs, key = self.client, self.msgs, sender.key
        target = self.target
        if target is None:
            try:
                target = self.target = client._live_target(self.worker_id, time.monotonic() + self.timeout)
                target.refuse_messages()
            except ClientError as exc:  # no incarnation to send the rest to: they all fail alike
                self.target = None
                self._fail_unsent(exc)
                return
        mailbox, pidfd, reply_to = target.mailbox, target.pidfd, sender.reply_to
        deadline = time.monotonic() + self.timeout
        while self.sent < len(msgs) and len(self.inflight) < self.window:
            first = self.sent
            chunk = msgs[first : first + min(MAX_CALLS_PER_FRAME, self.window - len(self.inflight))]
            refs = [sender.take_ref() for _ in chunk]
            frame = None
            if len(chunk) > 1 and mailbox not in sender.peer_hwm:  # a bounded mailbox counts messages: one each
                try:
                    frame = encode_calls(key, reply_to, list(zip(refs, chunk, strict=True)))
                except Exception:  # noqa: BLE001 - one of them does not pickle: sent one by one, it fails alone
                    frame = None
            if frame is None:
                chunk, refs = chunk[:1], refs[:1]
                try:
                    frame = encode_call(key, refs[0], reply_to, chunk[0])
                except Exception as exc:  # noqa: BLE001 - a message that does not pickle fails alone
                    self._fail(first, CallError(self.worker_id, f"the message does not pickle: {exc!r}"))
                    self.sent += 1
                    continue
            try:
                sender.send_frame(mailbox, frame, pidfd)
            except PeerBusy:
                if not self.inflight:  # full, and no reply of ours will make room: wait for it
                    self._wait_room(sender, target, deadline)
                return
            except PeerUnavailable:  # its connection is gone: it is exiting; what it owed fails once its pidfd says so
                if target.dead() or (self.inflight and target.pidfd is not None
                                     and readable(target.pidfd, min(_EXITING_GRACE_S, self.timeout))):
                    self._callee_died(sender)  # (nothing would watch its pidfd once let go)
                else:
                    self._let_go()
                return
            for k, ref in enumerate(refs):
                self.inflight[ref] = first + k
                self.deadlines.append((deadline, ref))
            self.sent += len(refs)

    def _wait_room(self, sender: Sender, target: Target, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0 or not sender.wait_writable(target.mailbox, left, target.pidfd):
            if target.dead():
                self._let_go()
                return
            self._fail_unsent(CalleeBusy(f"worker {self.worker_id!r}'s mailbox stayed full (backpressure) past the timeout"))

    def _fail_unsent(self, exc: ClientError) -> None:
        for i in range(self.sent, len(self.msgs)):
            self._fail(i, exc)
        self.sent = len(self.msgs)

    # -- receiving --

    def _read(self, sender: Sender) -> None:
        other = drain_replies(sender.reply_socket, sender.key, sender.dropped, lambda reply: self._answer(sender, reply))
        sender.discarded += other  # after the drain: _answer counts late replies in it too

    def _answer(self, sender: Sender, reply: Reply) -> None:
        i = self.inflight.pop(reply.ref, None)
        if i is None:
            sender.discarded += 1  # a late reply to a call that timed out
        elif reply.ok:
            self._settle(i, reply.value)
        else:
            self._fail(i, CallError(self.worker_id, reply.value))

    def _settle(self, i: int, value: object) -> None:
        self.results[i] = value
        self.done += 1

    def _fail(self, i: int, exc: ClientError) -> None:
        self.failed.append(i)
        self._settle(i, exc)

    def _callee_died(self, sender: Sender) -> None:
        """The callee's pidfd fired: its last replies get a moment, then what it owed fails."""
        target = self.target
        if target is None or not target.dead():
            return
        if sender.reply_socket.poll(_DEATH_GRACE_MS, zmq.POLLIN):
            self._read(sender)
        owed = list(self.inflight.items())
        self._let_go()
        if owed:
            exc = CalleeExited(self.worker_id, target.pid, target.generation, self.client._last_exit(self.worker_id))
            for ref, i in owed:
                del self.inflight[ref]
                self._fail(i, exc)

    def _let_go(self) -> None:
        """The incarnation is gone: the Client forgets it; the next send resolves its successor."""
        target, self.target = self.target, None
        if target is not None:
            if self.client._targets.get(self.worker_id) is target:
                del self.client._targets[self.worker_id]
            self.client._let_go(target)

    def _expire(self) -> None:
        now, deadlines, inflight = time.monotonic(), self.deadlines, self.inflight
        while deadlines and (deadlines[0][1] not in inflight or deadlines[0][0] <= now):
            _, ref = deadlines.popleft()
            i = inflight.pop(ref, None)
            if i is not None:
                self._fail(i, CallTimeout(f"call to worker {self.worker_id!r} timed out after {self.timeout:g}s"))


def call_many(client: Client, worker_id: str, msgs: Sequence[object], *, timeout: float, window: int = 100,
              return_exceptions: bool = False) -> list[Any]:
    """Each message's reply, in the order of `msgs`, with up to `window` calls in flight (see the module docstring).

    A call that failed is its exception in the list with `return_exceptions`; without it, the first failure
    (by position) is raised once every call has been answered or has failed."""
    batch = _Batch(client, worker_id, msgs, timeout, window)
    results = batch.run()
    if batch.failed and not return_exceptions:
        first = results[min(batch.failed)]
        assert isinstance(first, ClientError)
        raise first
    return results
