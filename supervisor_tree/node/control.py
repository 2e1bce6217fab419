"""The node's control API: requests from the CLI and Python clients, served in the node loop.

Owns the serving of the control protocol (one JSON frame each way over ROUTER/DEALER,
tagged with the run's key: `wire.requests`) and the table of operations.  Handlers read
the node's state or feed requests to a supervisor; they never fork or signal except
through the node's launcher.

Request:  [req_id, op, args]              Reply: [req_id, ok, value]

Nothing a client sends reaches a handler unchecked: a frame without the run's tag is
answered with a refusal and never parsed; a request whose op is unknown, or whose
arguments are not of the types its op declares (`Op.args`), is refused; all three
are counted (`dropped`) and logged at most once a second per client.

Operations: ping, status, which_children, count_children, start_child,
terminate_child, restart_child, delete_child, kill, stop, resolve, last_exit,
wait_started; reload and reload_code (node/reload_ops.py).  A request that must wait (start_child, stop, resolve, ...)
is answered later, when its supervisor answers or its condition holds.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import zmq

from supervisor_tree.node.records import NodeState, Phase, WorkerRec
from supervisor_tree.otp import supervisor as sv
from supervisor_tree.spec import ChildType, Overflow
from supervisor_tree.wire.auth import FrameKey
from supervisor_tree.wire.dropped import Dropped
from supervisor_tree.wire.requests import decode_request, encode_answer, request_id_of
from supervisor_tree.wire.shapes import MALFORMED, UNAUTHENTICATED, BadFrame, describe, is_a

logger = logging.getLogger("supervisor_tree")

Handler = Callable[["ControlServer", bytes, int, dict[str, object]], object]
DEFERRED = object()  # a handler's "I will answer later"


@dataclass(frozen=True, slots=True)
class Op:
    """A control operation: its handler and the JSON types each of its arguments may have."""

    handler: Handler
    args: Mapping[str, tuple[type, ...]] = field(default_factory=dict)

    def check(self, name: str, args: dict[str, object]) -> str | None:
        """Why `args` do not fit this op (one line), or None."""
        for key, value in args.items():
            allowed = self.args.get(key)
            if allowed is None:
                known = ", ".join(self.args) or "none"
                return f"{name}: unknown argument {key[:40]!r}; it takes {known}"
            if not is_a(value, allowed):
                names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
                return f"{name}: argument {key!r} must be {names}; got {describe(value)}"
        return None


class ControlError(Exception):
    """A request the node refuses; the message is the one-line answer."""


@dataclass
class Waiter:
    ident: bytes
    req_id: int
    deadline: float
    args: dict[str, object]


class ControlServer:
    def __init__(self, node: NodeState, ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str,
                 handlers: Mapping[str, Op], key: FrameKey) -> None:
        self.node = node
        self.handlers = handlers  # op name -> Op (control_ops.OPS)
        self.key = key
        self.dropped = Dropped(logger, "control socket")
        self.socket = ctx.socket(zmq.ROUTER)
        self.socket.linger = 0
        self.socket.bind(endpoint)
        self._refs = itertools.count(1)
        self.api_waiters: dict[int, tuple[bytes, int]] = {}
        self.resolve_waiters: dict[str, list[Waiter]] = {}
        self.stop_waiters: list[tuple[bytes, int]] = []
        self.start_waiters: list[Waiter] = []
        self.extensions: list[object] = []  # e.g. the profiler's trigger watcher
        self.reply_hooks: dict[int, Callable[[object], None]] = {}  # the node's own API calls (a reload's steps)

    # ------------------------------------------------------------------ transport

    def serve_pending(self) -> None:
        while True:
            try:
                parts = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            ident = parts[0]
            if len(parts) != 2:
                self._refuse(ident, 0, MALFORMED, f"a control request is one frame; got {len(parts) - 1}")
                continue
            frame = parts[1]
            try:
                req = decode_request(self.key, frame)
            except BadFrame as exc:
                rid = request_id_of(self.key, frame) if exc.kind != UNAUTHENTICATED else 0
                self._refuse(ident, rid, exc.kind, exc.reason)
                continue
            req_id, name, args = req.req_id, req.op, req.args
            op = self.handlers.get(name)
            problem = f"unknown operation {name[:40]!r}; known: {', '.join(sorted(self.handlers))}" if op is None \
                else op.check(name, args)  # fmt: skip
            if op is None or problem is not None:
                self._refuse(ident, req_id, MALFORMED, problem or name)
                continue
            try:
                value = op.handler(self, ident, req_id, args)
            except ControlError as exc:
                self._send(ident, req_id, False, str(exc))
                continue
            except Exception as exc:  # a bug in a handler must not take the node down
                logger.exception("control operation %s failed", name)
                self._send(ident, req_id, False, f"internal error in {name}: {exc!r}")
                continue
            if value is not DEFERRED:
                self._send(ident, req_id, True, value)

    def _refuse(self, ident: bytes, req_id: int, kind: str, reason: str) -> None:
        """Count, log (rate-limited) and answer a request the node will not serve."""
        self.dropped.drop(f"client {ident.hex()[:16]}", kind, reason)
        why = "it does not carry the run's tag (read the key from RUN/key)" if kind == UNAUTHENTICATED else reason
        self._send(ident, req_id, False, f"{kind} control request refused: {why}")

    def _send(self, ident: bytes, req_id: int, ok: bool, value: object) -> None:
        try:
            frame = encode_answer(self.key, req_id, ok, value)
        except (TypeError, ValueError, RecursionError) as exc:  # e.g. a worker's statistics() made a cycle
            frame = encode_answer(self.key, req_id, False, f"the answer does not make JSON: {exc}")
        try:
            self.socket.send_multipart([ident, frame], zmq.NOBLOCK)
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
        hook = self.reply_hooks.pop(ref, None)
        if hook is not None:
            hook(result)
            return
        waiter = self.api_waiters.pop(ref, None)
        if waiter is None:
            return
        ident, req_id = waiter
        match result:
            case sv.Ok(pid=pid):
                self._send(ident, req_id, True, {"ok": True, "pid": pid_view(pid)})
            case sv.ApiError(reason=reason, pid=pid, detail=detail):
                value: dict[str, object] = {"ok": False, "error": reason, "pid": pid_view(pid)}
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
            self.settle_resolves(worker_id)

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

    def settle_resolves(self, worker_id: str) -> None:
        """Answer `worker_id`'s waiting resolves whose condition holds (asked after each pump, and at
        once when it says ready: its callers learn of it before its reports are written)."""
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

        node = self.node
        after = args.get("after_generation") or 0
        rec = node.by_id.get(worker_id)
        if rec is not None and rec.phase is Phase.RUNNING and rec.generation > after and rec.pid is not None:  # type: ignore[operator]
            return {
                "id": worker_id,
                "pid": rec.pid,
                "generation": rec.generation,
                "mailbox": rec.mailbox,
                "host": rec.host or None,  # placed on another host: its pid is not one of this machine's
                "control": rec.control,
                "retry": None if rec.spec.retry is None else rec.spec.retry.to_json(),  # RetryPolicy.from_json
                "command": None if rec.spec.command is None else str(rec.spec.command),  # a port: no mailbox
                # backpressure past mailbox_limit: the client's send queue to it is bounded too
                "mailbox_limit": rec.spec.mailbox_limit if rec.spec.mailbox_overflow is Overflow.BACKPRESSURE else None,
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
        self.node.feed(path, sv.ApiRequest(ref, call))  # type: ignore[arg-type]
        return DEFERRED


    def submit_own(self, path: str, call: object, on_reply: Callable[[object], None]) -> None:
        """A dynamic-API call of the node's own: `on_reply(result)` once the supervisor answers."""
        ref = next(self._refs)
        self.reply_hooks[ref] = on_reply
        self.node.feed(path, sv.ApiRequest(ref, call))  # type: ignore[arg-type]


def pid_view(pid: object) -> object:
    """A child's pid as a client sees it: an int, None, or the repr of a nested supervisor's handle."""
    if pid is None or isinstance(pid, int):
        return pid
    return repr(pid)
