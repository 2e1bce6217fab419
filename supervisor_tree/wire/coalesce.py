"""Coalescing casts: when a sender casts to one mailbox faster than one frame at a time pays,
the casts that queue up leave as one batch frame (one tag, one ZeroMQ send).

Owns `Outbox` (the casts held for one endpoint), `Flusher` (the thread that sends
what a burst left behind), `CastCoalescing` (the Caller's cast methods) and the
receiving half: `serve_batch` / `unpack_batch`, which a worker's loop hands a batch
frame to.  The Caller (`channel.py`) decides per cast:

* a cast to an endpoint whose last cast left less than `GAP_S` ago (a queue is building
  up: the program casts in a loop) is held in that endpoint's Outbox instead of sent;
* an Outbox leaves as one frame when it holds `MAX_COUNT` casts, before
  any other frame to that endpoint (a call, an info: order per pair is kept), before
  any call at all (a program that casts to A and then calls B finds A's casts sent),
  when the Caller closes, and otherwise when it stops growing: the Flusher looks every
  `LINGER_S` and sends a batch that did not grow since its last look, or that it has
  seen for `MAX_LINGER_S` (while this thread holds the interpreter, the Flusher runs
  at its next switch of threads: <= 5 ms);
* a cast that finds no queue (its predecessor left long ago) goes at once, as a plain
  cast frame: a lone cast pays no latency for any of this.

Casts are pickled when cast (a message the program mutates afterwards arrives as it
was), never at flush; a cast over `MAX_BODY` bytes is never held (it flushes what is
held, then goes alone).  Endpoints with a known `mailbox_limit` (`Caller.peer_hwm`) are
never batched, so that backpressure's high-water mark still counts messages.  A batch
that cannot leave (the mailbox is full) stays held and is retried; the next cast to
that endpoint meets the same backpressure a plain cast does.

Concurrency: the casting thread appends to an Outbox's deque without a lock (a deque's
append and popleft are atomic); everything that takes casts out of it and sends them
(this thread when the box is full or another frame must follow them, the Flusher)
holds the Caller's `_lock` while it pops and sends, so batches leave in order, and a
batch that cannot leave goes back to the front (`extendleft`).

Must not know the byte layout (`frames.encode_batch`), nor open or close sockets.

    box = Outbox(time.monotonic())
    box.held.append(pickle.dumps(("hello", 1)))
    frame, bodies = box.take(key)   # a plain cast frame for one, a batch frame for more
"""

from __future__ import annotations

import logging
import pickle
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import zmq

from supervisor_tree.wire.auth import FrameKey
from supervisor_tree.wire.frames import PROTOCOL, PeerUnavailable, cast_frame, encode_batch, split_batch
from supervisor_tree.wire.shapes import MALFORMED, BadFrame

log = logging.getLogger(__name__)

__all__ = ["FLUSH_LINGER_MS", "CastCoalescing", "BatchServer", "serve_batch", "unpack_batch", "Outbox", "Flusher", "GAP_S", "LINGER_S", "MAX_COUNT", "MAX_BODY"]

GAP_S = 20e-6  # a cast this soon after the previous one to the same endpoint is held: a queue is building up
LINGER_S = 200e-6  # how often the Flusher looks at held batches: one that stopped growing is sent
MAX_LINGER_S = 2e-3  # a batch still growing is sent by the Flusher after this (the caster fills them sooner)
MAX_COUNT = 256  # casts per batch frame (one worker round: see worker.incarnation.BATCH)
MAX_BODY = 1024  # a pickled cast larger than this is never held: a batch frame stays under 256 KiB
_RETRY_MAX_S = 0.1  # a batch that could not leave is retried, backing off up to this
GROWING, STUCK = 1, 2  # what the Flusher's look left behind
FLUSH_LINGER_MS = 200  # a Caller that closes right after a burst: how long its last batch may take to leave
_NOBLOCK = int(zmq.NOBLOCK)
_clock = time.monotonic
_dumps = pickle.dumps
_loads = pickle.loads
_PEER = "a sender (mailbox PULL)"


class Outbox:
    """The casts held for one endpoint, pickled, in cast order; `last`: when a cast last left for it."""

    __slots__ = ("held", "last", "sent", "seen", "since")

    def __init__(self, last: float) -> None:
        self.held: deque[bytes] = deque()
        self.last = last
        self.sent = 0  # frames sent from this box (the Flusher tells a new batch from a growing one)
        self.seen = (0, 0)  # (sent, len(held)) when the Flusher last looked
        self.since = 0.0  # when the Flusher first saw the batch it holds now

    def idle(self, now: float) -> bool:
        """The Flusher's question: has this batch stopped growing (or waited `MAX_LINGER_S`)?  Else it
        remembers what it saw: the casting thread sends a growing batch itself when it is full."""
        seen = (self.sent, len(self.held))
        if seen == self.seen or now - self.since >= MAX_LINGER_S:
            return True
        if seen[0] != self.seen[0] or not self.seen[1]:
            self.since = now
        self.seen = seen
        return False

    def take(self, key: FrameKey, casting: bool = True) -> tuple[bytes, list[bytes]]:
        """Pop what is held now as one frame (a plain cast for one, a batch for more) and the bodies
        (to `give_back` when the frame cannot leave).  The caller holds the Caller's lock.

        `casting`: called by the casting thread itself, the only one that appends, so the
        deque can be copied and cleared at once; the Flusher pops what it takes one by one."""
        held = self.held
        if casting:
            bodies = list(held)
            held.clear()
        else:
            bodies = [held.popleft() for _ in range(len(held))]
        if len(bodies) == 1:
            return cast_frame(key, bodies[0]), bodies
        return encode_batch(key, bodies), bodies

    def give_back(self, bodies: list[bytes]) -> None:
        """A frame made by `take` could not leave: its casts go back in front, in order."""
        self.held.extendleft(reversed(bodies))


class Flusher:
    """A daemon thread that sends held batches once they stop growing (see `Outbox.idle`).

    `flush` is the Caller's: it takes the Caller's lock, sends the idle batches it can
    without blocking, and answers 0 (nothing left), GROWING (look again in LINGER_S) or
    STUCK (a mailbox is full: look again, backing off).  Started on the first held cast;
    `close` stops it (the Caller flushes itself first).
    """

    def __init__(self, flush: Callable[[], int], name: str) -> None:
        self._flush = flush
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """A batch started: send it within LINGER_S unless it leaves sooner."""
        self._wake.set()

    def close(self, timeout: float = 1.0) -> None:
        self._closed = True
        self._wake.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        wait, clear, sleep = self._wake.wait, self._wake.clear, time.sleep
        backoff = LINGER_S
        while True:
            wait()
            if self._closed:
                return
            clear()
            sleep(backoff)
            if self._closed:
                return
            try:
                left = self._flush()
            except Exception:  # e.g. the context was terminated under us: held casts stay held
                log.warning("%s: stopped sending held casts", self._thread.name, exc_info=True)
                return
            if left == STUCK:  # a full mailbox: try again later
                backoff = min(_RETRY_MAX_S, backoff * 2)
            elif left == GROWING:  # the caster is busy filling (and sending) batches: look less often,
                backoff = MAX_LINGER_S  # since each look takes the interpreter from it
            else:
                backoff = LINGER_S
            if left:
                self._wake.set()


class CastCoalescing:
    """The Caller's casts (channel.Caller inherits this): held per endpoint while a queue builds up.

    The Caller's `_send` is its checked send (liveness, connect wait, PeerBusy /
    PeerUnavailable), called with `_lock` held; it sends the endpoint's held casts
    (`_flush_for`) before any other frame.
    """

    key: FrameKey
    reply_to: str
    peer_hwm: dict[str, int]
    _peers: Any  # endpoint -> PUSH socket (the Caller's, LRU-ordered)
    _send: Callable[..., None]

    def _init_coalescing(self) -> None:
        self._lock = threading.RLock()
        self._boxes: dict[str, Outbox] = {}  # endpoint -> casts held for it (made and dropped under the lock)
        self._flusher: Flusher | None = None
        self.batches_sent = 0  # frames that carried more than one cast

    def send_cast(self, endpoint: str, payload: object, *, alive_fd: int | None = None) -> None:
        """Send a cast.  Raises PeerUnavailable if the send would block (OTP drops such casts: callers may).

        A cast that follows another to `endpoint` closely may be held and leave with
        the next ones as one batch frame: its order is kept."""
        body = _dumps(payload, PROTOCOL)
        box = self._boxes.get(endpoint)
        if box is not None:  # the per-message path of a burst, without the lock: a batch under way with room
            held = box.held
            n = len(held)
            if n and n < MAX_COUNT and len(body) <= MAX_BODY:
                held.append(body)
                if len(held) == 1:  # the Flusher took the rest meanwhile: this one starts a batch
                    self._started()
                return
        self._cast(endpoint, body, alive_fd, True)

    def send_cast_unchecked(self, endpoint: str, payload: object) -> None:
        """The cast hot path: no liveness check, no connect wait.  Raises PeerUnavailable
        (without forgetting the socket) when the send would block; the caller then takes
        the checked path (`send_cast` with `alive_fd`), which tells full from gone.  A cast
        sent in the instant a worker dies may be lost, as a cast to a dying process is in OTP."""
        body = _dumps(payload, PROTOCOL)
        box = self._boxes.get(endpoint)
        if box is not None:
            held = box.held
            n = len(held)
            if n and n < MAX_COUNT and len(body) <= MAX_BODY:
                held.append(body)
                if len(held) == 1:
                    self._started()
                return
        elif endpoint not in self._peers:
            raise PeerUnavailable(endpoint)
        self._cast(endpoint, body, None, False)

    def flush_held(self) -> bool:
        """Send every held cast now, without blocking; True when some could not leave (a full mailbox).
        For the thread that casts (the Flusher has its own look: `_flush_idle`)."""
        with self._lock:
            return self._flush_others("")

    def _flush_idle(self) -> int:
        """The Flusher's look: send the batches that stopped growing; 0, GROWING or STUCK (see Flusher)."""
        left = 0
        with self._lock:
            now = _clock()
            for endpoint, box in self._boxes.items():
                if not box.held:
                    continue
                if not box.idle(now):
                    left = max(left, GROWING)
                    continue
                frame, bodies = box.take(self.key, casting=False)
                sock = self._peers.get(endpoint)
                try:
                    if sock is not None:
                        sock.send(frame, _NOBLOCK)
                except zmq.Again:
                    box.give_back(bodies)
                    left = STUCK
                    continue
                box.sent += 1
                self.batches_sent += len(bodies) > 1
        return left

    def _cast(self, endpoint: str, body: bytes, alive_fd: int | None, checked: bool) -> None:
        """The rest of a cast, under the lock: a full box leaves first, a queue starts a box, else send now."""
        with self._lock:
            box = self._boxes.get(endpoint)
            if box is not None:
                if box.held:
                    self._flush_box(endpoint, box, alive_fd, checked)  # raises: `body` not taken
                if len(body) <= MAX_BODY and _clock() - box.last < GAP_S:
                    box.held.append(body)
                    self._started()
                    return
            self._send_now(endpoint, cast_frame(self.key, body), alive_fd, checked)
            if box is not None:
                box.last = _clock()
            elif endpoint not in self.peer_hwm and endpoint in self._peers:  # a mailbox_limit: never batched
                self._boxes[endpoint] = Outbox(_clock())

    def _send_now(self, endpoint: str, frame: bytes, alive_fd: int | None, checked: bool) -> None:
        if checked:
            self._send(endpoint, frame, alive_fd, flushing=True)
            return
        sock = self._peers.get(endpoint)
        if sock is None:
            raise PeerUnavailable(endpoint)
        try:
            sock.send(frame, _NOBLOCK)
        except zmq.Again:
            raise PeerUnavailable(endpoint) from None

    def _started(self) -> None:
        if self._flusher is None:
            with self._lock:
                if self._flusher is None:
                    self._flusher = Flusher(self._flush_idle, f"cast-flusher {self.reply_to}")
        self._flusher.wake()

    def _flush_box(self, endpoint: str, box: Outbox, alive_fd: int | None, checked: bool) -> None:
        """Send what `box` holds as one frame, or raise as a send of it would (the box keeps it).  Under the lock."""
        frame, bodies = box.take(self.key)
        try:
            self._send_now(endpoint, frame, alive_fd, checked)
        except BaseException:
            if self._boxes.get(endpoint) is box:  # not forgotten (gone): full, or not connected yet
                box.give_back(bodies)
            raise
        self.batches_sent += len(bodies) > 1
        box.sent += 1
        box.last = _clock()

    def _flush_for(self, endpoint: str, alive_fd: int | None) -> None:
        """Before another frame to `endpoint`: its held casts leave first (or the send raises).  Under the lock."""
        box = self._boxes[endpoint]
        if box.held:
            self._flush_box(endpoint, box, alive_fd, True)

    def _flush_others(self, endpoint: str) -> bool:
        """Send every held batch but `endpoint`'s without blocking; True if one could not leave.  Under the lock."""
        stuck = False
        for other, box in self._boxes.items():
            if box.held and other != endpoint:
                frame, bodies = box.take(self.key)
                sock = self._peers.get(other)
                try:
                    if sock is not None:
                        sock.send(frame, _NOBLOCK)
                except zmq.Again:
                    box.give_back(bodies)
                    stuck = True  # its mailbox is full: the Flusher retries; the next cast there meets it
                    continue
                box.sent += 1
                self.batches_sent += len(bodies) > 1
        return stuck

    def _drop_box(self, endpoint: str) -> None:
        """`endpoint`'s socket is forgotten (its worker is gone): what was held for it is lost with it."""
        self._boxes.pop(endpoint, None)

    def _drop_boxes(self) -> None:
        self._boxes.clear()

    def _stop_flusher(self) -> set[str]:
        """Closing: what is held leaves now (as far as the mailboxes take it), then the Flusher ends.
        The endpoints casts went to (a batch may have left just now): their sockets close with
        FLUSH_LINGER_MS, not 0, as a plain cast sent just before a close did not need."""
        flushed = set(self._boxes)
        if self._flusher is not None:
            self.flush_held()
            self._flusher.close()
            self._flusher = None
        return flushed


# ---------------------------------------------------------------------------
# Receiving: a worker's loop hands a batch frame here


class _Mailbox(Protocol):
    in_hand: int  # casts of the batch being served that wait their turn (part of the mailbox's depth)

    def put_back(self, frame: bytes) -> None: ...


class BatchServer(Protocol):
    """What `serve_batch` needs of a worker's loop (worker.incarnation.Incarnation)."""

    key: FrameKey
    halt: bool  # set by a handler that stops the worker: the batch's rest waits
    casts: int

    @property
    def box(self) -> _Mailbox | None: ...

    def drop(self, peer: str, kind: str, why: str) -> None: ...


def serve_batch(loop: BatchServer, frame: bytes, end: int, handle_cast: Callable[[object], None]) -> int:
    """Hand the casts of a batch frame (tag checked: `frame[:end]`) to `handle_cast`, in order; how many it took.

    A batch that does not parse is dropped whole and counted (`loop.drop`); a cast in it
    that does not unpickle is dropped and counted, the rest served.  When a handler sets
    `loop.halt`, the casts after it go back in front of the mailbox (`box.put_back`).
    Whatever `handle_cast` raises propagates (the worker crashes, as on a plain cast).
    While it serves, `box.in_hand` says how many of the batch still wait (the depth figure).
    """
    box = loop.box
    assert box is not None
    try:
        bodies = split_batch(frame, end)
    except BadFrame as exc:
        loop.drop(_PEER, exc.kind, exc.reason)
        return 1
    left = len(bodies)
    served = 0
    try:
        for i, body in enumerate(bodies):
            left -= 1
            box.in_hand = left
            try:
                msg = _loads(body)
            except Exception as exc:  # noqa: BLE001 - one bad cast; the rest of the batch is served
                loop.drop(_PEER, MALFORMED, f"cast {i + 1} of a batch of {len(bodies)} does not unpickle: {exc!r}")
                continue
            served += 1
            handle_cast(msg)
            if left and loop.halt:
                box.put_back(encode_batch(loop.key, bodies[i + 1 :]))
                return i + 1
    finally:
        box.in_hand = 0
        loop.casts += served
    return len(bodies)


class _Dropper(Protocol):
    def drop(self, peer: str, kind: str, why: str) -> None: ...


def unpack_batch(loop: _Dropper, frame: bytes, end: int) -> list[object]:
    """The casts of a batch frame, unpickled, in order (the asyncio worker queues them); as `serve_batch`,
    a batch that does not parse is dropped whole and a cast that does not unpickle alone, each counted."""
    try:
        bodies = split_batch(frame, end)
    except BadFrame as exc:
        loop.drop(_PEER, exc.kind, exc.reason)
        return []
    out: list[object] = []
    for i, body in enumerate(bodies):
        try:
            out.append(_loads(body))
        except Exception as exc:  # noqa: BLE001 - one bad cast; the rest of the batch is served
            loop.drop(_PEER, MALFORMED, f"cast {i + 1} of a batch of {len(bodies)} does not unpickle: {exc!r}")
    return out
