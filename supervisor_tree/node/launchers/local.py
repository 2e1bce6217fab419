"""The local launcher: the node's side of the fork server, the only code that forks, signals and reaps.

`LocalLauncher` is a fork server (a zygote).  The node starts it once, before it
creates any ZeroMQ context; the fork server imports the preloaded modules, never
creates a context, and forks one process per worker incarnation.  It keeps a few
*standbys*: pre-forked processes with their ZeroMQ context made, connected to the
node and waiting on an activation socket whose other end the node holds, so that
a spawn is the node writing the request into it (no fork, no hop through the fork
server).  Exits are reaped on SIGCHLD, mapped to an `ExitReason`, and reported
back over the node's pipe to the fork server.

    launcher = LocalLauncher(run_dir, preload=["myapp.workers"])
    launcher.start()                       # before any zmq.Context in this process
    launcher.spawn(SpawnRequest(token=1, worker_id="counter", generation=1, ...))
    ...poll launcher.fileno(); for ev in launcher.read_events(): Spawned / Reaped...
    launcher.close()                       # SIGKILLs and reaps every worker

Invariants: for a pid, `Spawned` always precedes its `Reaped`; a pid is reported
`Reaped` exactly once; standbys that were never activated are never reported.
No orphans: the fork server, the standbys and every worker have
PR_SET_PDEATHSIG=SIGKILL, so the death of the node (even by SIGKILL) kills them.
"""

from __future__ import annotations

import collections
import gc
import logging
import os
import pickle
import socket
import sys
from collections.abc import Sequence

import multiprocess

from supervisor_tree.node.launchers import pipe
from supervisor_tree.node.launchers.base import CodeSnapshots, Event, LauncherError, LauncherGone
from supervisor_tree.node.launchers.forkserver import LEN as _LEN
from supervisor_tree.node.launchers.forkserver import ServerConfig as _ServerConfig
from supervisor_tree.node.launchers.forkserver import fork_server_main as _fork_server_main
from supervisor_tree.wire import auth
from supervisor_tree.wire.dropped import Dropped
from supervisor_tree.wire.shapes import BadFrame
from supervisor_tree.worker.spawn import SpawnRequest

log = logging.getLogger(__name__)

__all__ = ["LocalLauncher"]


class LocalLauncher:
    """A fork server on this machine.  See the module docstring.

    `standby`: how many pre-forked processes to keep ready (0: fork on every spawn).
    Call `start()` from the node's main thread (PR_SET_PDEATHSIG follows the thread
    that forked), before this process creates any zmq.Context.
    """

    def __init__(self, run_dir: str, preload: Sequence[str] = (), sys_path: Sequence[str] = (),
                 *, standby: int = 2, inbound: str | None = None) -> None:
        self.run_dir = os.path.abspath(run_dir)
        self.preload = tuple(preload)
        self.sys_path = tuple(sys_path)
        self.standby = standby
        self.inbound = inbound or f"ipc://{self.run_dir}/inbound"
        for sub in ("reasons", "w"):
            os.makedirs(os.path.join(self.run_dir, sub), mode=0o700, exist_ok=True)
        self._conn: multiprocess.connection.Connection | None = None
        self._sock: socket.socket | None = None  # the same pipe, for receiving standbys' fds
        self._proc: multiprocess.Process | None = None
        self._standbys: collections.deque[tuple[int, int]] = collections.deque()  # (pid, activation socket fd)
        self._gone = False
        self.dropped = Dropped(log, "launcher")  # fork-server reports not of their shape (pipe.REPORTS)
        self.code = CodeSnapshots()  # what the fork server holds of the project's code (reload --code)

    @property
    def pid(self) -> int | None:
        """The fork server's pid (None before start)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def standbys_at_hand(self) -> int:
        """How many standbys the next spawns can activate (announced in read_events)."""
        return len(self._standbys)

    def start(self, timeout: float = 60.0) -> None:
        """Fork the fork server.  The run's key must be in memory first (the node made it; else
        one is made here): the fork server and its workers inherit it and never read RUN/key."""
        if self._proc is not None:
            raise LauncherError("LocalLauncher.start() was already called")
        _assert_no_zmq_context()
        if auth.held_key(self.run_dir) is None:
            auth.create_key(self.run_dir)
        mp = multiprocess.get_context("fork")
        ours, theirs = mp.Pipe(duplex=True)
        cfg = _ServerConfig(os.getpid(), self.run_dir, self.preload, self.sys_path, self.standby, self.inbound)
        proc = mp.Process(target=_fork_server_main, args=(theirs, ours, cfg), name="supervisor_tree-fork-server",
                          daemon=True)
        proc.start()
        theirs.close()
        self._conn, self._proc = ours, proc
        self._sock = socket.socket(fileno=os.dup(ours.fileno()))
        if not ours.poll(timeout):
            self.close()
            raise LauncherError(f"the fork server did not start within {timeout} s")
        try:
            hello = pipe.decode_report(ours.recv_bytes())
        except EOFError:
            self.close()
            raise LauncherError("the fork server died while starting (see its stderr)") from None
        except BadFrame as exc:
            self.close()
            raise LauncherError(f"the fork server said something unexpected while starting: {exc.reason}") from None
        if hello[0] != "ok":
            self.close()
            raise LauncherError(f"the fork server could not start: {hello[1]}")

    def spawn(self, req: SpawnRequest) -> None:
        """Ask for a new incarnation; `Spawned(req.token, pid)` follows in read_events.

        With a standby at hand the request goes straight into its activation socket
        (it starts at once) and the fork server is told afterwards; else the fork
        server forks a new process.
        """
        data = _dumps_request(req)
        while self._standbys:
            pid, fd = self._standbys.popleft()
            try:
                with socket.socket(fileno=fd) as activation:
                    activation.sendall(_LEN.pack(len(data)) + data, socket.MSG_NOSIGNAL)
            except OSError:  # it died while waiting: the fork server has reaped or will reap it
                self._send(("discard", pid))
                continue
            self._send(("activated", pid, data))
            return
        self._send(("spawn", data))

    def refresh(self, preload: Sequence[str], also: Sequence[str] = ()) -> None:
        """Have the fork server import the project's modules again from disk (and `also`); its
        standbys go.  Done when `code.epoch` grows (read_events); `code.problems` says what failed."""
        while self._standbys:
            os.close(self._standbys.popleft()[1])
        self.code.refreshing += 1
        self._send(("refresh", tuple(preload), tuple(also)))

    def fileno(self) -> int:
        return int(self._require_conn().fileno())

    def read_events(self) -> list[Event]:
        """Everything the fork server reported so far; never blocks.  Raises LauncherGone once it died."""
        conn = self._require_conn()
        events: list[Event] = []
        while not self._gone and conn.poll(0):
            try:
                report = pipe.decode_report(conn.recv_bytes())
                if report[0] == "events":
                    events.extend(report[1])  # type: ignore[arg-type]  # checked: pipe.decode_report
                elif report[0] == "standby":  # the fd of its activation socket follows
                    _, fds, _, _ = socket.recv_fds(self._sock, 1, 1)  # type: ignore[arg-type]
                    os.set_inheritable(fds[0], False)
                    if self.code.refreshing:  # forked with the old code; the fork server has killed it
                        os.close(fds[0])
                    else:
                        self._standbys.append((report[1], fds[0]))  # type: ignore[arg-type]
                elif report[0] == "code":
                    self.code.received(*report[1])  # type: ignore[misc]  # checked: pipe.decode_report
                else:
                    self.dropped.drop("the fork server (pipe)", "malformed", f"{report[0]!r} after the start")
            except BadFrame as exc:
                self.dropped.drop("the fork server (pipe)", exc.kind, exc.reason)
            except (EOFError, OSError, ValueError, IndexError):
                self._gone = True
        if self._gone and not events:
            raise LauncherGone("the fork server is gone: no worker can be spawned or reaped any more")
        return events

    def kill(self, pid: int, sig: int) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    def close(self, timeout: float = 5.0) -> None:
        """SIGKILL every worker, reap them, stop the fork server.  Idempotent."""
        if self._proc is None or self._conn is None or self._conn.closed:
            return
        while self._standbys:
            os.close(self._standbys.popleft()[1])  # a standby that reads EOF exits
        try:
            self._conn.send_bytes(pipe.encode(("close",)))
        except OSError:
            pass
        self._proc.join(timeout)
        if self._proc.is_alive():
            log.warning("the fork server (pid %s) did not stop within %s s; sending SIGKILL", self._proc.pid, timeout)
            self._proc.kill()
            self._proc.join(timeout)
        if self._sock is not None:
            self._sock.close()
        self._conn.close()
        self._gone = True

    def _send(self, msg: tuple[object, ...]) -> None:
        try:
            self._require_conn().send_bytes(pipe.encode(msg))
        except OSError as exc:
            self._gone = True
            raise LauncherGone(f"the fork server is gone: {exc}") from None

    def _require_conn(self) -> multiprocess.connection.Connection:
        if self._conn is None:
            raise LauncherError("call LocalLauncher.start() first")
        if self._conn.closed:
            raise LauncherError("the launcher is closed")
        return self._conn

    def __enter__(self) -> LocalLauncher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _dumps_request(req: SpawnRequest) -> bytes:
    try:
        return pickle.dumps(req, protocol=5)
    except Exception:  # noqa: BLE001 - args holding closures: cloudpickle can ship them
        import cloudpickle

        data: bytes = cloudpickle.dumps(req, protocol=5)
        return data


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
