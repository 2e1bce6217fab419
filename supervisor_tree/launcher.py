"""The launcher: the only code that forks, signals and reaps worker processes.

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
import ctypes
import gc
import importlib
import logging
import os
import pickle
import select
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass
from typing import Callable, Mapping, NoReturn, Protocol, Sequence, Union

import multiprocess

from .spec import KILLED, NORMAL, SHUTDOWN, ExitKind, ExitReason, error, shutdown_with

log = logging.getLogger(__name__)

__all__ = ["SpawnRequest", "Spawned", "SpawnFailed", "Reaped", "Launcher", "LocalLauncher",
           "LauncherError", "LauncherGone", "reason_from_status"]


@dataclass(frozen=True, slots=True)
class SpawnRequest:
    """Everything a new incarnation needs; `start` is "module:Class" or cloudpickled bytes."""

    token: int
    worker_id: str
    generation: int
    start: str | bytes
    args: Mapping[str, object]
    run_dir: str
    inbound: str
    mailbox: str
    control: str
    heartbeat_interval: float
    sys_path: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Spawned:
    token: int
    pid: int


@dataclass(frozen=True, slots=True)
class SpawnFailed:
    """The fork itself failed (e.g. EAGAIN: out of processes); no process exists for `token`."""

    token: int
    error: str


@dataclass(frozen=True, slots=True)
class Reaped:
    pid: int
    reason: ExitReason


Event = Union[Spawned, SpawnFailed, Reaped]


class LauncherError(RuntimeError):
    """The launcher could not start (or was used before start / after close)."""


class LauncherGone(LauncherError):
    """The fork server died: no more spawns or exit reports will come."""


class Launcher(Protocol):
    def start(self) -> None: ...
    def spawn(self, req: SpawnRequest) -> None: ...
    def fileno(self) -> int: ...
    def read_events(self) -> list[Event]: ...
    def kill(self, pid: int, sig: int) -> None: ...
    def close(self) -> None: ...


# ---------------------------------------------------------------------------
# Exit status -> reason

_DEFAULT_REASONS = {80: SHUTDOWN, 81: shutdown_with("unknown"), 82: error("exit code 82 without a reason file")}


def reason_from_status(status: int, reason_file: str | None) -> ExitReason:
    """Map a wait status (and the worker's reason file, which is removed) to an ExitReason."""
    written = _take_reason_file(reason_file) if reason_file else None
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGKILL:
            return KILLED
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return ExitReason(ExitKind.SIGNALLED, name)
    code = os.WEXITSTATUS(status)
    if code == 0:
        return NORMAL
    if code in _DEFAULT_REASONS:
        return written if written is not None else _DEFAULT_REASONS[code]
    return ExitReason(ExitKind.EXIT_CODE, str(code))


def _take_reason_file(path: str) -> ExitReason | None:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    try:
        os.unlink(path)
    except OSError:
        pass
    try:
        reason = pickle.loads(data)
    except Exception:  # noqa: BLE001 - a torn or foreign file: fall back to the code's default
        return None
    return reason if isinstance(reason, ExitReason) else None


# ---------------------------------------------------------------------------
# The node side


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

    @property
    def pid(self) -> int | None:
        """The fork server's pid (None before start)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def standbys_at_hand(self) -> int:
        """How many standbys the next spawns can activate (announced in read_events)."""
        return len(self._standbys)

    def start(self, timeout: float = 60.0) -> None:
        if self._proc is not None:
            raise LauncherError("LocalLauncher.start() was already called")
        _assert_no_zmq_context()
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
            hello = pickle.loads(ours.recv_bytes())
        except EOFError:
            self.close()
            raise LauncherError("the fork server died while starting (see its stderr)") from None
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

    def fileno(self) -> int:
        return int(self._require_conn().fileno())

    def read_events(self) -> list[Event]:
        """Everything the fork server reported so far; never blocks.  Raises LauncherGone once it died."""
        conn = self._require_conn()
        events: list[Event] = []
        while not self._gone and conn.poll(0):
            try:
                kind, payload = pickle.loads(conn.recv_bytes())
                if kind == "events":
                    events.extend(payload)
                elif kind == "standby":  # the fd of its activation socket follows
                    _, fds, _, _ = socket.recv_fds(self._sock, 1, 1)  # type: ignore[arg-type]
                    os.set_inheritable(fds[0], False)
                    self._standbys.append((payload, fds[0]))
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
            self._conn.send_bytes(pickle.dumps(("close",)))
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
            self._require_conn().send_bytes(pickle.dumps(msg, protocol=5))
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


# ---------------------------------------------------------------------------
# The fork server (runs in its own process)


@dataclass(frozen=True, slots=True)
class _ServerConfig:
    parent_pid: int
    run_dir: str
    preload: tuple[str, ...]
    sys_path: tuple[str, ...]
    standby: int
    inbound: str


_PR_SET_PDEATHSIG = 1
_libc: ctypes.CDLL | None = None
_LEN = struct.Struct("<I")
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


def _fork_server_main(conn: object, node_end: object, cfg: _ServerConfig) -> NoReturn:
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
            importlib.import_module("supervisor_tree.worker")
        except BaseException as exc:  # noqa: BLE001 - reported to the node, which raises it from start()
            conn.send_bytes(pickle.dumps(("error", f"preloading failed: {type(exc).__name__}: {exc}")))  # type: ignore[attr-defined]
            os._exit(1)
        gc.freeze()  # what we imported stays shared with the workers: their GC never touches it
        server = _ForkServer(conn, cfg)
        conn.send_bytes(pickle.dumps(("ok", os.getpid())))  # type: ignore[attr-defined]
        server.serve()
    except BaseException:  # noqa: BLE001
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

    def __init__(self, conn: object, cfg: _ServerConfig) -> None:
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
                msg = pickle.loads(conn.recv_bytes())  # type: ignore[attr-defined]
            except (EOFError, OSError):
                self.closing = True  # the node is gone
                return
            kind = msg[0]
            if kind == "spawn":
                self.spawn(pickle.loads(msg[1]))
            elif kind == "activated":
                self.activated(msg[1], pickle.loads(msg[2]))
            elif kind == "discard":
                self.dead_standbys.pop(msg[1], None)
            elif kind == "close":
                self.closing = True
            else:
                log.warning("fork server: unknown request %r; ignored", kind)

    def send(self, msg: tuple[object, ...]) -> None:
        try:
            self.conn.send_bytes(pickle.dumps(msg, protocol=5))  # type: ignore[attr-defined]
        except OSError:
            self.closing = True

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
                _take_reason_file(_reason_file(req, pid))
                _remove_ipc_files(req)
            else:
                _remove_standby_files(self.cfg.run_dir, pid)


def _reason_file(req: SpawnRequest, pid: int) -> str:
    return os.path.join(req.run_dir, "reasons", str(pid))


# ---------------------------------------------------------------------------
# Children of the fork server


def _cold_main(req: SpawnRequest) -> NoReturn:
    from . import worker

    sys.path[:0] = list(req.sys_path)
    worker.run_worker(req)


def _standby_main(r: int, w: int, inbound: str, run_dir: str) -> NoReturn:
    """Make the context and connect to the node, then wait for the request that activates us."""
    from . import worker

    os.close(w)
    prepared = worker.prepare(inbound, standby_in=run_dir)
    head = _read_exactly(r, _LEN.size)
    if head is None:
        os._exit(0)  # the node closed our activation socket: never activated
    data = _read_exactly(r, _LEN.unpack(head)[0])
    os.close(r)
    if data is None:
        os._exit(0)
    req: SpawnRequest = pickle.loads(data)
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
    from .channel import unlink_ipc

    unlink_ipc(req.mailbox)
    unlink_ipc(req.control)


def _remove_standby_files(run_dir: str, pid: int) -> None:
    """The sockets a standby bound under its own names (see worker.prepare)."""
    for suffix in (".mbx", ".ctl"):
        try:
            os.unlink(os.path.join(run_dir, "w", f".standby-{pid}{suffix}"))
        except OSError:
            pass

