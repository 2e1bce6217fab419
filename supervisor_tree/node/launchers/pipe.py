"""The pipe between the node and its fork server: the messages each way, and their shapes.

Owns the protocol `local.LocalLauncher` and `forkserver._ForkServer` speak over the
socketpair that links them (multiprocess `Connection`, one pickled tuple per message),
and `ServerConfig`, the fork server's config (a replacement fork server, executed
afresh, gets it as the pipe's first message: `decode_config`).  That pair is made by
the node for one fork server and is inherited by nobody else (workers close their
copy), so its bytes come from one of the two; they are still checked for shape before
anything acts on them (`decode_request`, `decode_report`, `decode_config` raise
`BadFrame`), so a bug on one side is a logged, dropped message on the other, never a
crash.

    node -> fork server:  ServerConfig (a replacement only, first)
                          ("spawn", request)  ("activated", pid)  ("close",)
                          ("discard", pid)    (a standby died unused)
                          ("refresh", preload names, more names)      (supervise reload --code)
    fork server -> node:  ("ok", pid)  ("error", text)  ("events", [Spawned | SpawnFailed, ...])
                          ("standby", pid)  (its activation socket's fd follows, SCM_RIGHTS)
                          ("code", (epoch, {file: hash}, problems, own files))

`request` is a pickled (or cloudpickled) `SpawnRequest`.  The node reaps the workers
itself (local.py), so the fork server reports no `Reaped`.
"""

from __future__ import annotations

import dataclasses
import pickle
from dataclasses import dataclass

from supervisor_tree.node.launchers.base import Event, Spawned, SpawnFailed
from supervisor_tree.spec import WORKER_OOM_SCORE_ADJ
from supervisor_tree.wire.shapes import MALFORMED, BadFrame, Fields, check_message, describe, is_a
from supervisor_tree.worker.spawn import SpawnRequest, check_request

__all__ = ["ServerConfig", "REQUESTS", "REPORTS", "encode", "decode_request", "decode_report",
           "decode_spawn_request", "decode_config", "names"]


@dataclass(frozen=True, slots=True)
class ServerConfig:
    parent_pid: int
    run_dir: str
    preload: tuple[str, ...]
    sys_path: tuple[str, ...]
    standby: int
    inbound: str
    name: str = "supervisor_tree"  # the tree's name, for process titles
    standbys: tuple[int, ...] = ()  # standbys the node already holds (a replacement counts them)
    standby_oom_score_adj: int = WORKER_OOM_SCORE_ADJ
    code_epoch: int = 0  # the node's latest code snapshot: a replacement's first is the next one


_CONFIG_TYPES: dict[str, type] = {"parent_pid": int, "run_dir": str, "preload": tuple, "sys_path": tuple,
                                  "standby": int, "inbound": str, "name": str, "standbys": tuple,
                                  "standby_oom_score_adj": int, "code_epoch": int}  # fmt: skip

REQUESTS: dict[str, Fields] = {"spawn": (bytes,), "activated": (int,), "discard": (int,), "close": (),
                               "refresh": (tuple, tuple)}
REPORTS: dict[str, Fields] = {"ok": (int,), "error": (str,), "events": (list,), "standby": (int,), "code": (tuple,)}
_CODE: dict[str, Fields] = {"code": (int, dict, tuple, tuple)}  # (epoch, {file: hash}, problems, own files)
_EVENT_FIELDS: dict[type, tuple[tuple[str, type], ...]] = {
    Spawned: (("token", int), ("pid", int)),
    SpawnFailed: (("token", int), ("error", str)),
}


def encode(msg: tuple[object, ...] | ServerConfig) -> bytes:
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


def decode_config(data: bytes) -> ServerConfig:
    """The ServerConfig a replacement fork server gets first, every field of its type."""
    cfg = _loads(data, "fork-server config")
    if not isinstance(cfg, ServerConfig):
        raise BadFrame(MALFORMED, f"a fork-server config must be a ServerConfig; got {describe(cfg)}")
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if not is_a(value, _CONFIG_TYPES[f.name]):
            raise BadFrame(MALFORMED, f"ServerConfig.{f.name} has the wrong type: {describe(value)}")
    names(cfg.preload + cfg.sys_path)
    if not all(type(pid) is int for pid in cfg.standbys):
        raise BadFrame(MALFORMED, f"ServerConfig.standbys holds pids (int); got {describe(cfg.standbys)}")
    return cfg


def names(items: tuple[object, ...]) -> tuple[str, ...]:
    """Module names, as a "refresh" request lists them; BadFrame when one is not a str."""
    for item in items:
        if not isinstance(item, str):
            raise BadFrame(MALFORMED, f"a module name is a str; got {describe(item)}")
    return items  # type: ignore[return-value]


def _check_event(ev: object) -> Event:
    fields = _EVENT_FIELDS.get(type(ev))
    if fields is None:
        raise BadFrame(MALFORMED, f"a fork-server event is Spawned or SpawnFailed; got {describe(ev)}")
    for name, expected in fields:
        if not is_a(getattr(ev, name, None), expected):
            raise BadFrame(MALFORMED, f"{type(ev).__name__}.{name} must be {expected.__name__}; "
                                      f"got {describe(getattr(ev, name, None))}")  # fmt: skip
    return ev  # type: ignore[return-value]
