"""The node: the only loop.  Feeds events to the supervisors, carries out their actions.

Owns the mapping between the pure supervisors (supervisor.py) and the world:
worker processes (through the launcher), the inbound socket workers report on,
timers, heartbeats and the event log.  It decides nothing about restarts: that is
`supervisor.decide`'s job.  Control requests are served by `control.ControlServer`.

    node = Node(load_config("app.toml"), run_dir=Path("/tmp/run"))
    reason = node.run()          # returns when the root supervisor exits

Invariants:
- a worker record is reachable by token until the fork server names its pid, then by pid
  until it is reaped; `by_id` holds the newest incarnation of each worker id;
- every event for a supervisor goes through `_feed`, in order, from one queue, so a
  supervisor's actions never interleave with another event of the same supervisor.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import socket
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import zmq

from supervisor_tree.node import control_ops, host_ops, retry_ops  # noqa: F401  (importing registers their ops)
from supervisor_tree.node.control import ControlServer
from supervisor_tree.node.eventlog import EventLog
from supervisor_tree.node.launchers.base import Launcher, LauncherGone
from supervisor_tree.node.launchers.local import LocalLauncher
from supervisor_tree.node.launchers.port import PortLauncher
from supervisor_tree.node.life import Life
from supervisor_tree.node.logfiles import LogLimits, SharedLog
from supervisor_tree.node.placed import backend_of, bind_inbound, close_transport, open_transport, placed_launcher
from supervisor_tree.node.plan import NODE, kill_ahead, processes_first, standby_for
from supervisor_tree.node.records import Phase, SupHandle, SupRun, WorkerRec
from supervisor_tree.node.reload import ReloadService
from supervisor_tree.node.retries import RetryTable
from supervisor_tree.node.starts import Starts
from supervisor_tree.node.systemd import Notifier
from supervisor_tree.node.timers import Timers
from supervisor_tree.node.worker_events import WorkerEvents
from supervisor_tree.node.worker_logs import LogCollector
from supervisor_tree.otp import supervisor as sv
from supervisor_tree.spec import (
    KILLED,
    SHUTDOWN,
    ChildSpec,
    ExitReason,
    NodeSpec,
)
from supervisor_tree.wire import auth, rundir
from supervisor_tree.wire.dropped import Dropped
from supervisor_tree.worker.spawn import SpawnRequest

logger = logging.getLogger("supervisor_tree")


class Node(WorkerEvents, Life, Starts):
    """One tree's node: see the module docstring."""

    def __init__(
        self,
        spec: NodeSpec,
        run_dir: Path,
        *,
        launcher: Launcher | None = None,
        on_started: Callable[[bool, str], None] | None = None,
    ) -> None:
        self.spec = spec
        self.run_dir = rundir.ensure(Path(run_dir))
        self._on_started = on_started
        self.notifier = Notifier.from_environ()  # before the fork server: its children must not inherit it
        self._init_life()
        self.by_id: dict[str, WorkerRec] = {}
        sys_path = (spec.config_dir,) if spec.config_dir else ()
        self.sys_path = tuple(str(p) for p in sys_path)
        # The fork server must exist before this process creates a ZeroMQ context.
        self.backend = backend_of(spec)
        placed = None if launcher else placed_launcher(spec, self.run_dir, self.sys_path, self.by_id)
        inner = launcher or placed or LocalLauncher(
            str(self.run_dir), preload=spec.preload, sys_path=self.sys_path, standby=standby_for(spec.tree),
            name=spec.name,
        )
        self.logs = LogCollector(self.run_dir, spec.extra.get("logs"))  # type: ignore[arg-type]  # RUN/logs/ID.log
        # External programs (command), and the process groups of the children on this machine.
        self.launcher: Launcher = PortLauncher(inner, str(self.run_dir), self.logs, local=placed is None)
        self.sups: dict[str, SupRun] = {}
        self.by_token: dict[int, WorkerRec] = {}
        self.by_pid: dict[int, WorkerRec] = {}
        self.queue: deque[tuple[str, object]] = deque()
        self._tokens = itertools.count(1)
        self._generations: dict[str, int] = {}  # the newest generation of each child id, node-wide
        self._ahead: dict[tuple[str, str, int], SpawnRequest] = {}  # starts handed to standbys ahead (starts.py)
        self.timers = Timers()
        self.exit_reason: ExitReason | None = None
        self.started = False
        self.stopping = False
        self._signals: list[int] = []
        self.control: ControlServer | None = None
        self.events: EventLog | None = None
        self.inbound_dropped = Dropped(logger, "inbound socket")
        self.woke_ns = 0  # when the loop's poll last returned

    # ------------------------------------------------------------------ lifecycle

    def run(self) -> ExitReason:
        """Start the tree and serve until the root supervisor exits.  Returns its reason."""
        lock = rundir.RunDirLock(self.run_dir)
        if not lock.acquire():
            raise RuntimeError(f"a node is already running in {self.run_dir} (stop it, or use another --run-dir)")
        rundir.clean_stale(self.run_dir)
        try:
            # A fresh key per run, made before the fork server so that it and every worker inherit it.
            self.key = auth.create_key(self.run_dir)
            open_transport(self.run_dir, self.backend)  # backend = "ray": CURVE keys for tcp://
            self.launcher.start()
            self._open_sockets()
            try:
                return self._serve()
            except BaseException as exc:
                self._end(f"crash: {type(exc).__name__}: {exc}")
                raise
            finally:
                self._shutdown_everything()
        except BaseException as exc:
            self._end(f"crash: {type(exc).__name__}: {exc}")
            raise
        finally:
            lock.release()
            self.notifier.close()

    def _open_sockets(self) -> None:
        self.logs.start()  # a thread: only now that the fork server exists
        self.ctx = zmq.Context()
        self.inbound = self.ctx.socket(zmq.PULL)
        self.inbound.linger = 0
        self.inbound_ep = bind_inbound(self.inbound, self.run_dir, self.backend)
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.linger = 0
        self.pub.bind(rundir.endpoint(self.run_dir, "events"))
        limits = LogLimits.of(self.spec.extra.get("logs"))  # type: ignore[arg-type]  # [node] logs
        self.events = EventLog(self.run_dir / "events.jsonl", publish=self.pub.send, limits=limits)
        self.node_log = SharedLog.of_this_process(self.run_dir / "node.log", limits)  # detached: our stderr
        self.control = ControlServer(self, self.ctx, rundir.endpoint(self.run_dir, "control"), control_ops.OPS, self.key)
        self.reloads = ReloadService(self)  # `supervise reload`, SIGHUP (reload_ops registers its ops in OPS)
        self.control.extensions.append(self.reloads)
        self.control.extensions.append(RetryTable(self))  # policies, shared retry budgets, per-pair figures
        if (self.spec.extra.get("profile") or {}).get("trigger"):  # type: ignore[attr-defined]  # [profile.trigger]
            from supervisor_tree.profiling.trigger import TriggerWatcher
            self.control.extensions += TriggerWatcher.from_node(self)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        self.poller = zmq.Poller()
        self.poller.register(self.control.socket, zmq.POLLIN)
        self.poller.register(self.inbound, zmq.POLLIN)
        self.poller.register(self.launcher.fileno(), zmq.POLLIN)
        self.poller.register(self._wake_r.fileno(), zmq.POLLIN)
        rundir.write_info(
            self.run_dir,
            rundir.NodeInfo(os.getpid(), str(self.run_dir), self.spec.source, time.time(), self.spec.name),
        )

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._signals.append(signum)

    def _serve(self) -> ExitReason:
        assert self.events is not None
        self.events.emit("node_started", supervisor="root", detail={"pid": os.getpid(), "config": self.spec.source})
        root = SupRun("root", sv.init_state(self.spec.tree, "root"), None, None, None)
        self.sups["root"] = root
        self.feed("root", sv.InitRequested())
        self._pump()
        next_hb_check = next_log_check = time.monotonic()
        while self.exit_reason is None:
            timeout = self._poll_timeout()
            ready = dict(self.poller.poll(timeout))
            self.woke_ns = time.monotonic_ns()  # a restart's first mark (records.WorkerRec.marks)
            if self._wake_r.fileno() in ready:
                self._drain_wakeup()
            self._handle_signals()
            if self.launcher.fileno() in ready:
                self._drain_inbound()  # a worker's last words arrive before its death is handled
                try:
                    for ev in self.launcher.read_events():
                        self.logs.on_launcher_event(ev, self.by_pid, self.by_token)
                        self._on_launcher_event(ev)
                except LauncherGone as exc:
                    self._fork_server_gone(f"fork_server_lost: {exc}")
                self._pump()  # a restart's request goes out before control requests and timers are served
            if self.inbound in ready:
                self._drain_inbound()
            assert self.control is not None
            if self.control.socket in ready:
                self.control.serve_pending()
            self._fire_timers()
            now = time.monotonic()
            if now >= next_hb_check:
                self._check_heartbeats(now)
                next_hb_check = now + 0.1
            self.notifier.tick(now)
            if now >= next_log_check and self.node_log is not None:
                self.node_log.check()
                next_log_check = now + 1.0
            self._pump()
        return self.exit_reason

    def _poll_timeout(self) -> int:
        deadline = self.timers.next_deadline()
        wait = 0.1 if deadline is None else min(deadline - time.monotonic(), 0.1)
        return max(0, int(wait * 1000) + (1 if wait > 0 else 0))

    def _drain_wakeup(self) -> None:
        try:
            while self._wake_r.recv(512):
                pass
        except BlockingIOError:
            pass

    def _shutdown_everything(self) -> None:
        """After the root exited (or on error): nothing may outlive the node."""
        self._kill_all()
        try:
            self.launcher.close()
        finally:
            self.logs.close()
            if self.events is not None:
                self._emit_node_stop()
                self.events.close()
            if self.control is not None:
                self.control.close()
            if hasattr(self, "ctx"):
                self.inbound.close(0)
                self.pub.close(0)
                close_transport(self.ctx, self.run_dir)
                self.ctx.term()
                signal.set_wakeup_fd(-1)
            (self.run_dir / "node.json").unlink(missing_ok=True)
            auth.forget_key(self.run_dir, remove_file=True)

    def _kill_all(self) -> None:
        for rec in list(self.by_pid.values()):
            if rec.pid is not None:
                self.launcher.kill(rec.pid, signal.SIGKILL)

    # ------------------------------------------------------------------ supervisors

    def feed(self, path: str, event: object) -> None:
        self.queue.append((path, event))

    def _pump(self) -> None:
        while self.queue:
            path, event = self.queue.popleft()
            run = self.sups.get(path)
            if run is None:
                continue
            run.state, actions = sv.decide(run.state, event, time.monotonic())  # type: ignore[arg-type]
            first, rest = processes_first(actions)
            try:
                for action in first:
                    self._execute(run, action)
                for pid in kill_ahead(run.state, first):  # brutal_kill siblings die together (plan.py)
                    if self._alive(pid):
                        self.launcher.kill(pid, signal.SIGKILL)
                self._start_ahead(run)  # the plan's next starts prepared meanwhile (starts.py)
            finally:  # the reports of a decision are written even if the fork server is gone
                for action in rest:
                    self._execute(run, action)
        if self._ahead:
            self._forget_ahead()
        assert self.control is not None
        self.control.after_pump()

    def _execute(self, run: SupRun, action: object) -> None:
        match action:
            case sv.Spawn(key=key, spec=spec, args=args, generation=gen):
                if spec.is_supervisor:
                    self._start_supervisor(run, key, spec, gen)
                else:
                    self._spawn_worker(run.path, key, spec, args, gen)
            case sv.AskStop(key=key, pid=pid):
                if isinstance(pid, SupHandle):
                    self.feed(pid.path, sv.StopRequested(SHUTDOWN))
                elif isinstance(pid, int):
                    self.launcher.kill(pid, signal.SIGTERM)
            case sv.Kill(key=key, pid=pid):
                if isinstance(pid, SupHandle):
                    self._kill_subtree(pid.path)
                    self.feed(run.path, sv.ChildExited(key, pid, KILLED))
                elif isinstance(pid, int) and self._alive(pid):  # reaped: its exit is queued, the pid may be reused
                    self.launcher.kill(pid, signal.SIGKILL)
            case sv.SetTimer(key=key, delay=delay):
                self.set_timer(run.path, key, delay)
            case sv.CancelTimer(key=key):
                self.timers.cancel(run.path, key)
            case sv.Report():
                self._report(run, action)
            case sv.Reply(ref=ref, result=result):
                assert self.control is not None
                self.control.api_reply(ref, result)
            case sv.Ready():
                self._on_supervisor_ready(run)
            case sv.Exit(reason=reason):
                self._on_supervisor_exit(run, reason)
            case _:
                logger.error("supervisor %s produced an unknown action %r; ignored", run.path, action)

    def _alive(self, pid: int) -> bool:
        """Not reaped yet: a worker the launcher named (by_pid), or one that spoke first (by_token)."""
        return self._rec_of(pid) is not None

    def _rec_of(self, pid: int) -> WorkerRec | None:
        """Its record: by_pid, or by_token for one whose "ready" was read before its Spawned."""
        return self.by_pid.get(pid) or next((r for r in self.by_token.values() if r.pid == pid), None)

    def _report(self, run: SupRun, rep: sv.Report) -> None:
        assert self.events is not None
        pid = rep.pid if isinstance(rep.pid, int) else None
        reason, detail = self.describe_report(run.path, rep.kind, rep.key, rep.reason, dict(rep.detail) if rep.detail else None)
        if rep.kind is sv.ReportKind.STARTED and pid is not None and (rec := self._rec_of(pid)) is not None:
            detail = {**(detail or {}), "mono_ns": rec.marks}
        self.events.emit(rep.kind.name.lower(), supervisor=run.path, child=rep.key, pid=pid,
                         generation=rep.generation, reason=reason,
                         detail=self.logs.report_detail(rep.kind.name.lower(), rep.key, rep.generation, rep.reason, detail))

    def _start_supervisor(self, parent: SupRun, key: str, spec: ChildSpec, gen: int) -> None:
        assert spec.supervisor is not None
        path = f"{parent.path}/{key}"
        self._generations[key] = max(gen, self._generations.get(key, 0))
        handle = SupHandle(path, gen)
        gens = {c.id: self._generations.get(c.id, 0) for c in spec.supervisor.children}
        self.sups[path] = SupRun(path, sv.init_state(spec.supervisor, path, gens), parent.path, key, handle)
        self.feed(path, sv.InitRequested())

    def _on_supervisor_ready(self, run: SupRun) -> None:
        run.ready = True
        assert self.events is not None
        if run.parent is None:
            self.started = True
            self.events.emit("tree_started", supervisor=run.path)
            workers = sum(1 for r in self.by_pid.values() if r.phase is Phase.RUNNING)
            self.notifier.ready(f"tree {self.spec.name} up: {workers} workers")
            if self._on_started:
                self._on_started(True, "started")
        else:
            assert run.key is not None
            self.feed(run.parent, sv.ChildStarted(run.key, run.handle))

    def _on_supervisor_exit(self, run: SupRun, reason: ExitReason) -> None:
        assert self.events is not None
        self.sups.pop(run.path, None)
        gave_up = self.gave_up(run.path)
        self.events.emit("supervisor_exited", supervisor=run.path, reason=reason,
                         detail={"gave_up": gave_up} if gave_up else None)
        if run.parent is None:
            self._on_root_exit(reason)
            self.exit_reason = reason
            if not self.started and self._on_started:
                self._on_started(False, self.ending or str(reason))
            return
        assert run.key is not None
        if run.ready:
            self.feed(run.parent, sv.ChildExited(run.key, run.handle, reason))
        else:
            self.feed(run.parent, sv.ChildStartFailed(run.key, reason))

    def _kill_subtree(self, path: str) -> None:
        """Untrappable kill of a nested supervisor: its workers die at once, no orderly stop."""
        doomed = [p for p in self.sups if p == path or p.startswith(path + "/")]
        for p in doomed:
            self.sups.pop(p, None)
        for rec in list(self.by_pid.values()) + list(self.by_token.values()):
            if rec.sup in doomed:
                rec.sup = None
                rec.phase = Phase.DONE
                if rec.pid is not None:
                    self.launcher.kill(rec.pid, signal.SIGKILL)

    # ------------------------------------------------------------------ workers

    # ------------------------------------------------------------------ timers

    def set_timer(self, owner: str, key: tuple[object, ...], delay: float) -> None:
        """`owner`: a supervisor path (it gets TimerFired(key)) or NODE (the node and its extensions)."""
        self.timers.set(owner, key, delay)

    def _fire_timers(self) -> None:
        now = time.monotonic()
        while (due := self.timers.pop_due(now)) is not None:
            owner, key = due
            if owner == NODE:
                self._on_node_timer(key)
            else:
                self.feed(owner, sv.TimerFired(key))

    def _on_node_timer(self, key: tuple[object, ...]) -> None:
        match key:
            case ("start_timeout", int(token)):
                rec = self.by_token.get(token) or next((r for r in self.by_pid.values() if r.token == token), None)
                if rec is None or rec.phase is not Phase.SPAWNING or rec.sup is None:
                    return
                rec.phase = Phase.DONE
                if rec.pid is not None:
                    self.launcher.kill(rec.pid, signal.SIGKILL)
                self.feed(rec.sup, sv.ChildStartFailed(rec.worker_id, f"start_timeout: not ready after {rec.spec.start_timeout:g}s"))
            case _:
                assert self.control is not None
                self.control.on_timer(key)
