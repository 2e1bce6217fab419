"""The control protocol's frames: JSON requests from a client to the node, JSON answers back, both tagged.

Owns the byte layout of the node's control socket (ROUTER; a client's DEALER):

    request:  json([req_id, op, args]) + tag       req_id an int, op a str, args an object
    answer:   json([req_id, ok, value]) + tag      ok a bool; value the answer, or the refusal (a str)

No pickle in either direction: what a control request carries is data (ids, numbers,
child specs as the config writes them), so the node never unpickles a client's bytes,
even an authentic one.  Values that JSON lacks are sent as the nearest JSON: a
dataclass as an object of its fields, an enum as its value, anything else as str().

    >>> key = FrameKey(bytes(32))
    >>> decode_request(key, encode_request(key, 1, "status", {}))
    Request(req_id=1, op='status', args={})
    >>> decode_answer(key, encode_answer(key, 1, True, {"ok": True}))
    Answer(req_id=1, ok=True, value={'ok': True})
"""

from __future__ import annotations

import dataclasses
import enum
import json
from dataclasses import dataclass

from supervisor_tree.wire.auth import FrameKey
from supervisor_tree.wire.shapes import MALFORMED, UNAUTHENTICATED, BadFrame, describe

__all__ = ["Request", "Answer", "encode_request", "decode_request", "encode_answer", "decode_answer", "plain",
           "request_id_of"]


@dataclass(frozen=True, slots=True)
class Request:
    req_id: int
    op: str
    args: dict[str, object]


@dataclass(frozen=True, slots=True)
class Answer:
    req_id: int
    ok: bool
    value: object


def plain(value: object) -> object:
    """The JSON stand-in for a value json cannot write (json's `default`)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    return str(value)


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, default=plain, separators=(",", ":")).encode()


def encode_request(key: FrameKey, req_id: int, op: str, args: dict[str, object]) -> bytes:
    """Raises TypeError/ValueError when `args` do not make JSON (a callable, a circular structure)."""
    return key.seal(json.dumps([req_id, op, args], separators=(",", ":"), allow_nan=True).encode())


def encode_answer(key: FrameKey, req_id: int, ok: bool, value: object) -> bytes:
    return key.seal(_dumps([req_id, ok, value]))


def _open(key: FrameKey, frame: bytes, what: str) -> list[object]:
    n = key.verify(frame)
    if n < 0:
        raise BadFrame(UNAUTHENTICATED, f"{what} of {len(frame)} bytes without the run's tag")
    try:
        obj = json.loads(memoryview(frame)[:n].tobytes())
    except (ValueError, RecursionError) as exc:
        raise BadFrame(MALFORMED, f"{what} is not JSON: {exc}") from None
    if not isinstance(obj, list) or len(obj) != 3:
        raise BadFrame(MALFORMED, f"a {what} is a JSON array of 3; got {describe(obj)}")
    return obj


def decode_request(key: FrameKey, frame: bytes) -> Request:
    """The request in `frame`; raises BadFrame (wrong tag: never parsed; or not [int, str, object])."""
    req_id, op, args = _open(key, frame, "control request")
    if not isinstance(req_id, int) or isinstance(req_id, bool):
        raise BadFrame(MALFORMED, f"a control request's id must be an integer; got {describe(req_id)}")
    if not isinstance(op, str):
        raise BadFrame(MALFORMED, f"a control request's operation must be a string; got {describe(op)}")
    if not isinstance(args, dict):
        raise BadFrame(MALFORMED, f"a control request's arguments must be an object; got {describe(args)}")
    return Request(req_id, op, args)


def decode_answer(key: FrameKey, frame: bytes) -> Answer:
    """The node's answer in `frame`; raises BadFrame."""
    req_id, ok, value = _open(key, frame, "control answer")
    if not isinstance(req_id, int) or not isinstance(ok, bool):
        raise BadFrame(MALFORMED, f"a control answer is [id, ok, value]; got {describe([req_id, ok])}")
    return Answer(req_id, ok, value)


def request_id_of(key: FrameKey, frame: bytes) -> int:
    """Best effort: the id of an authentic request that did not decode as a whole (0 if none), to answer it."""
    n = key.verify(frame)
    if n < 0:
        return 0
    try:
        obj = json.loads(memoryview(frame)[:n].tobytes())
    except (ValueError, RecursionError):
        return 0
    rid = obj[0] if isinstance(obj, list) and obj else 0
    return rid if isinstance(rid, int) and not isinstance(rid, bool) else 0
