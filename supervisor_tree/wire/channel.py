"""Channels: the sockets that carry frames, the worker's cached reply sockets, the client's call primitive.

The byte layout of a frame is `frames.py`'s; this module re-exports its names so
that `channel.encode_call(...)`, `channel.decode(...)` read as before at every call
site.  Must not fork, signal or decide anything about supervision.

    with Caller(ctx, run_dir + "/w", auth.key_for(run_dir)) as caller:
        value = caller.call("ipc:///run/w/counter-1.mbx", ("add", 1))
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import time
from collections.abc import Iterable
from typing import Any, cast

import zmq

from supervisor_tree.wire import curve
from supervisor_tree.wire.auth import FrameKey
from supervisor_tree.wire.coalesce import FLUSH_LINGER_MS, CastCoalescing
from supervisor_tree.wire.dropped import Dropped
from supervisor_tree.wire.endpoints import (
    IPC_PATH_MAX,
    bind,
    check_endpoint,
    connect,
    ipc_path,
    make_socket,
    move_bind,
    readable,
    unlink_ipc,
)
from supervisor_tree.wire.frames import (
    _CALL_HEAD,
    BATCH,
    CALL,
    CAST,
    INFO,
    NOTICES,
    PROTOCOL,
    REPLY,
    Call,
    Cast,
    Frame,
    Info,
    Malformed,
    PeerBusy,
    PeerUnavailable,
    RemoteCallError,
    RemoteError,
    Replies,
    Reply,
    _dumps,
    decode,
    decode_notice,
    encode_batch,
    encode_call,
    encode_cast,
    encode_info,
    encode_notice,
    encode_replies,
    encode_reply,
    loads_payload,
    reply_frame,
    split_batch,
    split_call,
)
from supervisor_tree.wire.shapes import BadFrame

log = logging.getLogger(__name__)

__all__ = [
    "BATCH", "CALL", "CAST", "INFO", "REPLY", "NOTICES", "PROTOCOL", "Call", "Cast", "Frame", "Info", "Malformed", "Replies",
    "Reply", "PeerBusy", "PeerUnavailable", "RemoteCallError", "RemoteError", "BadFrame", "FrameKey",
    "decode", "decode_notice", "encode_batch", "encode_call", "encode_cast", "encode_info", "encode_notice", "encode_replies",
    "encode_reply", "loads_payload", "reply_frame", "split_batch", "split_call",
    "IPC_PATH_MAX", "readable", "ipc_path", "check_endpoint", "make_socket", "bind", "connect", "move_bind", "unlink_ipc",
    "ReplySender", "Caller",
]


# ---------------------------------------------------------------------------
# Worker side: reply sockets


class ReplySender:
    """The worker's PUSH socket per reply address, LRU-bounded.

    Never blocks the worker: a reply that cannot be queued (the caller is gone and
    the queue is full) is dropped, counted in `dropped` and logged (the 1st, 10th,
    100th, ... drop).  Not thread-safe: the worker's main thread owns it.
    """

    def __init__(self, ctx: zmq.Context[Any], max_sockets: int = 256, sndhwm: int = 100_000,
                 spare: zmq.Socket[bytes] | None = None) -> None:
        self._ctx = ctx
        self._max = max_sockets
        self._sndhwm = sndhwm
        self._socks: collections.OrderedDict[bytes, zmq.Socket[bytes]] = collections.OrderedDict()
        self._spare = spare  # made ahead with `sndhwm` (`make_socket`, e.g. by a standby): the first address's
        self.dropped = 0

    @staticmethod
    def make_socket(ctx: zmq.Context[Any], sndhwm: int = 100_000) -> zmq.Socket[bytes]:
        """A reply socket, not connected yet."""
        return make_socket(ctx, zmq.PUSH, sndhwm=sndhwm)

    def send(self, reply_to: bytes, frame: bytes) -> bool:
        """Queue `frame` for `reply_to` (utf-8 endpoint); False when it was dropped."""
        sock = self._socks.get(reply_to)
        if sock is None:
            sock = self._open(reply_to)
            if sock is None:
                return self._drop(reply_to, "its address is not a valid endpoint")
        else:
            self._socks.move_to_end(reply_to)
        try:
            sock.send(frame, zmq.NOBLOCK)
        except zmq.Again:
            return self._drop(reply_to, "its queue is full (is the caller gone?)")
        return True

    def _open(self, reply_to: bytes) -> zmq.Socket[bytes] | None:
        try:
            endpoint = reply_to.decode()
            sock, self._spare = self._spare or self.make_socket(self._ctx, self._sndhwm), None
        except (UnicodeDecodeError, zmq.ZMQError):
            return None
        try:
            connect(sock, endpoint)
        except (ValueError, zmq.ZMQError):
            sock.close(0)
            return None
        if len(self._socks) >= self._max:
            _, old = self._socks.popitem(last=False)
            old.close(0)
        self._socks[reply_to] = sock
        return sock

    def _drop(self, reply_to: bytes, why: str) -> bool:
        self.dropped += 1
        if _is_power_of_ten(self.dropped):
            log.warning("dropped a reply to %r: %s (%d replies dropped so far)", reply_to, why, self.dropped)
        return False

    def close(self, linger: int = 0) -> None:
        for sock in self._socks.values():
            sock.close(linger)
        self._socks.clear()
        if self._spare is not None:
            self._spare.close(0)
            self._spare = None


def _is_power_of_ten(n: int) -> bool:
    while n % 10 == 0:
        n //= 10
    return n == 1


# ---------------------------------------------------------------------------
# Client side: the call primitive

_caller_seq = itertools.count()
_DEATH_GRACE_MS = 20
_EVENTS, _POLLOUT, _POLLIN, _NOBLOCK = int(zmq.EVENTS), int(zmq.POLLOUT), int(zmq.POLLIN), int(zmq.NOBLOCK)  # plain ints: enum arithmetic costs µs per send  # see Caller.wait_reply


class Caller(CastCoalescing):
    """Send calls and casts to mailbox endpoints and wait for replies.

    Owns one PULL socket bound at ``ipc://{directory}/c-{pid}-{n}`` (its reply
    address) and one PUSH socket per destination endpoint, with ZMQ_IMMEDIATE so
    that a send to a worker that died fails at once (`PeerUnavailable`) instead of
    queueing for nobody.  Refs count up per Caller; a reply to another ref (a late
    answer to a call that timed out) is discarded, as is any frame without `key`'s
    tag (counted in `dropped`, logged at most once a second).

    Casts that queue up for one endpoint leave as batch frames (coalesce.py), sent by
    this thread or, for the tail of a burst, by the Caller's Flusher thread.

    Not thread-safe: use one Caller per thread.

        caller = Caller(ctx, "/run/tree/w", key)
        reply = caller.call("ipc:///run/tree/w/counter-1.mbx", ("add", 2), timeout=1.0)
    """

    def __init__(self, ctx: zmq.Context[Any], directory: str, key: FrameKey, *, max_peers: int = 256,
                 connect_timeout: float = 0.5) -> None:
        self._ctx = ctx
        self.key = key
        self._seal = key.seal
        self._pull = make_socket(ctx, zmq.PULL, rcvhwm=100_000)  # `directory` may be tcp://HOST (CURVE, a free port)
        at = f"{directory}:*" if curve.is_tcp(directory) else f"ipc://{directory}/c-{os.getpid()}-{next(_caller_seq)}"
        self.reply_to = bind(self._pull, at)
        self._reply_to = self.reply_to.encode()
        self._peers: collections.OrderedDict[str, zmq.Socket[bytes]] = collections.OrderedDict()
        self._fresh: set[str] = set()  # peers not yet seen connected
        self._max_peers = max_peers
        self._connect_timeout = connect_timeout
        self._next_ref = 1
        self.discarded = 0  # late replies thrown away
        self.dropped = Dropped(log, f"replies at {self.reply_to}")  # frames not acted on: no tag, bad layout
        self.peer_hwm: dict[str, int] = {}  # endpoint -> send high-water mark, where not the default (a mailbox_limit)
        self._init_coalescing()  # its lock guards the peer sockets: this thread's sends and its Flusher's

    # -- sending (every use of a peer socket holds `_lock`; casts: coalesce.CastCoalescing) --

    def send_call(self, endpoint: str, payload: object, *, alive_fd: int | None = None) -> int:
        """Send a call; returns its ref.  Raises PeerUnavailable if the send would block.

        `alive_fd`: the callee's pidfd.  When it is already readable (the callee
        died) the call is not sent: PeerUnavailable.  Without it, a call sent in the
        instant after the callee died can still go down its closing connection.  Held casts leave first.
        """
        ref = self._next_ref
        self._next_ref = ref + 1
        rt = self._reply_to
        frame = self._seal(b"C" + _CALL_HEAD.pack(ref, len(rt)) + rt + _dumps(payload, PROTOCOL))
        with self._lock:
            if self._boxes:
                self._flush_others(endpoint)
            self._send(endpoint, frame, alive_fd, True)
        return ref

    def send_info(self, endpoint: str, payload: object, *, alive_fd: int | None = None) -> None:
        frame = self._seal(b"I" + _dumps(payload, PROTOCOL))
        with self._lock:
            self._send(endpoint, frame, alive_fd)

    def _send(self, endpoint: str, frame: bytes, alive_fd: int | None = None, check_pipe: bool = False,
              flushing: bool = False) -> None:
        """Send `frame` (after the casts held for `endpoint`, unless `flushing` them); the caller holds `_lock`."""
        if not flushing and endpoint in self._boxes:
            self._flush_for(endpoint, alive_fd)
        if alive_fd is not None and readable(alive_fd):
            self._forget(endpoint)
            raise PeerUnavailable(endpoint)
        sock = self._peers.get(endpoint)
        if sock is None:
            sock = self._open(endpoint)
        elif (check_pipe or alive_fd is None) and not cast(int, sock.getsockopt(_EVENTS)) & _POLLOUT:
            # Reading ZMQ_EVENTS makes libzmq process its pending commands now (send()
            # does so only about once a millisecond): a peer that died is seen here,
            # instead of the message going down its dying pipe.
            self._forget(endpoint)
            raise PeerUnavailable(endpoint)
        try:
            sock.send(frame, zmq.NOBLOCK)
            return
        except zmq.Again:
            pass
        # A new connection is attached by the I/O thread shortly after connect();
        # until then ZMQ_IMMEDIATE refuses to queue.  Wait for it once per peer.
        if endpoint in self._fresh and sock.poll(int(self._connect_timeout * 1000), zmq.POLLOUT):
            self._fresh.discard(endpoint)
            try:
                sock.send(frame, zmq.NOBLOCK)
                return
            except zmq.Again:
                pass
        if alive_fd is not None and not readable(alive_fd):
            raise PeerBusy(endpoint)  # alive: its mailbox is full; keep the socket and what it queued
        self._forget(endpoint)
        raise PeerUnavailable(endpoint)

    def wait_writable(self, endpoint: str, timeout: float, alive_fd: int | None = None) -> bool:
        """Wait until `endpoint`'s mailbox has room (True) or the peer died / time ran out (False)."""
        with self._lock:
            sock = self._peers.get(endpoint)
            if sock is None:
                return False
            items: list[tuple[Any, int]] = [(sock, zmq.POLLOUT)]
            if alive_fd is not None:
                items.append((alive_fd, zmq.POLLIN))
            ready = dict(zmq.zmq_poll(items, max(0, int(timeout * 1000))))
        return sock in ready and not (alive_fd is not None and alive_fd in ready)

    def _open(self, endpoint: str) -> zmq.Socket[bytes]:
        sock = make_socket(self._ctx, zmq.PUSH, immediate=1, sndhwm=self.peer_hwm.get(endpoint, 100_000))
        try:
            connect(sock, endpoint)
        except BaseException:
            sock.close(0)
            raise
        if len(self._peers) >= self._max_peers:
            old_endpoint, _ = next(iter(self._peers.items()))
            self._forget(old_endpoint)
        self._peers[endpoint] = sock
        self._fresh.add(endpoint)
        return sock

    def forget(self, endpoint: str) -> None:
        """Close the socket to `endpoint` (its worker is gone); the casts held for it are dropped with it."""
        with self._lock:
            self._forget(endpoint)

    def _forget(self, endpoint: str) -> None:
        sock = self._peers.pop(endpoint, None)
        self._fresh.discard(endpoint)
        self.peer_hwm.pop(endpoint, None)
        self._drop_box(endpoint)
        if sock is not None:
            sock.close(0)

    # -- receiving --

    @property
    def reply_socket(self) -> zmq.Socket[bytes]:
        """The PULL socket replies arrive on: for a caller that waits on its fd itself (asyncio)."""
        return self._pull

    def wait_reply(self, ref: int, timeout: float | None, extra_poll_fds: Iterable[int] = ()) -> Reply | int:
        """The reply to `ref`, or the first fd of `extra_poll_fds` that became readable.

        Raises TimeoutError after `timeout` seconds (None: wait forever).  Replies to
        other refs are discarded.
        """
        pull = self._pull
        items: list[tuple[Any, int]] = [(pull, _POLLIN)]
        for fd in extra_poll_fds:
            items.append((fd, _POLLIN))
        if timeout is None:
            deadline, wait_ms = None, -1
        else:
            if timeout <= 0:
                raise TimeoutError(f"no reply to call {ref} within {timeout} s")
            deadline, wait_ms = time.monotonic() + timeout, max(1, int(timeout * 1000 + 0.999))
        poll = zmq.zmq_poll
        while True:
            dead_fd: int | None = None
            for sock, _ in poll(items, wait_ms):
                if sock is pull:
                    reply = self._drain(ref)
                    if reply is not None:
                        return reply
                elif dead_fd is None and isinstance(sock, int):
                    dead_fd = sock
            if dead_fd is not None:
                # The callee may have answered just before it exited: its last reply can
                # still be on its way through our I/O thread.  Give it a moment.
                if pull.poll(_DEATH_GRACE_MS, zmq.POLLIN):
                    reply = self._drain(ref)
                    if reply is not None:
                        return reply
                return dead_fd
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no reply to call {ref} within {timeout} s")
                wait_ms = max(1, int(left * 1000 + 0.999))

    def _drain(self, ref: int) -> Reply | None:
        recv, key = self._pull.recv, self.key
        while True:
            try:
                frame = recv(zmq.NOBLOCK)
            except zmq.Again:
                return None
            reply = decode(key, frame)
            if isinstance(reply, Reply) and reply.ref == ref:
                return reply
            if isinstance(reply, Replies):  # a worker coalesced a burst's replies: ours may be among them
                mine = [r for r in reply.replies if r.ref == ref]
                self.discarded += len(reply.replies) - len(mine)
                if mine:
                    return mine[0]
                continue
            self._discard(reply)

    def _discard(self, frame: Frame) -> None:
        if isinstance(frame, Malformed):
            self.dropped.drop("an unnamed sender (PULL)", frame.kind, frame.reason)
        else:
            self.discarded += 1

    def call(self, endpoint: str, payload: object, timeout: float | None = 5.0) -> object:
        """Send a call and wait: the value, or raise RemoteCallError / TimeoutError / PeerUnavailable."""
        ref = self.send_call(endpoint, payload)
        reply = self.wait_reply(ref, timeout)
        assert isinstance(reply, Reply)
        return reply.unwrap()

    def close(self) -> None:
        flushed = self._stop_flusher()  # casts held until now get up to FLUSH_LINGER_MS to leave
        with self._lock:
            for endpoint, sock in self._peers.items():
                sock.close(FLUSH_LINGER_MS if endpoint in flushed else 0)
            self._peers.clear()
            self._fresh.clear()
            self._drop_boxes()
        if not self._pull.closed:
            self._pull.close(0)
            unlink_ipc(self.reply_to)

    def __enter__(self) -> Caller:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
