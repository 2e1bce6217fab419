"""The node's control API: requests from the CLI and Python clients, served in the node loop.

Owns the control protocol (one pickled frame each way over ROUTER/DEALER) and one
handler per operation.  Handlers read the node's state or feed requests to a
supervisor; they never fork or signal except through the node's launcher.

Request:  (req_id, op, args: dict)        Reply: (req_id, ok: bool, value)

Operations: ping, status, which_children, count_children, start_child,
terminate_child, restart_child, delete_child, kill, stop, resolve, last_exit,
wait_started.  A request that must wait (start_child, stop, resolve, ...)
is answered later, when its supervisor answers or its condition holds.
"""

from __future__ import annotations

import itertools
import logging
import os
import pickle
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import psutil
import zmq

from . import supervisor as sv
from .spec import ChildSpec, ChildType, Strategy

if TYPE_CHECKING:
    from .runtime import Node, WorkerRec

logger = logging.getLogger("supervisor_tree")

Handler = Callable[["ControlServer", bytes, int, dict[str, object]], object]
_HANDLERS: dict[str, Handler] = {}
DEFERRED = object()  # a handler's "I will answer later"


class ControlError(Exception):
    """A request the node refuses; the message is the one-line answer."""


def op(name: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        _HANDLERS[name] = fn
        return fn

    return register


@dataclass
class Waiter:
    ident: bytes
    req_id: int
    deadline: float
    args: dict[str, object]


class ControlServer:
    def __init__(self, node: Node, ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str) -> None:
        self.node = node
        self.socket = ctx.socket(zmq.ROUTER)
        self.socket.linger = 0
        self.socket.bind(endpoint)
        self._refs = itertools.count(1)
        self.api_waiters: dict[int, tuple[bytes, int]] = {}
        self.resolve_waiters: dict[str, list[Waiter]] = {}
        self.stop_waiters: list[tuple[bytes, int]] = []
        self.start_waiters: list[Waiter] = []
        self.extensions: list[object] = []  # e.g. the profiler's trigger watcher

    # ------------------------------------------------------------------ transport

    def serve_pending(self) -> None:
        while True:
            try:
                ident, frame = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            except ValueError:
                continue  # wrong frame count: not our client
            try:
                req_id, name, args = pickle.loads(frame)
            except Exception as exc:
                self._send(ident, 0, False, f"malformed control request: {exc}")
                continue
            handler = _HANDLERS.get(name)
            if handler is None:
                self._send(ident, req_id, False, f"unknown operation {name!r}; known: {', '.join(sorted(_HANDLERS))}")
                continue
            try:
                value = handler(self, ident, req_id, args)
            except ControlError as exc:
                self._send(ident, req_id, False, str(exc))
                continue
            except Exception as exc:  # a bug in a handler must not take the node down
                logger.exception("control operation %s failed", name)
                self._send(ident, req_id, False, f"internal error in {name}: {exc!r}")
                continue
            if value is not DEFERRED:
                self._send(ident, req_id, True, value)

    def _send(self, ident: bytes, req_id: int, ok: bool, value: object) -> None:
        try:
            self.socket.send_multipart([ident, pickle.dumps((req_id, ok, value))], zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            logger.warning("control reply to a client that went away dropped (%s)", exc)

    def close(self) -> None:
        for ext in self.extensions:  # e.g. cancel and join the trigger's running captures
            try:
                getattr(ext, "close", lambda: None)()
            except Exception:  # the node stops regardless
                logger.exception("closing control extension %r failed", ext)
        reason = str(self.node.exit_reason)
        for ident, req_id in self.stop_waiters:
            self._send(ident, req_id, True, {"stopped": True, "reason": reason})
        for waiters in self.resolve_waiters.values():
            for w in waiters:
                self._send(w.ident, w.req_id, False, f"node stopped ({reason})")
        for w in self.start_waiters:
            self._send(w.ident, w.req_id, False, f"node stopped before the tree started ({reason})")
        self.socket.close(linger=200)

    # ------------------------------------------------------------------ hooks from the node

    def api_reply(self, ref: int, result: object) -> None:
        waiter = self.api_waiters.pop(ref, None)
        if waiter is None:
            return
        ident, req_id = waiter
        match result:
            case sv.Ok(pid=pid):
                self._send(ident, req_id, True, {"ok": True, "pid": _pid(pid)})
            case sv.ApiError(reason=reason, pid=pid, detail=detail):
                value: dict[str, object] = {"ok": False, "error": reason, "pid": _pid(pid)}
                if detail is not None:
                    value["detail"] = str(detail)
                self._send(ident, req_id, True, value)

    def after_pump(self) -> None:
        """Answer waiters whose condition now holds."""
        if self.start_waiters and self.node.started:
            for w in self.start_waiters:
                self._send(w.ident, w.req_id, True, {"started": True})
            self.start_waiters.clear()
        for worker_id in list(self.resolve_waiters):
            self._settle_resolves(worker_id)

    def on_stats(self, rec: WorkerRec) -> None:
        for ext in self.extensions:
            ext.on_stats(rec)  # type: ignore[attr-defined]

    def on_inbound(self, kind: str, msg: tuple[object, ...]) -> bool:
        return any(ext.on_inbound(kind, msg) for ext in self.extensions)  # type: ignore[attr-defined]

    def on_timer(self, key: tuple[object, ...]) -> None:
        if key[0] == "waiters":
            self._expire_waiters()
        for ext in self.extensions:
            ext.on_timer(key)  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ resolve

    def _settle_resolves(self, worker_id: str) -> None:
        waiters = self.resolve_waiters.get(worker_id, [])
        keep = []
        for w in waiters:
            answer = self._try_resolve(worker_id, w.args)
            if answer is None:
                keep.append(w)
            elif isinstance(answer, ControlError):
                self._send(w.ident, w.req_id, False, str(answer))
            else:
                self._send(w.ident, w.req_id, True, answer)
        if keep:
            self.resolve_waiters[worker_id] = keep
        else:
            self.resolve_waiters.pop(worker_id, None)

    def _try_resolve(self, worker_id: str, args: dict[str, object]) -> dict[str, object] | ControlError | None:
        """The endpoint of a running incarnation; None to wait; a ControlError to give up."""
        from .runtime import Phase

        node = self.node
        after = args.get("after_generation") or 0
        rec = node.by_id.get(worker_id)
        if rec is not None and rec.phase is Phase.RUNNING and rec.generation > after and rec.pid is not None:  # type: ignore[operator]
            return {
                "id": worker_id,
                "pid": rec.pid,
                "generation": rec.generation,
                "mailbox": rec.mailbox,
                "control": rec.control,
                "retry": rec.spec.retry,
            }
        info = self.find_child(worker_id)
        if info is None:
            if rec is None:
                return ControlError(f"no worker {worker_id!r} in this tree")
            return ControlError(f"worker {worker_id!r} is gone (last exit: {rec.last_exit})")
        run = node.sups.get(info[0])
        if info[1].status is sv.ChildStatus.NOT_RUNNING and not (run is not None and run.state.busy):
            # (a busy supervisor may be about to start it: a group restart in progress)
            last = f" (last exit: {rec.last_exit})" if rec and rec.last_exit else ""
            return ControlError(f"worker {worker_id!r} is not running{last}")
        if info[1].type is ChildType.SUPERVISOR:
            return ControlError(f"{worker_id!r} is a supervisor, not a worker")
        return None

    def _expire_waiters(self) -> None:
        now = time.monotonic()
        for worker_id, waiters in list(self.resolve_waiters.items()):
            for w in [w for w in waiters if w.deadline <= now]:
                waiters.remove(w)
                rec = self.node.by_id.get(worker_id)
                state = f"last exit: {rec.last_exit}" if rec and rec.last_exit else "not ready"
                self._send(w.ident, w.req_id, False, f"timeout: worker {worker_id!r} not running after {w.args.get('timeout')}s ({state})")
            if not waiters:
                del self.resolve_waiters[worker_id]
        for w in [w for w in self.start_waiters if w.deadline <= now]:
            self.start_waiters.remove(w)
            self._send(w.ident, w.req_id, False, "timeout: the tree has not finished starting")
        if self.resolve_waiters or self.start_waiters:
            self.node.set_timer("__node__", ("waiters",), 0.05)

    def add_waiter(self, bucket: list[Waiter], w: Waiter) -> None:
        bucket.append(w)
        self.node.set_timer("__node__", ("waiters",), min(0.05, max(0.0, w.deadline - time.monotonic())))

    # ------------------------------------------------------------------ lookups

    def find_child(self, target: str | int, supervisor: str | None = None) -> tuple[str, sv.ChildInfo] | None:
        """(supervisor path, child info) for a child id, or a pid of a worker."""
        paths = [supervisor] if supervisor else list(self.node.sups)
        for path in paths:
            run = self.node.sups.get(path)
            if run is None:
                continue
            for info in sv.which_children(run.state):
                if info.key == target or (isinstance(target, int) and info.pid == target):
                    return path, info
        return None

    def supervisor_path(self, name: object) -> str:
        """A supervisor given as a path ("root/mid") or by its child id ("mid")."""
        if not isinstance(name, str) or not name:
            return "root"
        if name in self.node.sups:
            return name
        for path in self.node.sups:
            if path.rsplit("/", 1)[-1] == name:
                return path
        raise ControlError(f"no supervisor {name!r}; supervisors: {', '.join(sorted(self.node.sups))}")

    def submit(self, path: str, ident: bytes, req_id: int, call: object) -> object:
        ref = next(self._refs)
        self.api_waiters[ref] = (ident, req_id)
        self.node._feed(path, sv.ApiRequest(ref, call))  # type: ignore[arg-type]
        return DEFERRED


def _pid(pid: object) -> object:
    if pid is None or isinstance(pid, int):
        return pid
    return repr(pid)


def rss_of(pid: int | None) -> int | None:
    if pid is None:
        return None
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except (psutil.Error, OSError):
        return None


# ---------------------------------------------------------------------- status


def child_view(server: ControlServer, path: str, info: sv.ChildInfo) -> dict[str, object]:
    from .runtime import SupHandle

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
            view["supervisor"] = supervisor_view(server, child_path)
        return view
    rec = node.by_id.get(info.key)
    if rec is not None and rec.generation == info.generation and rec.ready_at is not None:
        view["uptime"] = round(time.monotonic() - rec.ready_at, 3)
        view["rss"] = rss_of(rec.pid)
        if rec.stats:
            view["stats"] = rec.stats
    if rec is not None and rec.last_exit is not None:
        view["last_exit"] = str(rec.last_exit)
    return view


def supervisor_view(server: ControlServer, path: str) -> dict[str, object]:
    run = server.node.sups[path]
    spec = run.state.spec
    children = list(reversed(sv.which_children(run.state)))  # start order reads best
    counts = sv.count_children(run.state)
    return {
        "path": path,
        "strategy": spec.strategy.value,
        "intensity": spec.intensity,
        "period": spec.period,
        "auto_shutdown": spec.auto_shutdown.value,
        "phase": run.state.phase.name.lower(),
        "counts": {"specs": counts.specs, "active": counts.active, "supervisors": counts.supervisors, "workers": counts.workers},
        "children": [child_view(server, path, info) for info in children],
    }


# ---------------------------------------------------------------------- operations


@op("ping")
def _ping(s: ControlServer, ident: bytes, req_id: int, args: dict[str, object]) -> object:
    n = s.node
    return {"pid": os.getpid(), "name": n.spec.name, "config": n.spec.source, "started": n.started, "run_dir": str(n.run_dir),
            "profiles_dir": n.spec.extra.get("profile", {}).get("dir")}  # type: ignore[attr-defined]


@op("status")
def _status(s: ControlServer, ident: bytes, req_id: int, args: dict[str, object]) -> object:
    n = s.node
    tree = supervisor_view(s, "root") if "root" in n.sups else None
    return {"node": _ping(s, ident, req_id, args), "tree": tree, "stopping": n._stopping}


@op("which_children")
def _which(s: ControlServer, ident: bytes, req_id: int, args: dict[str, object]) -> object:
    path = s.supervisor_path(args.get("supervisor"))
    run = s.node.sups[path]
    return [child_view(s, path, info) | {"id": info.id} for info in sv.which_children(run.state)]


@op("count_children")
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


@op("terminate_child")
def _terminate(s: ControlServer, ident: bytes, req_id: int, args: dict[str, object]) -> object:
    path, target = _target_sup(s, args)
    alive = None
    if isinstance(target, int):
        alive = psutil.pid_exists(target)
    return s.submit(path, ident, req_id, sv.TerminateChildCall(target, alive))  # type: ignore[arg-type]


@op("restart_child")
def _restart(s: ControlServer, ident: bytes, req_id: int, args: dict[str, object]) -> object:
    path, target = _target_sup(s, args)
    return s.submit(path, ident, req_id, sv.RestartChildCall(str(target)))


@op("delete_child")
def _delete(s: ControlServer, ident: bytes, req_id: int, args: dict[str, object]) -> object:
    path, target = _target_sup(s, args)
    return s.submit(path, ident, req_id, sv.DeleteChildCall(str(target)))


@op("start_child")
def _start_child(s: ControlServer, ident: bytes, req_id: int, args: dict[str, object]) -> object:
    path = s.supervisor_path(args.get("supervisor"))
    run = s.node.sups[path]
    if run.state.spec.strategy is Strategy.SIMPLE_ONE_FOR_ONE:
        extra = args.get("args") or {}
        if not isinstance(extra, dict):
            raise ControlError(f"start_child on simple_one_for_one supervisor {path!r}: args must be a table/object; got {extra!r}")
        return s.submit(path, ident, req_id, sv.StartChildCall(None, extra))
    spec = args.get("spec")
    if not isinstance(spec, ChildSpec):
        spec = _parse_child(s, path, spec)
    elsewhere = s.find_child(spec.id)
    if elsewhere is not None and elsewhere[0] != path:
        raise ControlError(f"id {spec.id!r} is already used by supervisor {elsewhere[0]!r}; ids are unique in the tree")
    return s.submit(path, ident, req_id, sv.StartChildCall(spec, None))


def _parse_child(s: ControlServer, path: str, raw: object) -> ChildSpec:
    from .config import ConfigError, node_spec_from_mapping

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


@op("kill")
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


@op("resolve")
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


@op("last_exit")
def _last_exit(s: ControlServer, ident: bytes, req_id: int, args: dict[str, object]) -> object:
    rec = s.node.by_id.get(str(args.get("id")))
    return None if rec is None or rec.last_exit is None else str(rec.last_exit)


@op("wait_started")
def _wait_started(s: ControlServer, ident: bytes, req_id: int, args: dict[str, object]) -> object:
    if s.node.started:
        return {"started": True}
    timeout = float(args.get("timeout") or 30.0)  # type: ignore[arg-type]
    s.add_waiter(s.start_waiters, Waiter(ident, req_id, time.monotonic() + timeout, args))
    return DEFERRED
