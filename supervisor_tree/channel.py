"""Channels: the wire format of a message and the sockets that carry it.

Owns the four frames of docs/internals.md (call, cast, info, reply), payload
serialization (pickle protocol 5, never cloudpickle on the message path), the
worker's cached reply sockets and the client's call primitive.  No other module
knows the byte layout of a frame.  Must not fork, signal or decide anything about
supervision.

    >>> frame = encode_call(7, "ipc:///run/c-1-0", ("add", 2))
    >>> call = decode(frame)
    >>> call.ref, call.reply_to, loads_payload(call.payload)
    (7, 'ipc:///run/c-1-0', ('add', 2))
    >>> decode(encode_reply(7, True, 3))
    Reply(ref=7, ok=True, value=3)

Frames, one ZeroMQ frame per message:

* call:  ``b"C" + ref (u64 LE) + len(reply_to) (u16 LE) + reply_to (utf-8) + pickle(payload)``
* cast:  ``b"S" + pickle(payload)``
* info:  ``b"I" + pickle(payload)``
* reply: ``b"R" + ref (u64 LE) + b"\\x00" ok | b"\\x01" error + pickle(value or RemoteError)``

Notices a worker sends to the node's inbound socket (("ready", id, gen, pid),
("hb", id, gen, pid, stats), ...) are a bare pickled tuple: `encode_notice` /
`decode_notice` (no kind byte: that socket carries nothing else).
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import pickle
import select
import struct
import time
import traceback
from dataclasses import dataclass
from typing import Any, Iterable, Union

import zmq

log = logging.getLogger(__name__)

PROTOCOL = 5
IPC_PATH_MAX = 107  # Linux: sizeof(sockaddr_un.sun_path) - 1

# First byte of each frame, as ints: frame[0] of a bytes object is an int.
CALL, CAST, INFO, REPLY = b"CSIR"
_CALL_HEAD = struct.Struct("<QH")  # ref, len(reply_to)
_CALL_BODY = 1 + _CALL_HEAD.size  # offset of reply_to
_REF = struct.Struct("<Q")
_OK, _ERR = b"\x00", b"\x01"

_dumps = pickle.dumps
_loads = pickle.loads


# ---------------------------------------------------------------------------
# Decoded frames


@dataclass(frozen=True, slots=True)
class Call:
    """A request that wants a reply.  `payload` stays pickled: see `loads_payload`."""

    ref: int
    reply_to: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Cast:
    payload: object


@dataclass(frozen=True, slots=True)
class Info:
    payload: object


@dataclass(frozen=True, slots=True)
class Reply:
    """An answer to call `ref`: `value` is the handler's result when `ok`, else a `RemoteError`."""

    ref: int
    ok: bool
    value: object

    def unwrap(self) -> object:
        """The value, or raise `RemoteCallError` when the call failed."""
        if self.ok:
            return self.value
        err = self.value
        if not isinstance(err, RemoteError):
            err = RemoteError("RemoteError", repr(err), "")
        raise RemoteCallError(err)


@dataclass(frozen=True, slots=True)
class Malformed:
    """A frame that does not decode; `head` is its first bytes, for the log line."""

    reason: str
    head: bytes


Frame = Union[Call, Cast, Info, Reply, Malformed]


@dataclass(frozen=True, slots=True)
class RemoteError:
    """Why a call failed on the other side, as a picklable record (never the exception itself)."""

    type: str
    message: str
    traceback: str = ""

    @classmethod
    def from_exception(cls, exc: BaseException) -> RemoteError:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return cls(type(exc).__name__, str(exc), tb)

    def __str__(self) -> str:
        return f"{self.type}: {self.message}" if self.message else self.type


class RemoteCallError(Exception):
    """Raised by `Reply.unwrap` / `Caller.call` when the callee answered with an error."""

    def __init__(self, error: RemoteError) -> None:
        super().__init__(str(error))
        self.error = error


class PeerUnavailable(Exception):
    """A send to `endpoint` would block: nobody is listening there (the worker is gone) or its queue is full."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(
            f"cannot send to {endpoint} without blocking: the worker is gone or its mailbox is full"
        )
        self.endpoint = endpoint


class PeerBusy(PeerUnavailable):
    """The worker is alive (its pidfd says so) but its mailbox is full: wait for room, don't give up on it."""


# ---------------------------------------------------------------------------
# Encoding


def encode_call(ref: int, reply_to: str, payload: object) -> bytes:
    rt = reply_to.encode()
    return b"C" + _CALL_HEAD.pack(ref, len(rt)) + rt + _dumps(payload, PROTOCOL)


def encode_cast(payload: object) -> bytes:
    return b"S" + _dumps(payload, PROTOCOL)


def encode_info(payload: object) -> bytes:
    return b"I" + _dumps(payload, PROTOCOL)


def encode_notice(notice: tuple[object, ...]) -> bytes:
    """A worker's notice to the node's inbound socket: ("ready", id, gen, pid), ("hb", ...), ..."""
    return _dumps(notice, PROTOCOL)


def decode_notice(frame: bytes) -> tuple[object, ...]:
    """The notice in `frame`; raises ValueError when it is not a pickled tuple with a str kind."""
    try:
        notice = _loads(frame)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad frame
        raise ValueError(f"undecodable notice of {len(frame)} bytes: {type(exc).__name__}: {exc}") from None
    if not (isinstance(notice, tuple) and notice and isinstance(notice[0], str)):
        raise ValueError(f"a notice must be a tuple starting with its kind; got {type(notice).__name__}")
    return notice


def encode_reply(ref: int, ok: bool, value: object) -> bytes:
    return reply_frame(_REF.pack(ref), ok, value)


def reply_frame(ref8: bytes, ok: bool, value: object) -> bytes:
    """A reply to the call whose raw 8-byte ref is `ref8` (the worker's fast path, see `split_call`)."""
    return b"R" + ref8 + (_OK if ok else _ERR) + _dumps(value, PROTOCOL)


# ---------------------------------------------------------------------------
# Decoding


def split_call(frame: bytes) -> tuple[bytes, bytes, memoryview]:
    """(raw ref, reply_to as utf-8 bytes, pickled payload) of a call frame; ValueError if truncated.

    The worker's hot path: no dataclass, no decode of the reply address.
    """
    if len(frame) < _CALL_BODY:
        raise ValueError(f"call frame of {len(frame)} bytes is shorter than its header")
    (n,) = struct.unpack_from("<H", frame, 9)
    end = _CALL_BODY + n
    if n == 0 or len(frame) < end:
        raise ValueError("call frame without a complete reply address")
    return frame[1:9], frame[_CALL_BODY:end], memoryview(frame)[end:]


def loads_payload(payload: bytes | memoryview) -> object:
    """Unpickle a call payload; raises whatever pickle raises on bad bytes."""
    return _loads(payload)


def decode(frame: bytes) -> Frame:
    """Decode one frame.  Never raises: a frame that does not decode is `Malformed`.

    A call keeps its payload pickled so that a payload which does not unpickle can
    still be answered (its header is readable).
    """
    if not frame:
        return Malformed("empty frame", b"")
    kind = frame[0]
    try:
        if kind == CALL:
            ref8, rt, payload = split_call(frame)
            return Call(_REF.unpack(ref8)[0], rt.decode(), bytes(payload))
        if kind == CAST:
            return Cast(_loads(memoryview(frame)[1:]))
        if kind == INFO:
            return Info(_loads(memoryview(frame)[1:]))
        if kind == REPLY:
            return _decode_reply(frame)
    except Exception as exc:  # noqa: BLE001 - any decoding failure is a malformed frame
        return Malformed(f"{chr(kind)!r} frame does not decode: {type(exc).__name__}: {exc}", frame[:32])
    return Malformed(f"unknown frame kind {bytes([kind])!r}", frame[:32])


def _decode_reply(frame: bytes) -> Frame:
    if len(frame) < 10 or frame[9:10] not in (_OK, _ERR):
        return Malformed("reply frame with a truncated header", frame[:32])
    ref = _REF.unpack_from(frame, 1)[0]
    ok = frame[9:10] == _OK
    try:
        value = _loads(memoryview(frame)[10:])
    except Exception as exc:  # noqa: BLE001 - the caller still deserves an answer for its ref
        return Reply(ref, False, RemoteError("MalformedReply", f"reply value does not unpickle: {exc!r}"))
    return Reply(ref, ok, value)


# ---------------------------------------------------------------------------
# Sockets


def ipc_path(endpoint: str) -> str | None:
    """The filesystem path of an ipc:// endpoint, None for other transports."""
    return endpoint[len("ipc://") :] if endpoint.startswith("ipc://") else None


def check_endpoint(endpoint: str) -> str:
    """Return `endpoint`, or raise ValueError when its ipc path is longer than Linux allows."""
    path = ipc_path(endpoint)
    if path is not None and len(path.encode()) > IPC_PATH_MAX:
        raise ValueError(
            f"ipc path is {len(path.encode())} bytes, over Linux's limit of {IPC_PATH_MAX} for a "
            f"unix socket: {path}; use a shorter --run-dir (e.g. under /tmp)"
        )
    return endpoint


def make_socket(ctx: zmq.Context[Any], kind: int, **options: int) -> zmq.Socket[bytes]:
    """A socket with linger 0 (closing never blocks) plus `options` (names of zmq constants)."""
    sock: zmq.Socket[bytes] = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    for name, value in options.items():
        sock.setsockopt(getattr(zmq, name.upper()), value)
    return sock


def bind(sock: zmq.Socket[bytes], endpoint: str) -> None:
    sock.bind(check_endpoint(endpoint))


def connect(sock: zmq.Socket[bytes], endpoint: str) -> None:
    sock.connect(check_endpoint(endpoint))


def move_bind(bound: str, endpoint: str) -> bool:
    """Make a socket bound at `bound` reachable at `endpoint` instead, without a new bind.

    Works for ipc:// endpoints on one filesystem: a unix socket is found by the
    name of its file, and rename(2) moves that name atomically (a standby binds
    early under a name of its own and takes its worker's name when activated;
    binding costs 0.1-0.3 ms on ext4).  False when it cannot be done: other
    transports, or another filesystem; then bind the endpoint afresh.
    """
    src, dst = ipc_path(bound), ipc_path(endpoint)
    if src is None or dst is None:
        return False
    check_endpoint(endpoint)
    try:
        os.rename(src, dst)
    except OSError:
        return False
    return True


def unlink_ipc(endpoint: str) -> None:
    """Remove an ipc endpoint's socket file (libzmq 4.3 leaves it behind when the socket closes)."""
    path = ipc_path(endpoint)
    if path:
        try:
            os.unlink(path)
        except OSError:
            pass


# ---------------------------------------------------------------------------
# Worker side: reply sockets


class ReplySender:
    """The worker's PUSH socket per reply address, LRU-bounded.

    Never blocks the worker: a reply that cannot be queued (the caller is gone and
    the queue is full) is dropped, counted in `dropped` and logged (the 1st, 10th,
    100th, ... drop).  Not thread-safe: the worker's main thread owns it.
    """

    def __init__(self, ctx: zmq.Context[Any], max_sockets: int = 256, sndhwm: int = 100_000) -> None:
        self._ctx = ctx
        self._max = max_sockets
        self._sndhwm = sndhwm
        self._socks: collections.OrderedDict[bytes, zmq.Socket[bytes]] = collections.OrderedDict()
        self.dropped = 0

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
            sock = make_socket(self._ctx, zmq.PUSH, sndhwm=self._sndhwm)
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


def _is_power_of_ten(n: int) -> bool:
    while n % 10 == 0:
        n //= 10
    return n == 1


# ---------------------------------------------------------------------------
# Client side: the call primitive

_caller_seq = itertools.count()
_DEATH_GRACE_MS = 20
_EVENTS, _POLLOUT, _NOBLOCK = int(zmq.EVENTS), int(zmq.POLLOUT), int(zmq.NOBLOCK)  # plain ints: enum arithmetic costs µs per send  # see Caller.wait_reply


class Caller:
    """Send calls and casts to mailbox endpoints and wait for replies.

    Owns one PULL socket bound at ``ipc://{directory}/c-{pid}-{n}`` (its reply
    address) and one PUSH socket per destination endpoint, with ZMQ_IMMEDIATE so
    that a send to a worker that died fails at once (`PeerUnavailable`) instead of
    queueing for nobody.  Refs count up per Caller; a reply to another ref (a late
    answer to a call that timed out) is discarded.

    Not thread-safe: use one Caller per thread.

        caller = Caller(ctx, "/run/tree")
        reply = caller.call("ipc:///run/tree/w/counter-1.mbx", ("add", 2), timeout=1.0)
    """

    def __init__(self, ctx: zmq.Context[Any], directory: str, *, max_peers: int = 256,
                 connect_timeout: float = 0.5) -> None:
        self._ctx = ctx
        self.reply_to = check_endpoint(f"ipc://{directory}/c-{os.getpid()}-{next(_caller_seq)}")
        self._reply_to = self.reply_to.encode()
        self._pull = make_socket(ctx, zmq.PULL, rcvhwm=100_000)
        self._pull.bind(self.reply_to)
        self._peers: collections.OrderedDict[str, zmq.Socket[bytes]] = collections.OrderedDict()
        self._fresh: set[str] = set()  # peers not yet seen connected
        self._max_peers = max_peers
        self._connect_timeout = connect_timeout
        self._next_ref = 1
        self.discarded = 0  # late or malformed replies thrown away

    # -- sending --

    def send_call(self, endpoint: str, payload: object, *, alive_fd: int | None = None) -> int:
        """Send a call; returns its ref.  Raises PeerUnavailable if the send would block.

        `alive_fd`: the callee's pidfd.  When it is already readable (the callee
        died) the call is not sent: PeerUnavailable.  Without it, a call sent in the
        instant after the callee died can still go down its closing connection.
        """
        ref = self._next_ref
        self._next_ref = ref + 1
        rt = self._reply_to
        self._send(endpoint, b"C" + _CALL_HEAD.pack(ref, len(rt)) + rt + _dumps(payload, PROTOCOL), alive_fd, True)
        return ref

    def send_cast(self, endpoint: str, payload: object, *, alive_fd: int | None = None) -> None:
        """Send a cast.  Raises PeerUnavailable if the send would block (OTP drops such casts: callers may)."""
        self._send(endpoint, b"S" + _dumps(payload, PROTOCOL), alive_fd)

    def send_cast_unchecked(self, endpoint: str, payload: object) -> None:
        """The cast hot path: no liveness check, no connect wait.  Raises PeerUnavailable
        (without forgetting the socket) when the send would block; the caller then takes
        the checked path (`send_cast` with `alive_fd`), which tells full from gone.  A cast
        sent in the instant a worker dies may be lost, as a cast to a dying process is in OTP."""
        sock = self._peers.get(endpoint)
        if sock is None:
            raise PeerUnavailable(endpoint)
        try:
            sock.send(b"S" + _dumps(payload, PROTOCOL), _NOBLOCK)
        except zmq.Again:
            raise PeerUnavailable(endpoint) from None

    def send_info(self, endpoint: str, payload: object, *, alive_fd: int | None = None) -> None:
        self._send(endpoint, b"I" + _dumps(payload, PROTOCOL), alive_fd)

    def _send(self, endpoint: str, frame: bytes, alive_fd: int | None = None, check_pipe: bool = False) -> None:
        if alive_fd is not None and select.select([alive_fd], [], [], 0)[0]:
            self.forget(endpoint)
            raise PeerUnavailable(endpoint)
        sock = self._peers.get(endpoint)
        if sock is None:
            sock = self._open(endpoint)
        elif (check_pipe or alive_fd is None) and not sock.getsockopt(_EVENTS) & _POLLOUT:
            # Reading ZMQ_EVENTS makes libzmq process its pending commands now (send()
            # does so only about once a millisecond): a peer that died is seen here,
            # instead of the message going down its dying pipe.
            self.forget(endpoint)
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
        if alive_fd is not None and not select.select([alive_fd], [], [], 0)[0]:
            raise PeerBusy(endpoint)  # alive: its mailbox is full; keep the socket and what it queued
        self.forget(endpoint)
        raise PeerUnavailable(endpoint)

    def wait_writable(self, endpoint: str, timeout: float, alive_fd: int | None = None) -> bool:
        """Wait until `endpoint`'s mailbox has room (True) or the peer died / time ran out (False)."""
        sock = self._peers.get(endpoint)
        if sock is None:
            return False
        items: list[tuple[object, int]] = [(sock, zmq.POLLOUT)]
        if alive_fd is not None:
            items.append((alive_fd, zmq.POLLIN))
        ready = dict(zmq.zmq_poll(items, max(0, int(timeout * 1000))))
        return sock in ready and not (alive_fd is not None and alive_fd in ready)

    def _open(self, endpoint: str) -> zmq.Socket[bytes]:
        sock = make_socket(self._ctx, zmq.PUSH, immediate=1, sndhwm=100_000)
        try:
            connect(sock, endpoint)
        except BaseException:
            sock.close(0)
            raise
        if len(self._peers) >= self._max_peers:
            old_endpoint, old = self._peers.popitem(last=False)
            self._fresh.discard(old_endpoint)
            old.close(0)
        self._peers[endpoint] = sock
        self._fresh.add(endpoint)
        return sock

    def forget(self, endpoint: str) -> None:
        """Close the socket to `endpoint` (its worker is gone)."""
        sock = self._peers.pop(endpoint, None)
        self._fresh.discard(endpoint)
        if sock is not None:
            sock.close(0)

    # -- receiving --

    def wait_reply(self, ref: int, timeout: float | None, extra_poll_fds: Iterable[int] = ()) -> Reply | int:
        """The reply to `ref`, or the first fd of `extra_poll_fds` that became readable.

        Raises TimeoutError after `timeout` seconds (None: wait forever).  Replies to
        other refs are discarded.
        """
        pull = self._pull
        items: list[tuple[Any, int]] = [(pull, zmq.POLLIN)]
        items.extend((fd, zmq.POLLIN) for fd in extra_poll_fds)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if deadline is None:
                wait_ms = -1
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no reply to call {ref} within {timeout} s")
                wait_ms = max(1, int(left * 1000 + 0.999))
            dead_fd: int | None = None
            for sock, _ in zmq.zmq_poll(items, wait_ms):
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

    def _drain(self, ref: int) -> Reply | None:
        recv = self._pull.recv
        while True:
            try:
                frame = recv(zmq.NOBLOCK)
            except zmq.Again:
                return None
            reply = decode(frame)
            if isinstance(reply, Reply) and reply.ref == ref:
                return reply
            self._discard(reply)

    def _discard(self, frame: Frame) -> None:
        self.discarded += 1
        if isinstance(frame, Malformed):
            log.warning("discarded a malformed frame at %s: %s", self.reply_to, frame.reason)

    def call(self, endpoint: str, payload: object, timeout: float | None = 5.0) -> object:
        """Send a call and wait: the value, or raise RemoteCallError / TimeoutError / PeerUnavailable."""
        ref = self.send_call(endpoint, payload)
        reply = self.wait_reply(ref, timeout)
        assert isinstance(reply, Reply)
        return reply.unwrap()

    def close(self) -> None:
        for sock in self._peers.values():
            sock.close(0)
        self._peers.clear()
        self._fresh.clear()
        if not self._pull.closed:
            self._pull.close(0)
            unlink_ipc(self.reply_to)

    def __enter__(self) -> Caller:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
