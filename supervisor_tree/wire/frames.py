"""Frames: the byte layout of every message, its decoding, and the errors a frame can carry.

Owns the four frames of docs/internals.md (call, cast, info, reply), the notices
workers send the node, and payload serialization (pickle protocol 5, never cloudpickle
on the message path).  No other module knows the byte layout of a frame.  Every frame
ends with the run's 16-byte tag (`auth.FrameKey`): a frame whose tag is wrong is
`Malformed` ("unauthenticated") and nothing in it is read, least of all unpickled.
Imports no socket library.

    >>> key = FrameKey(bytes(32))
    >>> frame = encode_call(key, 7, "ipc:///run/c-1-0", ("add", 2))
    >>> call = decode(key, frame)
    >>> call.ref, call.reply_to, loads_payload(call.payload)
    (7, 'ipc:///run/c-1-0', ('add', 2))
    >>> decode(key, encode_reply(key, 7, True, 3))
    Reply(ref=7, ok=True, value=3)
    >>> decode(FrameKey(bytes([1]) * 32), frame).kind
    'unauthenticated'

Frames, one ZeroMQ frame per message, each ``body + tag(body)`` (16 bytes):

* call:  ``b"C" + ref (u64 LE) + len(reply_to) (u16 LE) + reply_to (utf-8) + pickle(payload)``
* calls: ``b"K" + len(reply_to) (u16 LE) + reply_to (utf-8) + pickle([(ref, payload), ...])``: calls
  pipelined to one worker, sent together (`Client.call_many`); each answered as if it came alone
* cast:  ``b"S" + pickle(payload)``
* info:  ``b"I" + pickle(payload)``
* reply: ``b"R" + ref (u64 LE) + b"\\x00" ok | b"\\x01" error + pickle(value or RemoteError)``
* batch: ``b"M" + count (u32 LE) + count * len (u32 LE) + the count pickles, one per cast``: casts a sender
  coalesced (`wire.coalesce`), one tag for all; the receiver hands them to handle_cast one by
  one, in order (`split_batch`; a batch that does not parse is `BadFrame`, dropped whole)
* replies: ``b"B" + pickle([(ref, ok, value or RemoteError), ...])``: the replies to one caller that a
  worker coalesced (calls pipelined to it, handled in one round): `Replies`

Notices a worker sends to the node's inbound socket (("ready", id, gen, pid),
("hb", id, gen, pid, stats), ...) are a bare pickled tuple, tagged: `encode_notice` /
`decode_notice` (no kind byte: that socket carries nothing else).
"""

from __future__ import annotations

import pickle
import struct
import traceback
from dataclasses import dataclass

from supervisor_tree.wire.auth import FrameKey
from supervisor_tree.wire.shapes import MALFORMED, UNAUTHENTICATED, BadFrame, Fields, check_message

PROTOCOL = 5

# First byte of each frame, as ints: frame[0] of a bytes object is an int.
CALL, CAST, INFO, REPLY = b"CSIR"
BATCH = b"M"[0]  # casts a sender coalesced (wire.coalesce), to a worker's mailbox
REPLIES, CALLS = b"BK"  # replies a worker coalesced, to a caller; calls a caller pipelined, to a worker
_CALL_HEAD = struct.Struct("<QH")  # ref, len(reply_to)
_CALL_BODY = 1 + _CALL_HEAD.size  # offset of reply_to
_REF = struct.Struct("<Q")
_RT_LEN = struct.Struct("<H")
_OK, _ERR = b"\x00", b"\x01"
_U32 = struct.Struct("<I")
BATCH_HEAD = 1 + _U32.size  # kind byte + count
MAX_BATCH = 65_536  # casts one batch frame may carry (a sender makes far smaller ones: wire.coalesce)

# The notices the node's inbound socket takes: kind -> field types after (kind, worker id, generation, pid).
NOTICES: dict[str, Fields] = {
    "ready": (str, int, int),
    "ignore": (str, int, int),
    "start_failed": (str, int, int, str),
    "hb": (str, int, int, dict),
    "declare": (str, int, int, dict),  # {"idempotent": bool | frozenset}: node/retries.py
}

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
class Calls:
    """Calls pipelined to one worker in one frame: (ref, message) pairs, unpickled, in the order to handle them."""

    reply_to: str
    calls: tuple[tuple[int, object], ...]


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
class Replies:
    """Several replies to one caller in one frame (a worker coalesced what it answered in one round)."""

    replies: tuple[Reply, ...]


@dataclass(frozen=True, slots=True)
class Malformed:
    """A frame that does not decode; `head` is its first bytes, for the log line.

    `kind`: "unauthenticated" (its tag is wrong: nothing in it was read) or "malformed".
    """

    reason: str
    head: bytes
    kind: str = MALFORMED


Frame = Call | Calls | Cast | Info | Reply | Replies | Malformed


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


def encode_call(key: FrameKey, ref: int, reply_to: str, payload: object) -> bytes:
    rt = reply_to.encode()
    return key.seal(b"C" + _CALL_HEAD.pack(ref, len(rt)) + rt + _dumps(payload, PROTOCOL))


def encode_calls(key: FrameKey, reply_to: str, calls: list[tuple[int, object]]) -> bytes:
    """One frame of (ref, payload) calls to one worker; raises what pickle raises (then send them one by one)."""
    rt = reply_to.encode()
    return key.seal(b"K" + _RT_LEN.pack(len(rt)) + rt + _dumps(calls, PROTOCOL))


def encode_cast(key: FrameKey, payload: object) -> bytes:
    return key.seal(b"S" + _dumps(payload, PROTOCOL))


def encode_info(key: FrameKey, payload: object) -> bytes:
    return key.seal(b"I" + _dumps(payload, PROTOCOL))


def encode_notice(key: FrameKey, notice: tuple[object, ...]) -> bytes:
    """A worker's notice to the node's inbound socket: ("ready", id, gen, pid), ("hb", ...), ..."""
    return key.seal(_dumps(notice, PROTOCOL))


def decode_notice(key: FrameKey, frame: bytes) -> tuple[object, ...]:
    """The notice in `frame`, checked against `NOTICES` (other kinds pass, for node extensions).

    Raises BadFrame: "unauthenticated" (wrong tag; never unpickled) or "malformed".
    """
    n = key.verify(frame)
    if n < 0:
        raise BadFrame(UNAUTHENTICATED, f"notice of {len(frame)} bytes without the run's tag")
    try:
        notice = _loads(memoryview(frame)[:n])
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad frame
        raise BadFrame(MALFORMED, f"undecodable notice of {len(frame)} bytes: {type(exc).__name__}: {exc}") from None
    return check_message(notice, NOTICES, "notice", open_kinds=True)


def encode_reply(key: FrameKey, ref: int, ok: bool, value: object) -> bytes:
    return reply_frame(key, _REF.pack(ref), ok, value)


def reply_frame(key: FrameKey, ref8: bytes, ok: bool, value: object) -> bytes:
    """A reply to the call whose raw 8-byte ref is `ref8` (the worker's fast path, see `split_call`)."""
    return key.seal(b"R" + ref8 + (_OK if ok else _ERR) + _dumps(value, PROTOCOL))


def encode_replies(key: FrameKey, replies: list[tuple[int, bool, object]]) -> bytes:
    """One frame of (ref, ok, value) replies to one caller; raises what pickle raises (then send them one by one)."""
    return key.seal(b"B" + _dumps(replies, PROTOCOL))


# ---------------------------------------------------------------------------
# Decoding (of frames whose tag was checked: `end` is where the body ends)


def cast_frame(key: FrameKey, body: bytes) -> bytes:
    """A cast frame of an already pickled payload (`encode_cast` without the pickling)."""
    return key.seal(b"S" + body)


def encode_batch(key: FrameKey, bodies: list[bytes] | list[memoryview]) -> bytes:
    """One batch frame of already pickled cast payloads (`bodies`, in order)."""
    n = len(bodies)
    return key.seal(b"".join((b"M", _U32.pack(n), struct.pack(f"<{n}I", *map(len, bodies)), *bodies)))


def batch_count(frame: bytes, end: int) -> int:
    """How many casts the batch frame `frame[:end]` (tag checked) says it carries; BadFrame if none can be read."""
    if end < BATCH_HEAD:
        raise BadFrame(MALFORMED, f"batch frame of {end} bytes is shorter than its header")
    (n,) = _U32.unpack_from(frame, 1)
    if not 1 <= n <= MAX_BATCH:
        raise BadFrame(MALFORMED, f"batch frame says it carries {n} casts; a batch carries 1..{MAX_BATCH}")
    return int(n)


def split_batch(frame: bytes, end: int) -> list[memoryview]:
    """The pickled cast payloads of the batch frame `frame[:end]` (tag checked), in order.

    Raises BadFrame ("malformed") unless the body is exactly the `count` lengths, none
    of them 0, and then that many bytes: such a batch is dropped whole (the receiver
    counts it), never half-served.
    """
    n = batch_count(frame, end)
    start = BATCH_HEAD + 4 * n
    if end < start:
        raise BadFrame(MALFORMED, f"batch frame of {end} bytes ends inside the lengths of its {n} casts")
    sizes = struct.unpack_from(f"<{n}I", frame, BATCH_HEAD)
    if min(sizes) == 0 or sum(sizes) != end - start:
        raise BadFrame(MALFORMED, f"batch frame: its {n} casts' lengths add up to {sum(sizes)} bytes, "
                                  f"{end - start} follow (or one is 0)")  # fmt: skip
    view = memoryview(frame)
    out: list[memoryview] = []
    at = start
    for size in sizes:
        out.append(view[at : at + size])
        at += size
    return out


def split_call(frame: bytes, end: int) -> tuple[bytes, bytes, memoryview]:
    """(raw ref, reply_to as utf-8 bytes, pickled payload) of a call frame's body `frame[:end]`;
    ValueError if truncated.  The worker's hot path: no dataclass, no decode of the reply address."""
    if end < _CALL_BODY:
        raise ValueError(f"call frame of {end} bytes is shorter than its header")
    (n,) = struct.unpack_from("<H", frame, 9)
    stop = _CALL_BODY + n
    if n == 0 or end < stop:
        raise ValueError("call frame without a complete reply address")
    return frame[1:9], frame[_CALL_BODY:stop], memoryview(frame)[stop:end]


def split_calls(frame: bytes, end: int) -> tuple[bytes, list[tuple[int, object]]]:
    """(reply_to as utf-8 bytes, [(ref, message), ...]) of a calls frame's body `frame[:end]`; ValueError (or
    what unpickling raises) if it is not one.  A worker's: the payload is unpickled here, checked for shape."""
    (n,) = _RT_LEN.unpack_from(frame, 1) if end >= 3 else (0,)
    if n == 0 or end < 3 + n:
        raise ValueError("calls frame without a complete reply address")
    calls = _loads(memoryview(frame)[3 + n : end])
    if type(calls) is not list or not all(type(c) is tuple and len(c) == 2 and type(c[0]) is int for c in calls):
        raise ValueError("calls frame whose payload is not a list of (ref, message)")
    return frame[3 : 3 + n], calls


def loads_payload(payload: bytes | memoryview) -> object:
    """Unpickle a call payload; raises whatever pickle raises on bad bytes."""
    return _loads(payload)


def decode(key: FrameKey, frame: bytes) -> Frame:
    """Check the tag, then decode one frame.  Never raises: a frame that does not decode is `Malformed`.

    A call keeps its payload pickled so that a payload which does not unpickle can
    still be answered (its header is readable).
    """
    end = key.verify(frame)
    if end < 0:
        return Malformed(f"frame of {len(frame)} bytes without the run's tag", frame[:32], UNAUTHENTICATED)
    kind = frame[0]
    try:
        if kind == CALL:
            ref8, rt, payload = split_call(frame, end)
            return Call(_REF.unpack(ref8)[0], rt.decode(), bytes(payload))
        if kind == CAST:
            return Cast(_loads(memoryview(frame)[1:end]))
        if kind == INFO:
            return Info(_loads(memoryview(frame)[1:end]))
        if kind == REPLY:
            return _decode_reply(frame, end)
        if kind == CALLS:
            reply_to, calls = split_calls(frame, end)
            return Calls(reply_to.decode(), tuple(calls))
        if kind == REPLIES:
            return Replies(tuple(Reply(ref, ok is True, value) for ref, ok, value in _loads(memoryview(frame)[1:end])))
    except Exception as exc:  # noqa: BLE001 - any decoding failure is a malformed frame
        return Malformed(f"{chr(kind)!r} frame does not decode: {type(exc).__name__}: {exc}", frame[:32])
    return Malformed(f"unknown frame kind {bytes([kind])!r}", frame[:32])


def _decode_reply(frame: bytes, end: int) -> Frame:
    if end < 10 or frame[9:10] not in (_OK, _ERR):
        return Malformed("reply frame with a truncated header", frame[:32])
    ref = _REF.unpack_from(frame, 1)[0]
    ok = frame[9:10] == _OK
    try:
        value = _loads(memoryview(frame)[10:end])
    except Exception as exc:  # noqa: BLE001 - the caller still deserves an answer for its ref
        return Reply(ref, False, RemoteError("MalformedReply", f"reply value does not unpickle: {exc!r}"))
    return Reply(ref, ok, value)
