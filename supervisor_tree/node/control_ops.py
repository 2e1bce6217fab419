"""The control operations: one function per op, each answering a request of the CLI or a client.

    @op("kill", id=STR, signal=STR)
    def _kill(s, ident, req_id, args): ...

`OPS` maps each name to its `control.Op` (the handler and the JSON types of the
arguments it takes, checked before it runs); the node hands it to
`control.ControlServer`.  A handler returns the answer, raises `ControlError` with a
one-line refusal, or returns `DEFERRED` and answers later (`api_reply`, the resolve
and stop waiters).
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Callable

import psutil

from supervisor_tree.node.control import DEFERRED, ControlError, ControlServer, Handler, Op, Waiter
from supervisor_tree.node.records import SupHandle
from supervisor_tree.otp import supervisor as sv
from supervisor_tree.spec import ChildSpec, Strategy

__all__ = ["OPS", "op", "child_view", "supervisor_view", "rss_of", "STR", "NAME", "NUMBER", "TABLE", "FLAG"]

OPS: dict[str, Op] = {}
_NONE = type(None)
STR, NAME, NUMBER, TABLE, FLAG = (str,), (str, _NONE), (int, float, _NONE), (dict, _NONE), (bool, _NONE)


def op(name: str, **args: tuple[type, ...]) -> Callable[[Handler], Handler]:
    """Register a handler for `name`, taking the arguments `args` (name -> JSON types allowed)."""
    def register(fn: Handler) -> Handler:
        OPS[name] = Op(fn, args)
        return fn

    return register


def rss_of(pid: int | None) -> int | None:
    if pid is None:
        return None
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except (psutil.Error, OSError):
        return None


# ---------------------------------------------------------------------- status


def child_view(server: ControlServer, path: str, info: sv.ChildInfo, rss: bool = True) -> dict[str, object]:
    """One child as `status` shows it; `rss=False` leaves the psutil read to the caller (observe/ does its own)."""
    node = server.node
    view: dict[str, object] = {
        "id": info.id if info.id is not None else info.key,
        "key": info.key,
        "type": info.type.value,
        "restart": info.restart.value,
        "state": info.status.value,
        "pid": info.pid if isinstance(info.pid, int) else None,
        "generation": info.generation,
        "uptime": None,
        "rss": None,
    }
    if isinstance(info.pid, SupHandle):
        child_path = f"{path}/{info.key}"
        run = node.sups.get(child_path)
        if run is not None:
            view["supervisor"] = supervisor_view(server, child_path, rss)
        return view
    rec = node.by_id.get(info.key)
    if rec is not None and rec.generation == info.generation and rec.ready_at is not None:
        view["uptime"] = round(time.monotonic() - rec.ready_at, 3)
        view["rss"] = rss_of(rec.pid) if rss and not rec.host else None  # a remote pid is not ours to read
        if rec.stats:
            view["stats"] = rec.stats
    if rec is not None and rec.last_exit is not None:
        view["last_exit"] = str(rec.last_exit)
    if rec is not None and rec.host:
        view["host"] = rec.host
    return view


def supervisor_view(server: ControlServer, path: str, rss: bool = True) -> dict[str, object]:
    run = server.node.sups[path]
    spec = run.state.spec
    # The intensity window as supervisor.decide will see it: whole seconds newer than now - period.
    since = math.floor(time.monotonic()) - spec.period
    children = list(reversed(sv.which_children(run.state)))  # start order reads best
    counts = sv.count_children(run.state)
    return {
        "path": path,
        "strategy": spec.strategy.value,
        "intensity": spec.intensity,
        "period": spec.period,
        "auto_shutdown": spec.auto_shutdown.value,
        "phase": run.state.phase.name.lower(),
        "restarts": sum(1 for r in run.state.restarts if r >= since),
        "intensity_window": list(run.state.restarts),  # whole seconds of the node's monotonic clock
        "clock": int(time.monotonic()),  # that clock's second now (chaos predicts escalations from both)
        "counts": {"specs": counts.specs, "active": counts.active, "supervisors": counts.supervisors, "workers": counts.workers},
        "children": [child_view(server, path, info, rss) for info in children],
    }


# ---------------------------------------------------------------------- operations


@op("ping")
def _ping(s: ControlServer, ident: bytes, req_id: int, args: dict[str, object]) -> object:
    n = s.node
    return {"pid": os.getpid(), "name": n.spec.name, "config": n.spec.source, "started": n.started, "run_dir": str(n.run_dir),
            "profiles_dir": n.spec.extra.get("profile", {}).get("dir"),  # type: ignore[attr-defined]
            "dropped_frames": {"control": s.dropped.summary(), "inbound": n.inbound_dropped.summary()}}


@op("status", rss=FLAG)
def _status(s: ControlServer, ident: bytes, req_id: int, args: dict[str, object]) -> object:
    """The tree; `rss=False` skips a psutil read per worker (a poller that reads its own figures)."""
    n = s.node
    tree = supervisor_view(s, "root", args.get("rss", True) is not False) if "root" in n.sups else None
    value = {"node": _ping(s, ident, req_id, args), "tree": tree, "stopping": n.stopping}
    for ext in s.extensions:  # e.g. the retry table: its per-pair figures under "retries"
        part = getattr(ext, "status_part", None)
        if part is not None:
            value.update(part())
    return value


@op("which_children", supervisor=NAME)
def _which(s: ControlServer, ident: bytes, req_id: int, args: dict[str, object]) -> object:
    path = s.supervisor_path(args.get("supervisor"))
    run = s.node.sups[path]
    return [child_view(s, path, info) | {"id": info.id} for info in sv.which_children(run.state)]


@op("count_children", supervisor=NAME)
def _count(s: ControlServer, ident: bytes, req_id: int, args: dict[str, object]) -> object:
    c = sv.count_children(s.node.sups[s.supervisor_path(args.get("supervisor"))].state)
    return {"specs": c.specs, "active": c.active, "supervisors": c.supervisors, "workers": c.workers}


def _target_sup(s: ControlServer, args: dict[str, object]) -> tuple[str, object]:
    target = args.get("target", args.get("id"))
    if isinstance(target, str) and target.isdigit():
        target = int(target)
    if args.get("supervisor"):
        return s.supervisor_path(args["supervisor"]), target
    found = s.find_child(target)  # type: ignore[arg-type]
    if found is not None:
        return found[0], target
    if isinstance(target, int):
        sofo = [p for p, r in s.node.sups.items() if r.state.spec.strategy is Strategy.SIMPLE_ONE_FOR_ONE]
        if len(sofo) == 1:
            return sofo[0], target
    return "root", target  # the supervisor answers not_found


@op("terminate_child", target=(str, int), id=(str, int), supervisor=NAME)
def _terminate(s: ControlServer, ident: bytes, req_id: int, args: dict[str, object]) -> object:
    path, target = _target_sup(s, args)
    alive = None
    if isinstance(target, int):
        alive = psutil.pid_exists(target)
    return s.submit(path, ident, req_id, sv.TerminateChildCall(target, alive))  # type: ignore[arg-type]


@op("restart_child", target=(str, int), id=(str, int), supervisor=NAME)
def _restart(s: ControlServer, ident: bytes, req_id: int, args: dict[str, object]) -> object:
    path, target = _target_sup(s, args)
    return s.submit(path, ident, req_id, sv.RestartChildCall(str(target)))


@op("delete_child", target=(str, int), id=(str, int), supervisor=NAME)
def _delete(s: ControlServer, ident: bytes, req_id: int, args: dict[str, object]) -> object:
    path, target = _target_sup(s, args)
    return s.submit(path, ident, req_id, sv.DeleteChildCall(str(target)))


@op("start_child", supervisor=NAME, spec=TABLE, args=TABLE)
def _start_child(s: ControlServer, ident: bytes, req_id: int, args: dict[str, object]) -> object:
    path = s.supervisor_path(args.get("supervisor"))
    run = s.node.sups[path]
    if run.state.spec.strategy is Strategy.SIMPLE_ONE_FOR_ONE:
        extra = args.get("args") or {}
        if not isinstance(extra, dict):
            raise ControlError(f"start_child on simple_one_for_one supervisor {path!r}: args must be a table/object; got {extra!r}")
        return s.submit(path, ident, req_id, sv.StartChildCall(None, extra))
    spec = _parse_child(s, path, args.get("spec"))
    elsewhere = s.find_child(spec.id)
    if elsewhere is not None and elsewhere[0] != path:
        raise ControlError(f"id {spec.id!r} is already used by supervisor {elsewhere[0]!r}; ids are unique in the tree")
    return s.submit(path, ident, req_id, sv.StartChildCall(spec, None))


def _parse_child(s: ControlServer, path: str, raw: object) -> ChildSpec:
    from supervisor_tree.config.load import ConfigError, node_spec_from_mapping

    if not isinstance(raw, dict):
        raise ControlError(f"start_child: spec must be a table/object with id and start; got {raw!r}")
    flags = s.node.sups[path].state.spec
    data = {"tree": {"auto_shutdown": flags.auto_shutdown.value, "children": [raw]}}
    try:
        parsed = node_spec_from_mapping(
            data, source="start_child", config_dir=s.node.spec.config_dir, check_imports=True
        )
    except ConfigError as exc:
        raise ControlError(f"invalid_child_spec: {exc}".replace("\n", "; ")) from None
    return parsed.tree.children[0]


@op("kill", id=STR, signal=NAME)
def _kill(s: ControlServer, ident: bytes, req_id: int, args: dict[str, object]) -> object:
    worker_id = str(args.get("id"))
    name = str(args.get("signal") or "KILL").upper()
    try:
        signum = signal.Signals[name if name.startswith("SIG") else "SIG" + name]
    except KeyError:
        raise ControlError(f"unknown signal {name!r}; e.g. KILL, TERM, STOP, CONT, INT") from None
    rec = s.node.by_id.get(worker_id)
    if rec is None:
        raise ControlError(f"no worker {worker_id!r} in this tree")
    if rec.pid is None or rec.pid not in s.node.by_pid:
        raise ControlError(f"worker {worker_id!r} has no live process (last exit: {rec.last_exit})")
    s.node.launcher.kill(rec.pid, signum)
    return {"id": worker_id, "pid": rec.pid, "generation": rec.generation, "signal": signum.name}


@op("stop")
def _stop(s: ControlServer, ident: bytes, req_id: int, args: dict[str, object]) -> object:
    s.stop_waiters.append((ident, req_id))
    s.node.request_stop()
    return DEFERRED


@op("resolve", id=STR, after_generation=(int, _NONE), timeout=NUMBER)
def _resolve(s: ControlServer, ident: bytes, req_id: int, args: dict[str, object]) -> object:
    worker_id = str(args.get("id"))
    answer = s._try_resolve(worker_id, args)
    if isinstance(answer, ControlError):
        raise answer
    if answer is not None:
        return answer
    timeout = float(args.get("timeout") or 5.0)  # type: ignore[arg-type]
    s.add_waiter(s.resolve_waiters.setdefault(worker_id, []), Waiter(ident, req_id, time.monotonic() + timeout, args))
    return DEFERRED


@op("last_exit", id=STR)
def _last_exit(s: ControlServer, ident: bytes, req_id: int, args: dict[str, object]) -> object:
    rec = s.node.by_id.get(str(args.get("id")))
    return None if rec is None or rec.last_exit is None else str(rec.last_exit)


@op("wait_started", timeout=NUMBER)
def _wait_started(s: ControlServer, ident: bytes, req_id: int, args: dict[str, object]) -> object:
    if s.node.started:
        return {"started": True}
    timeout = float(args.get("timeout") or 30.0)  # type: ignore[arg-type]
    s.add_waiter(s.start_waiters, Waiter(ident, req_id, time.monotonic() + timeout, args))
    return DEFERRED
