"""The fork server (a zygote): a process that imports the preloaded modules, holds no
ZeroMQ context, and forks one process per worker incarnation.

Runs in its own process, started by `local.LocalLauncher.start()`. It keeps a few
*standbys*: pre-forked processes with their ZeroMQ context made, connected to the
node, each waiting on an activation socket whose other end the node holds. Exits
are reaped on SIGCHLD, mapped to an `ExitReason` (`base.reason_from_status`) and
reported over the pipe to the node.

No orphans: the fork server, the standbys and every worker set
PR_SET_PDEATHSIG=SIGKILL, so the death of the node (even by SIGKILL) kills them.

The messages on the pipe are `pipe.py`'s; one that is not of their shape is dropped
(counted, logged at most once a second) and the fork server keeps serving.  It forks
after the node made the run's key (`wire.auth`): its children inherit it in memory.
"""

from __future__ import annotations

import ctypes
import gc
import importlib
import logging
import os
import select
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

from supervisor_tree.node.launchers import pipe, refresh
from supervisor_tree.node.launchers.base import (
    Event,
    Reaped,
    Spawned,
    SpawnFailed,
    reason_from_status,
    take_reason_file,
)
from supervisor_tree.wire import auth
from supervisor_tree.wire.dropped import Dropped
from supervisor_tree.wire.shapes import BadFrame
from supervisor_tree.worker.code import code_roots
from supervisor_tree.worker.spawn import SpawnRequest

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    parent_pid: int
    run_dir: str
    preload: tuple[str, ...]
    sys_path: tuple[str, ...]
    standby: int
    inbound: str


_PR_SET_PDEATHSIG = 1
_libc: ctypes.CDLL | None = None
LEN = struct.Struct("<I")
_STANDBY_MAX_EARLY_DEATHS = 3
_REFILL_DELAY = 0.005  # s after a spawn before a replacement standby is forked


def _die_with_parent(expected_parent: int) -> None:
    """PR_SET_PDEATHSIG=SIGKILL, then close the race where the parent died before the prctl."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != expected_parent:
        os._exit(1)


def _reset_signals() -> None:
    """Undo handlers inherited from the node: default dispositions, no wakeup fd, nothing blocked.

    SIGINT is ignored: Ctrl-C reaches the whole foreground process group, and the
    node, not each worker, decides how the tree stops.
    """
    signal.set_wakeup_fd(-1)
    for sig in signal.valid_signals():
        try:
            if callable(signal.getsignal(sig)):
                signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError, TypeError):
            pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def fork_server_main(conn: object, node_end: object, cfg: ServerConfig) -> NoReturn:
    node_end.close()  # type: ignore[attr-defined]  # else we never see EOF when the node closes its end
    code = 0
    try:
        _die_with_parent(cfg.parent_pid)
        _reset_signals()
        sys.path[:0] = list(cfg.sys_path)
        try:
            for name in cfg.preload:
                importlib.import_module(name)
            importlib.import_module("zmq")
            importlib.import_module("supervisor_tree.worker.main")
        except BaseException as exc:  # noqa: BLE001 - reported to the node, which raises it from start()
            conn.send_bytes(pipe.encode(("error", f"preloading failed: {type(exc).__name__}: {exc}")))  # type: ignore[attr-defined]
            os._exit(1)
        gc.freeze()  # what we imported stays shared with the workers: their GC never touches it
        server = _ForkServer(conn, cfg)
        conn.send_bytes(pipe.encode(("ok", os.getpid())))  # type: ignore[attr-defined]
        server.announce_code()
        server.serve()
    except BaseException:
        log.exception("fork server failed")
        code = 1
    finally:
        os._exit(code)


class _ForkServer:
    """The fork server's loop: requests from the node, SIGCHLD from the workers.

    Standbys: each one waits on an activation socket whose other end is handed to the node
    (SCM_RIGHTS), so the node activates it without a hop through here, then says
    ("activated", pid, request) and gets `Spawned` back.

    Invariant: every child is in exactly one of `workers` (activated or forked
    for a request: reported Spawned, will be reported Reaped), `standbys` (alive,
    never reported) or `dead_standbys` (reaped before the node said whether it
    had activated it: its wait status waits for "activated" or "discard").
    """

    def __init__(self, conn: object, cfg: ServerConfig) -> None:
        self.conn = conn
        self.fd: int = conn.fileno()  # type: ignore[attr-defined]
        self.sock = socket.socket(fileno=os.dup(self.fd))  # the same pipe, for handing over fds
        self.cfg = cfg
        self.pid = os.getpid()
        self.inbound = cfg.inbound
        self.workers: dict[int, SpawnRequest] = {}
        self.standbys: set[int] = set()
        self.dead_standbys: dict[int, int] = {}  # pid -> wait status
        self.standby_target = cfg.standby
        self.standby_early_deaths = 0
        self.last_spawn = 0.0
        self.closing = False
        self.dropped = Dropped(log, "fork server")
        # The run's key, inherited from the node.  Held here (and wire.auth so among the fork server's own
        # modules, which a code refresh never drops), so every fork, before and after a refresh, inherits it.
        self.key = auth.held_key(cfg.run_dir)
        self.preload = cfg.preload
        self.code_epoch = 0  # the snapshot of the project's modules its forks inherit (refresh.py)
        self.retired: set[int] = set()  # standbys killed by a refresh: reaped, never reported
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # wakes select via the wakeup fd
        signal.signal(signal.SIGTERM, self._on_sigterm)  # multiprocess terminates daemons at node exit

    def _on_sigterm(self, signum: int, frame: object) -> None:
        self.closing = True

    # -- loop --

    def serve(self) -> None:
        fds = [self.fd, self.wake_r]
        while not self.closing:
            refill_at = self.last_spawn + _REFILL_DELAY if len(self.standbys) < self.standby_target else None
            timeout = None if refill_at is None else max(0.0, refill_at - time.monotonic())
            ready, _, _ = select.select(fds, [], [], timeout)
            if self.wake_r in ready:
                _drain_fd(self.wake_r)
                self.reap()
            if self.fd in ready:
                self.handle_requests()
            if not ready and refill_at is not None and not self.closing and time.monotonic() >= refill_at:
                # Only when idle, and not while the standby just activated is starting
                # (on a small machine the fork would compete with it for a core).
                self.fork_standby()
        self.shutdown()

    def handle_requests(self) -> None:
        conn = self.conn
        while not self.closing and conn.poll(0):  # type: ignore[attr-defined]
            try:
                data = conn.recv_bytes()  # type: ignore[attr-defined]
            except (EOFError, OSError):
                self.closing = True  # the node is gone
                return
            try:
                self.handle(pipe.decode_request(data))
            except BadFrame as exc:
                self.dropped.drop("the node (pipe)", exc.kind, exc.reason)

    def handle(self, msg: tuple[object, ...]) -> None:
        """One request, its shape checked (`pipe.REQUESTS`); raises BadFrame for a spawn request that is not one."""
        match msg:
            case ("spawn", bytes(data)):
                self.spawn(pipe.decode_spawn_request(data))
            case ("activated", int(pid), bytes(data)):
                self.activated(pid, pipe.decode_spawn_request(data))
            case ("discard", int(pid)):
                self.dead_standbys.pop(pid, None)
            case ("refresh", tuple(preload), tuple(also)):
                self.refresh(pipe.names(preload), pipe.names(also))
            case ("close",):
                self.closing = True

    def send(self, msg: tuple[object, ...]) -> None:
        try:
            self.conn.send_bytes(pipe.encode(msg))  # type: ignore[attr-defined]
        except OSError:
            self.closing = True

    # -- the project's code (supervise reload --code) --

    def announce_code(self, problems: Sequence[str] = ()) -> None:
        """A new snapshot of the project's modules held here (what forks inherit), sent to the node."""
        self.code_epoch += 1
        files, own = refresh.take_snapshot(self.cfg.sys_path, self.code_epoch)
        self.send(("code", (self.code_epoch, files, tuple(problems), tuple(own))))

    def refresh(self, preload: Sequence[str], also: Sequence[str]) -> None:
        """Import the project's modules again from disk; the standbys forked with the old ones go."""
        for pid in self.standbys:
            os.kill(pid, signal.SIGKILL)
        self.retired |= self.standbys
        self.standbys = set()
        self.preload = tuple(preload)
        problems = refresh.reimport(code_roots(self.cfg.sys_path), self.preload, also)
        gc.freeze()
        self.announce_code(problems)

    # -- spawning --

    def spawn(self, req: SpawnRequest) -> None:
        """A cold spawn: the node had no standby."""
        self.last_spawn = time.monotonic()
        self.inbound = req.inbound
        try:
            pid = self.fork(lambda: _cold_main(req))
        except OSError as exc:
            self.send(("events", [SpawnFailed(req.token, f"fork failed: {exc}")]))
            return
        self.workers[pid] = req
        self.send(("events", [Spawned(req.token, pid)]))

    def activated(self, pid: int, req: SpawnRequest) -> None:
        self.last_spawn = time.monotonic()
        self.inbound = req.inbound
        if pid in self.standbys:
            self.standbys.discard(pid)
            self.standby_early_deaths = 0
            self.workers[pid] = req
            self.send(("events", [Spawned(req.token, pid)]))
        elif pid in self.dead_standbys:  # it died right after its activation, before we heard of it
            self.standby_early_deaths = max(0, self.standby_early_deaths - 1)
            reason = reason_from_status(self.dead_standbys.pop(pid), _reason_file(req, pid))
            _remove_ipc_files(req)
            self.send(("events", [Spawned(req.token, pid), Reaped(pid, reason)]))
        else:
            log.warning("fork server: the node activated %d, which is not a standby; ignored", pid)

    def fork_standby(self) -> None:
        # A socketpair rather than a pipe: the node writes with MSG_NOSIGNAL, so a
        # standby that died is an EPIPE error even if the node let SIGPIPE kill.
        theirs, ours = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        r, w = theirs.detach(), ours.detach()
        try:
            pid = self.fork(lambda: _standby_main(r, w, self.inbound, self.cfg.run_dir))
        except OSError as exc:
            log.warning("fork server: cannot fork a standby (%s); spawning cold", exc)
            self.standby_target = 0
            os.close(w)
            return
        finally:
            os.close(r)
        try:
            self.standbys.add(pid)
            self.send(("standby", pid))
            socket.send_fds(self.sock, [b"F"], [w])
        except OSError:
            self.closing = True
        finally:
            os.close(w)

    def fork(self, child: Callable[[], object]) -> int:
        for stream in (sys.stdout, sys.stderr):  # else the child would print our buffered output again
            stream.flush()
        # SIGTERM stays blocked in the child until the worker has its handler in place.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        try:
            pid = os.fork()
            if pid == 0:
                try:
                    self.in_child()
                    child()
                finally:
                    os._exit(70)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        return pid

    def in_child(self) -> None:
        _die_with_parent(self.pid)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        # A child holding the node's pipe would hide the fork server's death from the node.
        self.sock.close()
        for fd in (self.fd, self.wake_r, self.wake_w):
            os.close(fd)

    # -- reaping --

    def reap(self) -> None:
        events: list[Event] = []
        cleanup: list[SpawnRequest] = []
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            req = self.workers.pop(pid, None)
            if req is not None:
                events.append(Reaped(pid, reason_from_status(status, _reason_file(req, pid))))
                cleanup.append(req)
            elif pid in self.standbys:
                self.standby_died(pid, status)
            elif pid in self.retired:
                self.retired.discard(pid)
                _remove_standby_files(self.cfg.run_dir, pid)
        if events:
            self.send(("events", events))
        for req in cleanup:  # after the news: the node restarts while we tidy up
            _remove_ipc_files(req)

    def standby_died(self, pid: int, status: int) -> None:
        self.standbys.discard(pid)
        self.dead_standbys[pid] = status
        _remove_standby_files(self.cfg.run_dir, pid)
        self.standby_early_deaths += 1
        if self.standby_early_deaths >= _STANDBY_MAX_EARLY_DEATHS:
            log.error("fork server: %d standbys in a row died before use (last: pid %d, wait status %d); "
                      "spawning cold from now on", self.standby_early_deaths, pid, status)
            self.standby_target = 0

    def shutdown(self) -> None:
        victims = list(self.workers) + list(self.standbys)
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in victims:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            req = self.workers.get(pid)
            if req is not None:
                take_reason_file(_reason_file(req, pid))
                _remove_ipc_files(req)
            else:
                _remove_standby_files(self.cfg.run_dir, pid)


def _reason_file(req: SpawnRequest, pid: int) -> str:
    return os.path.join(req.run_dir, "reasons", str(pid))


# ---------------------------------------------------------------------------
# Children of the fork server


def _cold_main(req: SpawnRequest) -> NoReturn:
    from supervisor_tree.worker import main as worker

    sys.path[:0] = list(req.sys_path)
    worker.run_worker(req)


def _standby_main(r: int, w: int, inbound: str, run_dir: str) -> NoReturn:
    """Make the context and connect to the node, then wait for the request that activates us."""
    from supervisor_tree.worker import main as worker

    os.close(w)
    prepared = worker.prepare_standby(inbound, run_dir)
    head = _read_exactly(r, LEN.size)
    if head is None:
        os._exit(0)  # the node closed our activation socket: never activated
    data = _read_exactly(r, LEN.unpack(head)[0])
    os.close(r)
    if data is None:
        os._exit(0)
    try:
        req = pipe.decode_spawn_request(data)
    except BadFrame as exc:  # only the node writes here; a bug, not an attack: say so and go
        log.error("standby %d: activated with a bad request (%s); exiting", os.getpid(), exc.reason)
        os._exit(1)
    sys.path[:0] = list(req.sys_path)
    worker.run_worker(req, prepared)


def _read_exactly(fd: int, n: int) -> bytes | None:
    chunks = []
    while n:
        chunk = os.read(fd, n)
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _drain_fd(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _remove_ipc_files(req: SpawnRequest) -> None:
    """A worker's socket files outlive it (libzmq 4.3 does not remove them, nor does SIGKILL)."""
    from supervisor_tree.wire.channel import unlink_ipc

    unlink_ipc(req.mailbox)
    unlink_ipc(req.control)


def _remove_standby_files(run_dir: str, pid: int) -> None:
    """The sockets a standby bound under its own names (see worker.prepare)."""
    for suffix in (".mbx", ".ctl"):
        try:
            os.unlink(os.path.join(run_dir, "w", f".standby-{pid}{suffix}"))
        except OSError:
            pass
