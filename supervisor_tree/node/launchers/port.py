"""External programs as children (OTP's ports): a launcher around the fork server's, and the shim that
says for them what a Python worker says itself (ready, heartbeats).

    launcher = PortLauncher(LocalLauncher(run_dir), run_dir, logs)   # what the node uses
    launcher.spawn(SpawnRequest(..., command=Command(("redis-server", "--port", "6380"), ready=...)))

A child with `command` is forked by the fork server like any worker and executes its
program from there (`worker/command.py`: its own process group, output on the node's
FIFOs).  Its pid is the program's, so `status`, `kill`, `profile` (py-spy) and the
events name the program itself.  What this module adds:

* Readiness: once the program has been executed (the exec FIFO: b"1", then EOF),
  and then, per `ready`, at once, when HOST:PORT accepts a connection, or when a line
  of its output contains the text, the shim sends the node ("ready", id, gen, pid),
  exactly as a worker would.  A program that cannot be executed exits with the reason
  (b"E"): the shim never says ready, and the node reports the start error.
* Heartbeats: the shim beats for each running program that is not stopped (SIGSTOP),
  so a frozen program is `hung`, as a frozen worker is.
* Stopping: a stop request (SIGTERM from the node) sends the child's `stop_signal`
  to its whole process group; SIGKILL goes to the group too.  Exits map to OTP's
  reasons: after a stop request, death by the stop signal (or exit 0, or 128+signal)
  is `shutdown`; otherwise exit 0 is `normal`, a signal `killed` / `{signal,NAME}`,
  any other code `{exit_code,N}` (80-82 included: a program's codes mean nothing to us).
* No orphans, no zombies (`groups.py`), for programs and Python workers on this machine
  alike: when a child is reaped, what is left of its process group is killed; the
  sweeper kills every group still registered when the node dies, however it dies; the
  shim reaps the group's dead (the node is a child subreaper, so they become its
  children): a program's every pass while it runs, a worker's once it ended.

Python workers otherwise pass straight through to the wrapped launcher.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

import zmq

from supervisor_tree.node.launchers.base import Event, Launcher, Reaped, Spawned, SpawnFailed
from supervisor_tree.node.launchers.groups import Groups, signal_group
from supervisor_tree.spec import SHUTDOWN, Command, ExitKind, ExitReason, ReadyKind, signal_number
from supervisor_tree.wire import auth, channel
from supervisor_tree.worker.command import exec_fifo
from supervisor_tree.worker.spawn import SpawnRequest

__all__ = ["PortLauncher", "port_reason"]

log = logging.getLogger("supervisor_tree")

_POLL_S = 0.005  # how often the shim looks at programs that are not ready yet
_IDLE_S = 0.1


class LineSource(Protocol):
    """Where the shim hears a program's output (node.worker_logs.LogCollector)."""

    def watch(self, worker_id: str, generation: int, watcher: Any) -> bool: ...


@dataclass(eq=False)
class _Port:
    req: SpawnRequest
    command: Command
    exec_fd: int | None
    pid: int | None = None
    executed: bool = False
    failed: bool = False
    seen: bytes = b""
    line_seen: bool = False
    ready: bool = False
    ready_at: float = 0.0
    next_beat: float = 0.0
    stop_requested: bool = False
    gone: bool = False  # reaped or never spawned: the shim closes its FIFO (it alone reads it)


class PortLauncher:
    """A Launcher: ports handled here, everything else by `inner`.  Thread-safe where the shim reads."""

    def __init__(self, inner: Launcher, run_dir: str, lines: LineSource | None = None, local: bool = True) -> None:
        """`local`: `inner`'s children are this machine's processes (not Ray actors' workers), so
        their process groups are this launcher's to kill and reap."""
        self.inner = inner
        self.local = local
        self.run_dir = run_dir
        self.inbound = f"ipc://{os.path.abspath(run_dir)}/inbound"
        self.lines = lines
        self._lock = threading.Lock()
        self._by_token: dict[int, _Port] = {}
        self._by_pid: dict[int, _Port] = {}
        self._wake = threading.Event()
        self._key: auth.FrameKey | None = None  # read by the shim thread when it starts
        self._closing = False
        self._gone: list[_Port] = []  # for the shim to close
        self.groups = Groups()
        self._shim: threading.Thread | None = None

    def __getattr__(self, name: str) -> Any:  # the wrapped launcher's own extras (pid, standbys_at_hand)
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    # -- the Launcher protocol --

    def start(self) -> None:
        self.inner.start()

    def fileno(self) -> int:
        return self.inner.fileno()

    def spawn(self, req: SpawnRequest) -> None:
        if req.command is not None:
            port = _Port(req, req.command, _open_exec_fifo(exec_fifo(req.run_dir, req.worker_id, req.generation)))
            if req.command.ready.kind is ReadyKind.STDOUT and self.lines is not None:
                text = req.command.ready.target
                self.lines.watch(req.worker_id, req.generation, lambda _stream, line: _mark_seen(port, text, line))
            with self._lock:
                self._by_token[req.token] = port
        self.inner.spawn(req)

    def prepare(self, req: SpawnRequest) -> bool:
        return req.command is None and self.inner.prepare(req)  # a program starts when it is its turn

    def discard(self, token: int) -> None:
        self.inner.discard(token)

    def read_events(self) -> list[Event]:
        events = self.inner.read_events()
        if not (self.local or self._by_token or self._by_pid):
            return events
        return [self._port_event(ev) for ev in events]

    def kill(self, pid: int, sig: int) -> None:
        port = self._by_pid.get(pid)
        if port is None:
            self.inner.kill(pid, sig)
            return
        if sig == signal.SIGTERM:  # the node's stop request: the stop signal, to the whole group
            port.stop_requested = True
            signal_group(pid, signal_number(port.command.stop_signal))
        elif sig == signal.SIGKILL:
            signal_group(pid, sig)
        else:
            self.inner.kill(pid, sig)

    def close(self) -> None:
        self._closing = True
        self._wake.set()
        self.inner.close()
        if self._shim is not None:
            self._shim.join(2.0)
        with self._lock:
            for port in [*self._by_token.values(), *self._by_pid.values(), *self._gone]:
                _close_port(port)
            self._by_token.clear()
            self._by_pid.clear()
            self._gone.clear()
        self.groups.close()

    # -- events --

    def _port_event(self, ev: Event) -> Event:
        if isinstance(ev, SpawnFailed):
            with self._lock:
                port = self._by_token.pop(ev.token, None)
                if port is not None:
                    self._retire(port)
        elif isinstance(ev, Spawned):
            with self._lock:
                port = self._by_token.pop(ev.token, None)
                if port is not None:
                    port.pid = ev.pid
                    self._by_pid[ev.pid] = port
            if port is None:
                if self.local:
                    self.groups.started(ev.pid)
                return ev
            self.groups.started(ev.pid, watch_while_running=True)
            self._ensure_shim()
            self._wake.set()
        elif isinstance(ev, Reaped):
            with self._lock:
                port = self._by_pid.pop(ev.pid, None)
                if port is not None:
                    self._retire(port)
            if (port is not None or self.local) and self.groups.ended(ev.pid):  # what it left behind dies with it
                self._ensure_shim()  # and is reaped as it dies
                self._wake.set()
            if port is not None:
                return Reaped(ev.pid, port_reason(ev.reason, port.stop_requested, port.command.stop_signal))
        return ev

    def _retire(self, port: _Port) -> None:
        """Under the lock: the port is over; the shim (or close) closes its FIFO."""
        port.gone = True
        self._gone.append(port)
        self._wake.set()

    # -- the shim: readiness and heartbeats --

    def _ensure_shim(self) -> None:
        if self._shim is None:
            self._shim = threading.Thread(target=self._run_shim, name="supervise-ports", daemon=True)
            self._shim.start()

    def _run_shim(self) -> None:
        ctx: zmq.Context[Any] = zmq.Context()
        sock = channel.make_socket(ctx, zmq.PUSH)
        channel.connect(sock, self.inbound)
        self._key = auth.key_for(self.run_dir)  # the node's: its notices carry the run's tag like a worker's
        try:
            while not self._closing:
                with self._lock:
                    ports = list(self._by_pid.values())
                    for port in self._gone:
                        _close_port(port)
                    self._gone.clear()
                    self.groups.reap()
                pending = False
                for port in ports:
                    pending |= self._tend(port, sock)
                self._wake.wait(_POLL_S if pending else _IDLE_S)
                self._wake.clear()
        finally:
            sock.close(0)
            ctx.term()

    def _tend(self, port: _Port, sock: zmq.Socket[bytes]) -> bool:
        """Readiness or a heartbeat for one program; True while it is not ready (poll it often)."""
        req, now = port.req, time.monotonic()
        if port.pid is None or port.failed or port.gone:
            return False
        if not port.ready:
            if not (port.executed or _executed(port)) or not _is_ready(port):
                return not port.failed
            port.ready, port.ready_at, port.next_beat = True, now, now + req.heartbeat_interval
            _notify(sock, self._key, ("ready", req.worker_id, req.generation, port.pid))
            return False
        if now >= port.next_beat:
            port.next_beat = now + req.heartbeat_interval
            if not _stopped(port.pid):
                stats = {"uptime_s": round(now - port.ready_at, 3), "command": list(port.command.argv)}
                _notify(sock, self._key, ("hb", req.worker_id, req.generation, port.pid, stats))
        return False


def port_reason(reason: ExitReason, stop_requested: bool, stop_signal: str) -> ExitReason:
    """A program's exit as OTP's reason (see the module docstring)."""
    kind, detail = reason.kind, reason.detail
    code = int(detail) if kind is ExitKind.EXIT_CODE and detail and detail.isdigit() else None
    if stop_requested:
        signum = signal_number(stop_signal)
        if (kind is ExitKind.SIGNALLED and detail == signal.Signals(signum).name) or kind is ExitKind.NORMAL \
                or code == 128 + signum or kind is ExitKind.SHUTDOWN:
            return SHUTDOWN
    # The fork server read these codes as a Python worker's (80 shutdown, 81, 82 error).
    if kind is ExitKind.SHUTDOWN:
        return ExitReason(ExitKind.EXIT_CODE, "80")
    if kind is ExitKind.SHUTDOWN_WITH and detail == "unknown":
        return ExitReason(ExitKind.EXIT_CODE, "81")
    if kind is ExitKind.ERROR and detail == "exit code 82 without a reason file":
        return ExitReason(ExitKind.EXIT_CODE, "82")
    return reason


def _mark_seen(port: _Port, text: str, line: str) -> bool:
    if text in line:
        port.line_seen = True
        return True
    return False


def _executed(port: _Port) -> bool:
    """True once the program replaced the forked process: b"1" came, then EOF (the exec closed it)."""
    fd = port.exec_fd
    if fd is None:  # no FIFO: trust the fork
        port.executed = True
        return True
    try:
        data = os.read(fd, 64)
    except BlockingIOError:
        return False
    if data:
        port.seen += data
        if b"E" in port.seen:
            port.failed = True
        return False
    if port.seen and not port.failed:
        port.executed = True
    return port.executed


def _is_ready(port: _Port) -> bool:
    ready = port.command.ready
    if ready.kind is ReadyKind.EXEC:
        return True
    if ready.kind is ReadyKind.STDOUT:
        return port.line_seen
    host, _, portnum = ready.target.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(portnum)), timeout=0.2):
            return True
    except OSError:
        return False


def _stopped(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"T"
    except (OSError, IndexError):
        return False


def _notify(sock: zmq.Socket[bytes], key: auth.FrameKey | None, notice: tuple[object, ...]) -> None:
    assert key is not None  # set by the shim thread before it tends a port
    with contextlib.suppress(zmq.Again):
        sock.send(channel.encode_notice(key, notice), zmq.NOBLOCK)


def _open_exec_fifo(path: str) -> int | None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    try:
        os.mkfifo(path, 0o600)
        return os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        log.warning("cannot make %s (%s); the program counts as executed once forked", path, exc)
        return None


def _close_port(port: _Port) -> None:
    if port.exec_fd is not None:
        os.close(port.exec_fd)
        port.exec_fd = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(exec_fifo(port.req.run_dir, port.req.worker_id, port.req.generation))
