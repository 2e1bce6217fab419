"""What the node learns about worker processes, and what it feeds their supervisors for it.

Three sources: the launcher (Spawned, SpawnFailed, Reaped; ForkServerLost and
ForkServerRestarted, which are reported and change nothing for running workers),
the notices workers push
to the node's inbound socket ("ready", "start_failed", "ignore", "hb"), and the
heartbeat deadlines (a worker silent for longer is killed and exits `hung`).  Each
becomes an event for the worker's supervisor: ChildStarted, ChildStartFailed,
ChildIgnored or ChildExited.  A mixin of `node.Node`, which owns the state it reads.

A notice is acted on only when it carries the run's tag and has the shape its kind
declares (`frames.NOTICES`); anything else is counted in `inbound_dropped` and
logged at most once a second, and the node keeps serving.
"""

from __future__ import annotations

import logging
import signal
import time
from typing import TYPE_CHECKING, cast

import zmq

from supervisor_tree.node.launchers.base import Event, ForkServerLost, ForkServerRestarted, Reaped, Spawned, SpawnFailed
from supervisor_tree.node.plan import NODE
from supervisor_tree.node.records import Phase, WorkerRec
from supervisor_tree.otp import supervisor as sv
from supervisor_tree.spec import ChildSpec, ExitKind, ExitReason, Heartbeat, NodeSpec
from supervisor_tree.wire.auth import FrameKey
from supervisor_tree.wire.dropped import Dropped
from supervisor_tree.wire.frames import decode_notice
from supervisor_tree.wire.shapes import MALFORMED, BadFrame

if TYPE_CHECKING:
    from supervisor_tree.node.control import ControlServer
    from supervisor_tree.node.eventlog import EventLog
    from supervisor_tree.node.launchers.base import Launcher
    from supervisor_tree.node.systemd import Notifier
    from supervisor_tree.node.timers import Timers

logger = logging.getLogger("supervisor_tree")

__all__ = ["WorkerEvents"]


class WorkerEvents:
    """Launcher events, inbound notices and heartbeat deadlines, turned into supervisor events."""

    by_token: dict[int, WorkerRec]
    by_pid: dict[int, WorkerRec]
    by_id: dict[str, WorkerRec]
    launcher: Launcher
    timers: Timers
    inbound: zmq.Socket[bytes]
    control: ControlServer | None
    events: EventLog | None
    notifier: Notifier
    key: FrameKey
    inbound_dropped: Dropped
    spec: NodeSpec
    woke_ns: int

    def feed(self, path: str, event: object) -> None: ...

    def heartbeat_for(self, spec: ChildSpec) -> Heartbeat:
        return spec.heartbeat or self.spec.heartbeat

    def _on_launcher_event(self, ev: Event) -> None:
        match ev:
            case SpawnFailed(token=token, error=error):
                rec = self.by_token.pop(token, None)
                if rec is None or rec.phase is not Phase.SPAWNING:
                    return
                rec.phase = Phase.DONE
                self.timers.cancel(NODE, ("start_timeout", token))
                if rec.sup is not None:
                    self.feed(rec.sup, sv.ChildStartFailed(rec.worker_id, error))
            case ForkServerLost() | ForkServerRestarted():
                self._on_fork_server(ev)
            case Spawned(token=token, pid=pid, where=where):
                rec = self.by_token.pop(token, None)
                if rec is None:
                    return
                if where is not None:  # placed on another host: its endpoints are known only now
                    rec.host, rec.mailbox, rec.control = where
                if rec.pid is None:
                    rec.pid = pid
                self.by_pid[pid] = rec
                if rec.phase is Phase.DONE and rec.sup is None:
                    self.launcher.kill(pid, signal.SIGKILL)  # abandoned while forking
                if rec.early is not None:  # its "ready" came first: act on it now that its endpoints are known
                    early, rec.early = rec.early, None
                    self._on_inbound(*early)
            case Reaped(pid=pid, reason=reason):
                rec = self.by_pid.pop(pid, None)
                if rec is None:
                    return
                if rec.hung and reason.kind is not ExitKind.NODE_LOST:  # a lost host says more than its silence
                    reason = ExitReason(ExitKind.HUNG, f"no heartbeat for {self.heartbeat_for(rec.spec).deadline:g}s")
                rec.last_exit = reason
                rec.marks["woke"], rec.marks["reaped"] = self.woke_ns, time.monotonic_ns()
                was = rec.phase
                rec.phase = Phase.DONE
                if rec.sup is None:
                    return
                if was is Phase.SPAWNING:
                    self.timers.cancel(NODE, ("start_timeout", rec.token))
                    self.feed(rec.sup, sv.ChildStartFailed(rec.worker_id, reason))
                elif was is Phase.RUNNING:
                    self.feed(rec.sup, sv.ChildExited(rec.worker_id, pid, reason))

    def _drain_inbound(self) -> None:
        while True:
            try:
                frame = self.inbound.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                msg = decode_notice(self.key, frame)
            except BadFrame as exc:
                self.inbound_dropped.drop("a sender (inbound PULL)", exc.kind, exc.reason)
                continue
            self._on_inbound(str(msg[0]), msg)

    def _find(self, worker_id: str, gen: int, pid: int) -> WorkerRec | None:
        rec = self.by_pid.get(pid)
        if rec is None:
            rec = self.by_id.get(worker_id)
            if rec is None or rec.generation != gen or rec.pid not in (None, pid):
                return None
            rec.pid = pid  # the worker spoke before the fork server named it
        return rec if rec.generation == gen else None

    def _on_inbound(self, kind: str, msg: tuple[object, ...]) -> None:
        if kind == "hb":
            pid, stats = msg[3], msg[4]
            rec = self.by_pid.get(pid) if isinstance(pid, int) else None
            if rec is not None and isinstance(stats, dict):
                rec.last_beat = time.monotonic()
                rec.stats = stats
                assert self.control is not None
                self.control.on_stats(rec)
            return
        if kind not in ("ready", "start_failed", "ignore"):
            assert self.control is not None
            if not self.control.on_inbound(kind, msg):
                self.inbound_dropped.drop("a sender (inbound PULL)", MALFORMED, f"unknown notice kind {kind[:40]!r}")
            return
        worker_id, gen, pid = cast(tuple[str, int, int], msg[1:4])  # their types are checked: frames.NOTICES
        rec = self._find(worker_id, gen, pid)
        if rec is None or rec.phase is not Phase.SPAWNING or rec.sup is None:
            return
        if not rec.mailbox:  # placed elsewhere, and the launcher has not named its endpoints yet (Spawned)
            rec.early = (kind, msg)
            return
        self.timers.cancel(NODE, ("start_timeout", rec.token))
        if kind == "ready":
            rec.phase = Phase.RUNNING
            rec.ready_at = rec.last_beat = time.monotonic()
            rec.marks["ready_seen"] = time.monotonic_ns()
            self.feed(rec.sup, sv.ChildStarted(rec.worker_id, pid))
            assert self.control is not None
            self.control.settle_resolves(rec.worker_id)  # its waiting callers first; reports after the pump
        elif kind == "ignore":
            rec.phase = Phase.DONE
            self.feed(rec.sup, sv.ChildIgnored(rec.worker_id))
        else:
            rec.phase = Phase.DONE
            self.feed(rec.sup, sv.ChildStartFailed(rec.worker_id, str(msg[4])))

    def _check_heartbeats(self, now: float) -> None:
        assert self.events is not None
        for rec in list(self.by_pid.values()):
            if rec.phase is not Phase.RUNNING or rec.hung or rec.pid is None:
                continue
            deadline = self.heartbeat_for(rec.spec).deadline
            if now - rec.last_beat > deadline:
                rec.hung = True
                self.events.emit(
                    "hung",
                    supervisor=rec.sup,
                    child=rec.worker_id,
                    pid=rec.pid,
                    generation=rec.generation,
                    reason=f"no heartbeat for {now - rec.last_beat:.1f}s (limit {deadline:g}s); sending SIGKILL",
                )
                self.launcher.kill(rec.pid, signal.SIGKILL)

    def _on_fork_server(self, ev: ForkServerLost | ForkServerRestarted) -> None:
        assert self.events is not None
        if isinstance(ev, ForkServerLost):
            what_next = "running workers go on; lost spawns count as start failures; starting a new fork server"
            self.events.emit("fork_server_lost", supervisor="root", pid=ev.pid, reason=ev.reason,
                             detail={"lost_spawns": ev.lost_spawns, "orphans_killed": ev.orphans, "what_next": what_next})
            self.notifier.status(f"the fork server (pid {ev.pid}) died ({ev.reason}); starting a new one")
        else:
            self.events.emit("fork_server_restarted", supervisor="root", pid=ev.pid,
                             detail={"previous": ev.previous, "standbys_kept": ev.standbys_kept})
            self.notifier.status(f"tree {self.spec.name} up; fork server restarted (pid {ev.pid})")
