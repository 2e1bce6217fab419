"""The pipe between the node and its fork server: the messages each way, and their shapes.

Owns the protocol `local.LocalLauncher` and `forkserver._ForkServer` speak over the
socketpair that links them (multiprocess `Connection`, one pickled tuple per message).
That pair is made by the node before it forks the fork server and is inherited by
nobody else (workers close their copy), so its bytes come from one of the two; they
are still checked for shape before anything acts on them (`decode_request`,
`decode_report` raise `BadFrame`), so a bug on one side is a logged, dropped message
on the other, never a crash.

    node -> fork server:  ("spawn", request)  ("activated", pid, request)  ("discard", pid)  ("close",)
                          ("refresh", preload names, more names)      (supervise reload --code)
    fork server -> node:  ("ok", pid)  ("error", text)  ("events", [Spawned | SpawnFailed | Reaped, ...])
                          ("standby", pid)  (its activation socket's fd follows, SCM_RIGHTS)
                          ("code", (epoch, {file: hash}, problems, own files))

`request` is a pickled (or cloudpickled) `SpawnRequest`.
"""

from __future__ import annotations

import pickle

from supervisor_tree.node.launchers.base import Event, Reaped, Spawned, SpawnFailed
from supervisor_tree.spec import ExitReason
from supervisor_tree.wire.shapes import MALFORMED, BadFrame, Fields, check_message, describe, is_a
from supervisor_tree.worker.spawn import SpawnRequest, check_request

__all__ = ["REQUESTS", "REPORTS", "encode", "decode_request", "decode_report", "decode_spawn_request", "names"]

REQUESTS: dict[str, Fields] = {"spawn": (bytes,), "activated": (int, bytes), "discard": (int,), "close": (),
                               "refresh": (tuple, tuple)}
REPORTS: dict[str, Fields] = {"ok": (int,), "error": (str,), "events": (list,), "standby": (int,), "code": (tuple,)}
_CODE: dict[str, Fields] = {"code": (int, dict, tuple, tuple)}  # (epoch, {file: hash}, problems, own files)
_EVENT_FIELDS: dict[type, tuple[tuple[str, type], ...]] = {
    Spawned: (("token", int), ("pid", int)),
    SpawnFailed: (("token", int), ("error", str)),
    Reaped: (("pid", int), ("reason", ExitReason)),
}


def encode(msg: tuple[object, ...]) -> bytes:
    return pickle.dumps(msg, protocol=5)


def _loads(data: bytes, what: str) -> object:
    try:
        return pickle.loads(data)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad message
        raise BadFrame(MALFORMED, f"{what} of {len(data)} bytes does not unpickle: {type(exc).__name__}: {exc}") from None


def decode_request(data: bytes) -> tuple[object, ...]:
    """A request from the node, checked against `REQUESTS` (its SpawnRequest still pickled)."""
    return check_message(_loads(data, "fork-server request"), REQUESTS, "fork-server request")


def decode_spawn_request(data: bytes) -> SpawnRequest:
    """The SpawnRequest a "spawn" or "activated" request carries (or a standby's activation socket)."""
    req = _loads(data, "spawn request")
    problem = check_request(req)
    if problem:
        raise BadFrame(MALFORMED, problem)
    assert isinstance(req, SpawnRequest)
    return req


def decode_report(data: bytes) -> tuple[object, ...]:
    """A report of the fork server, checked against `REPORTS`; an "events" list holds launcher events only."""
    msg = check_message(_loads(data, "fork-server report"), REPORTS, "fork-server report")
    if msg[0] == "events":
        for ev in msg[1]:  # type: ignore[attr-defined]  # a list: checked above
            _check_event(ev)
    elif msg[0] == "code":
        check_message(("code", *msg[1]), _CODE, "code snapshot")  # type: ignore[misc]  # a tuple: checked above
    return msg


def names(items: tuple[object, ...]) -> tuple[str, ...]:
    """Module names, as a "refresh" request lists them; BadFrame when one is not a str."""
    for item in items:
        if not isinstance(item, str):
            raise BadFrame(MALFORMED, f"a module name is a str; got {describe(item)}")
    return items  # type: ignore[return-value]


def _check_event(ev: object) -> Event:
    fields = _EVENT_FIELDS.get(type(ev))
    if fields is None:
        raise BadFrame(MALFORMED, f"a fork-server event is Spawned, SpawnFailed or Reaped; got {describe(ev)}")
    for name, expected in fields:
        if not is_a(getattr(ev, name, None), expected):
            raise BadFrame(MALFORMED, f"{type(ev).__name__}.{name} must be {expected.__name__}; "
                                      f"got {describe(getattr(ev, name, None))}")  # fmt: skip
    return ev  # type: ignore[return-value]
