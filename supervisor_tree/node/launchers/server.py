"""One fork server process as the node holds it: how it is started, its pipe, its pidfd, its end.

Owns starting a fork server: `fork_server` forks it (only before this process has a
ZeroMQ context), `exec_server` executes a fresh interpreter (any time: what a node
with live sockets must do to replace one that died).  Decides nothing about when.

    server = fork_server(cfg)               # or exec_server(cfg)
    server.wait_hello(60.0)                 # ("ok", pid) from it, or LauncherError
    ... server.conn carries requests and events; server.pidfd is readable once it died
    reason = server.reap()
"""

from __future__ import annotations

import os
import signal
import socket
import sys

from multiprocess.connection import Connection

from supervisor_tree.node.launchers import pipe
from supervisor_tree.node.launchers.base import LauncherError, reason_from_status
from supervisor_tree.node.launchers.forkserver import Conn, fork_server_main
from supervisor_tree.node.launchers.pipe import ServerConfig
from supervisor_tree.spec import ExitReason, error
from supervisor_tree.wire.shapes import BadFrame

__all__ = ["ServerProcess", "fork_server", "exec_server"]


class ServerProcess:
    """A fork server this process started: its pid, a pidfd on it, the pipe to it."""

    def __init__(self, pid: int, conn: Conn) -> None:
        self.pid = pid
        self.conn = conn
        self.pidfd = os.pidfd_open(pid)
        self.sock = socket.socket(fileno=os.dup(conn.fileno()))  # the same pipe, for receiving standbys' fds
        self.up = False  # it said ("ok", pid)
        self.eof = False  # its end of the pipe closed
        self.reason: ExitReason | None = None  # once reaped

    def wait_hello(self, timeout: float) -> None:
        """Block until it says it is ready; LauncherError (with its reason) if it cannot."""
        if not self.conn.poll(timeout):
            raise LauncherError(f"the fork server did not start within {timeout:g} s")
        try:
            hello = pipe.decode_report(self.conn.recv_bytes())
        except (EOFError, OSError):
            raise LauncherError("the fork server died while starting (see its stderr)") from None
        except BadFrame as exc:
            raise LauncherError(f"the fork server said something unexpected while starting: {exc.reason}") from None
        self.take_hello(hello)

    def take_hello(self, hello: tuple[object, ...]) -> None:
        if hello[0] != "ok":
            raise LauncherError(f"the fork server could not start: {hello[1]}")
        self.up = True

    def send(self, msg: tuple[object, ...]) -> None:
        self.conn.send_bytes(pipe.encode(msg))

    def stop(self, timeout: float) -> None:
        """Ask it to exit and wait up to `timeout` (then SIGKILL it).  What it sent stays readable; reap() next."""
        if self.reason is not None:
            return
        try:
            self.send(("close",))
        except OSError:
            pass
        if not _readable(self.pidfd, timeout):
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            _readable(self.pidfd, timeout)

    def reap(self) -> ExitReason:
        """Wait for its end (SIGKILL first if it still runs) and close everything; its exit reason."""
        if self.reason is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid == 0:
                    signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
                    _, status = os.waitpid(self.pid, 0)
                self.reason = reason_from_status(status, None)
            except ChildProcessError:  # not ours to reap (never happens to a server we started)
                self.reason = error("its exit status was collected elsewhere")
            for closeable in (self.sock, self.conn):
                closeable.close()
            os.close(self.pidfd)
        return self.reason


def _readable(fd: int, timeout: float) -> bool:
    import select

    return bool(select.select([fd], [], [], max(0.0, timeout))[0])


def fork_server(cfg: ServerConfig) -> ServerProcess:
    """Fork a fork server from this process (which must hold no ZeroMQ context)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    for stream in (sys.stdout, sys.stderr):  # else the child would print our buffered output again
        stream.flush()
    pid = os.fork()
    if pid == 0:
        try:
            ours.close()
            fd = theirs.detach()
            _close_all_but({fd, *_stream_fds()})
            fork_server_main(Connection(fd), cfg)
        finally:
            os._exit(1)
    theirs.close()
    return ServerProcess(pid, Connection(ours.detach()))


def _stream_fds() -> set[int]:
    """The fds behind sys.stdin/stdout/stderr and the logging handlers' streams (not always 0-2: pytest)."""
    import logging

    streams = [sys.stdin, sys.stdout, sys.stderr]
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        streams += [getattr(h, "stream", None) for h in getattr(logger, "handlers", ())]
    fds = {0, 1, 2}
    for stream in streams:
        try:
            fds.add(stream.fileno())
        except (AttributeError, OSError, ValueError):
            pass
    return fds


def _close_all_but(keep: set[int]) -> None:
    """Nothing of the node's but the pipe and the output streams: its run dir lock above all
    (a worker holding it would keep the run dir locked after the node's death)."""
    low = 0
    for fd in sorted(keep | {os.sysconf("SC_OPEN_MAX")}):
        if fd > low:
            os.closerange(low, fd)
        low = fd + 1


def exec_server(cfg: ServerConfig) -> ServerProcess:
    """Execute a fresh fork server (fork + exec: safe with live ZeroMQ sockets here); its config goes first on the pipe.

    It imports the package from this process's sys.path (PYTHONPATH), so a node started
    from a source tree gets the same code.  OSError when no process can be made.
    """
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    fd = theirs.fileno()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    argv = [sys.executable, "-m", "supervisor_tree.node.launchers.forkserver", str(fd)]
    os.set_inheritable(fd, True)
    try:
        pid = os.posix_spawn(sys.executable, argv, env,
                             file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)])
    finally:
        theirs.close()
    server = ServerProcess(pid, Connection(ours.detach()))
    server.conn.send_bytes(pipe.encode(cfg))
    return server
