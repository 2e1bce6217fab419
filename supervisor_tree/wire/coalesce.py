"""Coalescing casts: when a sender casts to one mailbox faster than one frame at a time pays,
the casts that queue up leave as one batch frame (one tag, one ZeroMQ send).

Owns `Outbox` (the casts held for one endpoint) and `Flusher` (the thread that sends
what a burst left behind).  The Caller (`channel.py`) decides per cast, under its lock:

* a cast to an endpoint whose last cast left less than `GAP_S` ago (a queue is building
  up: the program casts in a loop) is held in that endpoint's Outbox instead of sent;
* an Outbox leaves as one frame when it holds `MAX_COUNT` casts or `MAX_BYTES`, before
  any other frame to that endpoint (a call, an info: order per pair is kept), before
  any call at all (a program that casts to A and then calls B finds A's casts sent),
  when the Caller closes, and otherwise within `LINGER_S` of its first cast (the
  Flusher; under a busy interpreter, at the next switch of threads, <= 5 ms);
* a cast that finds no queue (its predecessor left long ago) goes at once, as a plain
  cast frame: a lone cast pays no latency for any of this.

Casts are pickled when cast (a message the program mutates afterwards arrives as it
was), never at flush.  Endpoints with a known `mailbox_limit` (`Caller.peer_hwm`) are
never batched, so that backpressure's high-water mark still counts messages.  A batch
that cannot leave (the mailbox is full) stays held and is retried; the next cast to
that endpoint meets the same backpressure a plain cast does.

Must not know the byte layout (`frames.encode_batch`), nor open or close sockets.

    box = Outbox()
    box.add(pickle.dumps(("hello", 1)))
    frame = box.frame(key)          # a plain cast frame for one, a batch frame for more
"""

from __future__ import annotations

import pickle
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import zmq

from supervisor_tree.wire.auth import FrameKey
from supervisor_tree.wire.frames import PROTOCOL, PeerUnavailable, encode_batch, split_batch
from supervisor_tree.wire.shapes import MALFORMED, BadFrame

__all__ = ["CastCoalescing", "BatchServer", "serve_batch", "unpack_batch", "Outbox", "Flusher", "GAP_S", "LINGER_S", "MAX_COUNT", "MAX_BYTES"]

GAP_S = 20e-6  # a cast this soon after the previous one to the same endpoint is held: a queue is building up
LINGER_S = 200e-6  # how long a held batch may wait for more casts before the Flusher sends it
MAX_COUNT = 256  # casts per batch frame (one worker round: see worker.incarnation.BATCH)
MAX_BYTES = 64 * 1024  # pickled bytes per batch frame
_RETRY_MAX_S = 0.1  # a batch that could not leave is retried, backing off up to this
_NOBLOCK = int(zmq.NOBLOCK)
_clock = time.monotonic
_dumps = pickle.dumps
_loads = pickle.loads
_PEER = "a sender (mailbox PULL)"


class Outbox:
    """The casts held for one endpoint, pickled, in cast order; `last`: when a cast last left for it."""

    __slots__ = ("bodies", "size", "last")

    def __init__(self, last: float) -> None:
        self.bodies: list[bytes] = []
        self.size = 0
        self.last = last

    def add(self, body: bytes) -> int:
        """Hold one pickled cast; returns how many are held now."""
        self.bodies.append(body)
        self.size += len(body)
        return len(self.bodies)

    def full(self) -> bool:
        return len(self.bodies) >= MAX_COUNT or self.size >= MAX_BYTES

    def frame(self, key: FrameKey) -> bytes:
        """What is held, as one frame: a plain cast for one, a batch for more."""
        bodies = self.bodies
        if len(bodies) == 1:
            return key.seal(b"S" + bodies[0])
        return encode_batch(key, bodies)

    def clear(self, now: float) -> None:
        self.bodies = []
        self.size = 0
        self.last = now


class Flusher:
    """A daemon thread that sends held batches `LINGER_S` after they started.

    `flush` is the Caller's: it takes the Caller's lock, sends what it can without
    blocking, and returns whether something could not leave (then retried, backing off).
    Started on the first held cast; `close` stops it (the Caller flushes itself first).
    """

    def __init__(self, flush: Callable[[], bool], name: str) -> None:
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
            if self._flush():  # something could not leave (a full mailbox): try again later
                backoff = min(_RETRY_MAX_S, backoff * 2)
                self._wake.set()
            else:
                backoff = LINGER_S


class CastCoalescing:
    """The Caller's casts (channel.Caller inherits this): held per endpoint while a queue builds up.

    Every method here runs with `_lock` held (or takes it); the Caller's `_send` is its
    checked send (liveness, connect wait, PeerBusy / PeerUnavailable) and flushes the
    endpoint's held casts before any other frame.
    """

    key: FrameKey
    reply_to: str
    peer_hwm: dict[str, int]
    _peers: Any  # endpoint -> PUSH socket (the Caller's, LRU-ordered)
    _seal: Callable[[bytes], bytes]
    _send: Callable[..., None]

    def _init_coalescing(self) -> None:
        self._lock = threading.RLock()
        self._boxes: dict[str, Outbox] = {}  # endpoint -> casts held for it
        self._held = 0  # boxes holding casts
        self._flusher: Flusher | None = None
        self.batches_sent = 0  # frames that carried more than one cast

    def send_cast(self, endpoint: str, payload: object, *, alive_fd: int | None = None) -> None:
        """Send a cast.  Raises PeerUnavailable if the send would block (OTP drops such casts: callers may).

        A cast that follows another to `endpoint` closely may be held and leave with
        the next ones as one batch frame: its order is kept."""
        self._cast(endpoint, _dumps(payload, PROTOCOL), alive_fd, True)

    def send_cast_unchecked(self, endpoint: str, payload: object) -> None:
        """The cast hot path: no liveness check, no connect wait.  Raises PeerUnavailable
        (without forgetting the socket) when the send would block; the caller then takes
        the checked path (`send_cast` with `alive_fd`), which tells full from gone.  A cast
        sent in the instant a worker dies may be lost, as a cast to a dying process is in OTP."""
        if endpoint not in self._peers:
            raise PeerUnavailable(endpoint)
        self._cast(endpoint, _dumps(payload, PROTOCOL), None, False)

    def flush_held(self) -> bool:
        """Send every held cast now, without blocking; True when some could not leave (a full mailbox)."""
        with self._lock:
            return bool(self._held) and self._flush_others("")

    def _cast(self, endpoint: str, body: bytes, alive_fd: int | None, checked: bool) -> None:
        """Hold `body` when a queue builds up for `endpoint`, else send it now."""
        with self._lock:
            box = self._boxes.get(endpoint)
            if box is not None:
                if box.bodies:  # inline Outbox.add / full: this is the per-message path of a burst
                    if len(box.bodies) >= MAX_COUNT or box.size >= MAX_BYTES:
                        self._flush_box(endpoint, box, alive_fd, checked)  # raises: `body` not taken
                    bodies = box.bodies
                    bodies.append(body)
                    box.size += len(body)
                    if len(bodies) == 1:
                        self._started()
                    return
                if _clock() - box.last < GAP_S:
                    box.add(body)
                    self._started()
                    return
            self._send_now(endpoint, self._seal(b"S" + body), alive_fd, checked)
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
        self._held += 1
        if self._flusher is None:
            self._flusher = Flusher(self.flush_held, f"cast-flusher {self.reply_to}")
        self._flusher.wake()

    def _flush_box(self, endpoint: str, box: Outbox, alive_fd: int | None, checked: bool) -> None:
        """Send what `box` holds as one frame, or raise as a send of it would (the box keeps it)."""
        self._send_now(endpoint, box.frame(self.key), alive_fd, checked)
        self.batches_sent += len(box.bodies) > 1
        box.clear(_clock())
        self._held -= 1

    def _flush_for(self, endpoint: str, alive_fd: int | None) -> None:
        """Before another frame to `endpoint`: its held casts leave first (or the send raises)."""
        box = self._boxes[endpoint]
        if box.bodies:
            self._flush_box(endpoint, box, alive_fd, True)

    def _flush_others(self, endpoint: str) -> bool:
        """Send every held batch but `endpoint`'s without blocking; True if one could not leave."""
        stuck = False
        for other, box in self._boxes.items():
            if box.bodies and other != endpoint:
                sock = self._peers.get(other)
                try:
                    if sock is not None:
                        sock.send(box.frame(self.key), _NOBLOCK)
                except zmq.Again:
                    stuck = True  # its mailbox is full: the Flusher retries; the next cast there meets it
                    continue
                self.batches_sent += len(box.bodies) > 1
                box.clear(_clock())
                self._held -= 1
        return stuck

    def _drop_box(self, endpoint: str) -> None:
        """`endpoint`'s socket is forgotten (its worker is gone): what was held for it is lost with it."""
        box = self._boxes.pop(endpoint, None)
        if box is not None and box.bodies:
            self._held -= 1

    def _drop_boxes(self) -> None:
        self._boxes.clear()
        self._held = 0

    def _stop_flusher(self) -> None:
        """Closing: what is held leaves now (as far as the mailboxes take it), then the Flusher ends."""
        if self._flusher is not None:
            self.flush_held()
            self._flusher.close()
            self._flusher = None


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
    try:
        for i, body in enumerate(bodies):
            left -= 1
            box.in_hand = left
            try:
                msg = _loads(body)
            except Exception as exc:  # noqa: BLE001 - one bad cast; the rest of the batch is served
                loop.drop(_PEER, MALFORMED, f"cast {i + 1} of a batch of {len(bodies)} does not unpickle: {exc!r}")
                continue
            loop.casts += 1
            handle_cast(msg)
            if loop.halt and left:
                box.put_back(encode_batch(loop.key, bodies[i + 1 :]))
                return i + 1
    finally:
        box.in_hand = 0
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
