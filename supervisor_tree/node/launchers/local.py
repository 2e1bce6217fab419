"""The local launcher: the node's side of the fork server, and the node's reaper.

`LocalLauncher` runs a fork server (a zygote, forkserver.py) that forks one process
per worker incarnation, and keeps a few *standbys*: pre-forked processes with their
ZeroMQ context made, waiting on an activation socket whose other end the node holds,
so that a spawn is the node writing the request into it (no fork, no hop through the
fork server).  Every worker is forked through an intermediate that exits at once, so
this process (a child subreaper) is its parent: it holds a pidfd per worker, reaps
it and maps its end to an `ExitReason`.

The fork server is therefore not a single point of failure.  When it dies, running
workers and standbys go on; the spawns it had not answered fail (`SpawnFailed`, the
supervisors restart them by their rules); what it left half-made is killed; a new one
is executed and takes over (`ForkServerLost`, then `ForkServerRestarted`).  More than
FORK_SERVER_LOSSES losses within FORK_SERVER_PERIOD s, or a replacement that cannot
start, and `read_events` raises `LauncherGone` (the node ends with that reason).

    launcher = LocalLauncher(run_dir, preload=["myapp.workers"], name="myapp")
    launcher.start()                       # before any zmq.Context in this process
    launcher.spawn(SpawnRequest(token=1, worker_id="counter", generation=1, ...))
    launcher.prepare(req); ...; launcher.spawn(req)   # a start ahead of its turn: only its go waits
    ...poll launcher.fileno(); for ev in launcher.read_events(): Spawned / Reaped / ...
    launcher.close()                       # SIGKILLs and reaps every worker

Invariants: for a pid, `Spawned` always precedes its `Reaped`; a pid is reported
`Reaped` exactly once; standbys that were never activated are never reported.
No orphans: the fork server, the standbys and every worker have PR_SET_PDEATHSIG=SIGKILL
against this process, so its death (even by SIGKILL) kills them.
"""

from __future__ import annotations

import collections
import gc
import logging
import os
import resource
import select
import sys
import time
from collections.abc import Sequence

from supervisor_tree.node.launchers import osproc, pipe
from supervisor_tree.node.launchers.base import (
    CodeSnapshots,
    Event,
    ForkServerLost,
    ForkServerRestarted,
    LauncherError,
    LauncherGone,
    Reaped,
    Spawned,
    SpawnFailed,
    reason_from_status,
    take_reason_file,
)
from supervisor_tree.node.launchers.entry import GO, LEN
from supervisor_tree.node.launchers.handoff import StandbyHandoff, dumps_request
from supervisor_tree.node.launchers.orphans import remove_ipc_files, remove_standby_files, sweep
from supervisor_tree.node.launchers.pipe import ServerConfig
from supervisor_tree.node.launchers.reaper import Reaper
from supervisor_tree.node.launchers.server import ServerProcess, exec_server, fork_server
from supervisor_tree.spec import WORKER_OOM_SCORE_ADJ, ExitKind
from supervisor_tree.wire import auth
from supervisor_tree.wire.dropped import Dropped
from supervisor_tree.wire.shapes import BadFrame
from supervisor_tree.worker.spawn import SpawnRequest

log = logging.getLogger(__name__)

__all__ = ["LocalLauncher", "FORK_SERVER_LOSSES", "FORK_SERVER_PERIOD"]

FORK_SERVER_LOSSES, FORK_SERVER_PERIOD = 5, 60.0  # more losses than this within that many seconds: give up
_FD_LIMIT = 1 << 16  # a pidfd per worker: raise the soft limit of open files up to this (or the hard limit)


class LocalLauncher(StandbyHandoff):
    """A fork server on this machine, and the reaper of what it forks.  See the module docstring.

    `standby`: how many pre-forked processes to keep ready (0: fork on every spawn).
    `name`: the tree's name, in every process title.  Call `start()` from the node's main
    thread (PR_SET_PDEATHSIG follows the thread that forked), before this process creates
    any zmq.Context.
    """

    def __init__(self, run_dir: str, preload: Sequence[str] = (), sys_path: Sequence[str] = (),
                 *, standby: int = 2, inbound: str | None = None, name: str = "supervisor_tree",
                 standby_oom_score_adj: int = WORKER_OOM_SCORE_ADJ) -> None:
        self.run_dir = os.path.abspath(run_dir)
        self.preload = tuple(preload)
        self.sys_path = tuple(sys_path)
        self.standby = standby
        self.name = name
        self.standby_oom_score_adj = standby_oom_score_adj
        self.inbound = inbound or f"ipc://{self.run_dir}/inbound"
        for sub in ("reasons", "w"):
            os.makedirs(os.path.join(self.run_dir, sub), mode=0o700, exist_ok=True)
        self._server: ServerProcess | None = None
        self._epoll: select.epoll | None = None
        self._wake = -1  # an eventfd: events made here (activations) wake the node's poll
        self._reaper: Reaper | None = None
        self._standbys: collections.deque[tuple[int, int]] = collections.deque()  # (pid, activation socket fd)
        self._held: dict[int, tuple[int, int]] = {}  # token -> (pid, fd) of a standby prepared ahead (prepare)
        self._cold: dict[int, SpawnRequest] = {}  # token -> a spawn sent to the fork server, not answered yet
        self._pending: list[Event] = []
        self._tidy: list[SpawnRequest] = []
        self._losses: collections.deque[float] = collections.deque()
        self._was_subreaper = False
        self._previous_server = 0  # the pid of the fork server a replacement replaces
        self._failed: str | None = None  # why no fork server can be had any more
        self._failure_told = False
        self._closed = False
        self.dropped = Dropped(log, "launcher")  # fork-server reports not of their shape (pipe.REPORTS)
        self.code = CodeSnapshots()  # what the fork server holds of the project's code (reload --code)

    @property
    def pid(self) -> int | None:
        """The fork server's pid (None before start, or while there is none)."""
        return self._server.pid if self._server is not None else None

    def start(self, timeout: float = 60.0) -> None:
        """Fork the fork server.  The run's key must be in memory first (the node made it; else
        one is made here): the fork server and its workers inherit it and never read RUN/key."""
        if self._epoll is not None:
            raise LauncherError("LocalLauncher.start() was already called")
        _assert_no_zmq_context()
        if auth.held_key(self.run_dir) is None:
            auth.create_key(self.run_dir)
        self._was_subreaper = osproc.set_subreaper(True)
        _raise_fd_limit()
        self._epoll = select.epoll()
        self._reaper = Reaper(self._epoll)
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._epoll.register(self._wake, select.EPOLLIN)
        try:
            self._use(fork_server(self._config()))
            assert self._server is not None
            self._server.wait_hello(timeout)
        except BaseException:
            self.close()
            raise

    def _config(self) -> ServerConfig:
        return ServerConfig(os.getpid(), self.run_dir, self.preload, self.sys_path, self.standby, self.inbound,
                            self.name, tuple(self.standby_pids), self.standby_oom_score_adj, self.code.epoch)

    def _use(self, server: ServerProcess) -> None:
        assert self._epoll is not None
        self._server = server
        self._epoll.register(server.conn.fileno(), select.EPOLLIN)
        self._epoll.register(server.pidfd, select.EPOLLIN)

    # -- spawning

    def spawn(self, req: SpawnRequest) -> None:
        """Ask for a new incarnation; `Spawned(req.token, pid)` follows in read_events (or SpawnFailed).

        With a standby at hand the request goes straight into its activation socket
        (it starts at once) and the fork server is told afterwards; else the fork
        server forks a new process.  A request handed ahead (`prepare`) gets its go.
        """
        if (held := self._held.pop(req.token, None)) is not None:  # prepared ahead: its go
            if self._activate(*held, req, GO):
                return
            self._send(("discard", held[0]))  # it died while held
        data = dumps_request(req)
        while self._standbys:
            pid, fd = self._standbys.popleft()
            if self._activate(pid, fd, req, LEN.pack(len(data)) + data):
                return
            self._send(("discard", pid))
        if self._server is None:
            self._post(SpawnFailed(req.token, self._failed or "no fork server"))
            return
        self._cold[req.token] = req
        self._send(("spawn", data))

    def refresh(self, preload: Sequence[str], also: Sequence[str] = ()) -> None:
        """Have the fork server import the project's modules again from disk (and `also`); its
        standbys go (their activation sockets closed: they exit, reaped here).  Done when
        `code.epoch` grows (read_events); `code.problems` says what failed.  So do the ones
        prepared ahead (they hold the old code): those starts take a new standby (or a fork) at their turn."""
        while self._standbys:
            os.close(self._standbys.popleft()[1])
        for _, fd in self._held.values():
            os.close(fd)
        self._held.clear()
        self.code.refreshing += 1
        self._send(("refresh", tuple(preload), tuple(also)))

    def _post(self, event: Event) -> None:
        self._pending.append(event)
        os.eventfd_write(self._wake, 1)

    def _send(self, msg: tuple[object, ...]) -> None:
        """To the fork server; a dead one is noticed by its pidfd (and its spawns fail then)."""
        if self._server is not None:
            try:
                self._server.send(msg)
            except OSError:
                pass

    def fileno(self) -> int:
        if self._epoll is None:
            raise LauncherError("call LocalLauncher.start() first")
        return self._epoll.fileno()

    # -- events

    def read_events(self) -> list[Event]:
        """Everything that happened so far; never blocks.

        Raises LauncherGone once (the first call after the fork server was lost for good);
        after that, spawns fail and running workers are still reaped and reported.
        """
        if self._epoll is None or self._closed:
            raise LauncherError("the launcher is not running")
        if self._failed is not None and not self._failure_told and not self._pending:
            self._failure_told = True
            raise LauncherGone(self._failed)
        events, self._pending = self._pending, []
        try:
            os.eventfd_read(self._wake)
        except BlockingIOError:
            pass
        ready = {fd for fd, _ in self._epoll.poll(0)}
        server = self._server
        if server is not None and (server.conn.fileno() in ready or server.pidfd in ready):
            events += self._read_server(server)
            if server.eof or server.pidfd in ready:
                events += self._server_lost(server)
        for fd in ready:
            pid = self._require_reaper().pid_of(fd)
            if pid is not None and (event := self._reap(pid)) is not None:
                events.append(event)
        self._tidy_up()
        return events

    def _read_server(self, server: ServerProcess) -> list[Event]:
        events: list[Event] = []
        conn = server.conn
        while not server.eof and conn.poll(0):
            try:
                msg = pipe.decode_report(conn.recv_bytes())
                if not server.up:
                    if msg[0] != "ok":
                        self._fail(f"the fork server (pid {self._previous_server}) died and a new one could not "
                                   f"start: {msg[1]}")
                        server.eof = True
                        break
                    server.take_hello(msg)
                    events.append(ForkServerRestarted(server.pid, self._previous_server, len(self._standbys)))
                elif msg[0] == "events":
                    for event in msg[1]:  # type: ignore[attr-defined]  # checked: pipe.decode_report
                        events += self._from_server(event)
                elif msg[0] == "standby":  # the fd of its activation socket follows
                    self._take_standby(server, msg[1])  # type: ignore[arg-type]  # checked: pipe.decode_report
                elif msg[0] == "code":
                    self.code.received(*msg[1])  # type: ignore[misc]  # checked: pipe.decode_report
                else:
                    self.dropped.drop("the fork server (pipe)", "malformed", f"{msg[0]!r} after the start")
            except BadFrame as exc:
                self.dropped.drop("the fork server (pipe)", exc.kind, exc.reason)
            except (EOFError, OSError, ValueError, IndexError):
                server.eof = True
        return events

    def _from_server(self, event: Event) -> list[Event]:
        match event:
            case Spawned(token=token, pid=pid):
                req = self._cold.pop(token, None)
                if req is None:
                    return []
                self._require_reaper().watch(pid, req)
            case SpawnFailed(token=token):
                self._cold.pop(token, None)
        return [event]

    def _server_lost(self, server: ServerProcess) -> list[Event]:
        """It died: fail its unanswered spawns, kill what it left half-made, start a new one."""
        assert self._epoll is not None
        self._epoll.unregister(server.conn.fileno())
        self._epoll.unregister(server.pidfd)
        reason = server.reap()
        self._server = None
        lost = [SpawnFailed(token, f"fork_server_lost: the fork server (pid {server.pid}) died ({reason}) before "
                                   "it forked this worker") for token in self._cold]
        self._cold.clear()
        reaper = self._require_reaper()
        orphans = sweep(self.name, reaper.pids)
        for pid in orphans:
            reaper.watch(pid)
        log.warning("the fork server (pid %d) died (%s); %d spawn(s) lost, %d half-made process(es) killed; "
                    "running workers go on", server.pid, reason, len(lost), len(orphans))
        now = time.monotonic()
        self._losses.append(now)
        while self._losses and self._losses[0] < now - FORK_SERVER_PERIOD:
            self._losses.popleft()
        if len(self._losses) > FORK_SERVER_LOSSES:
            self._fail(f"the fork server died {len(self._losses)} times within {FORK_SERVER_PERIOD:g} s "
                       f"(last: pid {server.pid}, {reason}); not starting another")
        elif self._failed is None:
            try:
                self._previous_server = server.pid
                self._use(exec_server(self._config()))
            except OSError as exc:
                self._fail(f"the fork server (pid {server.pid}) died ({reason}) and could not be started again: {exc}")
        return [*lost, ForkServerLost(server.pid, reason, len(lost), len(orphans))]

    def _fail(self, why: str) -> None:
        if self._failed is None:
            self._failed = why
            os.eventfd_write(self._wake, 1)  # the next read_events raises

    # -- reaping

    def _require_reaper(self) -> Reaper:
        if self._reaper is None:
            raise LauncherError("call LocalLauncher.start() first")
        return self._reaper

    def _reap(self, pid: int) -> Reaped | None:
        ended = self._require_reaper().reap(pid)
        if ended is None:
            return None
        req, status = ended
        if req is None:  # a standby never activated (or an orphan): never reported
            self._standby_gone(pid)
            return None
        self._tidy.append(req)
        return Reaped(pid, reason_from_status(status, _reason_file(req, pid)))

    def _tidy_up(self) -> None:
        """A worker's socket files outlive it: removed after the news of its end went out."""
        while self._tidy:
            remove_ipc_files(self._tidy.pop())

    def kill(self, pid: int, sig: int) -> None:
        self._require_reaper().kill(pid, sig)

    # -- the end

    def close(self, timeout: float = 5.0) -> None:
        """SIGKILL every worker and standby, reap them, stop the fork server.  Idempotent."""
        if self._epoll is None or self._reaper is None or self._closed:
            return
        self._closed = True
        reaper = self._reaper
        server, self._server = self._server, None
        if server is not None:  # first, so that everything it made is known (announced) here
            server.stop(timeout)
            self._read_server(server)
            if server.reap().kind is not ExitKind.NORMAL:  # killed mid-work: it may have left a process unannounced
                for pid in sweep(self.name, reaper.pids):
                    reaper.watch(pid)
        while self._standbys:
            os.close(self._standbys.popleft()[1])  # a standby that reads EOF exits
        for _, fd in self._held.values():
            os.close(fd)
        self._held.clear()
        for pid, req in reaper.kill_and_reap_all(time.monotonic() + timeout):
            if req is not None:
                take_reason_file(_reason_file(req, pid))
                remove_ipc_files(req)
            else:
                remove_standby_files(self.run_dir, pid)
        self._tidy_up()
        self._epoll.close()
        os.close(self._wake)
        try:
            osproc.set_subreaper(self._was_subreaper)
        except OSError:
            pass

    def __enter__(self) -> LocalLauncher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _reason_file(req: SpawnRequest, pid: int) -> str:
    return os.path.join(req.run_dir, "reasons", str(pid))


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = _FD_LIMIT if hard == resource.RLIM_INFINITY else min(hard, _FD_LIMIT)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def _assert_no_zmq_context() -> None:
    zmq = sys.modules.get("zmq")
    if zmq is None:
        return
    live = [obj for obj in gc.get_objects() if isinstance(obj, zmq.Context) and not obj.closed]
    if live or getattr(zmq.Context, "_instance", None) is not None:
        raise LauncherError(
            "LocalLauncher.start() must run before this process creates any zmq.Context "
            f"({len(live)} live context(s) found): a fork of a process with a ZeroMQ context "
            "inherits its I/O threads' state. Start the launcher first, then create contexts."
        )
