"""The fork server (a zygote): a process that imports the preloaded modules, holds no
ZeroMQ context, and forks one process per worker incarnation.

Started by `local.LocalLauncher`: forked from the node before the node makes any
ZeroMQ context, or, to replace one that died, executed afresh
(``python -m supervisor_tree.node.launchers.forkserver FD``, its config first on the
pipe), because the node then holds a context and must not be forked.  It keeps a few
*standbys*: pre-forked processes with their ZeroMQ context made, connected to the
node, each waiting on an activation socket whose other end is handed to the node.

It reaps no worker.  Every worker and standby is forked through a short-lived
intermediate process (the only child it reaps), so the node (a child subreaper)
becomes its parent, reaps it and maps its end to a reason (local.py, with pidfds).
So the death of the fork server kills no worker, and a new fork server can take over.

No orphans: the fork server and every worker set PR_SET_PDEATHSIG=SIGKILL against
the node, so the death of the node (even by SIGKILL) kills them.

The messages on the pipe are `pipe.py`'s (a replacement gets its `ServerConfig` first);
one that is not of their shape is dropped (counted, logged at most once a second) and
the fork server keeps serving.  It holds the run's key (`wire.auth`): the first one
inherits it from the node, a replacement reads RUN/key once; its children inherit it in
memory.  On ("refresh", ...) it imports the project's modules again (refresh.py).
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import logging
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import NoReturn, Protocol

from supervisor_tree.node.launchers import osproc, pipe, refresh
from supervisor_tree.node.launchers.base import Spawned, SpawnFailed
from supervisor_tree.node.launchers.entry import LEN, cold_main, read_exactly, standby_main
from supervisor_tree.node.launchers.pipe import ServerConfig
from supervisor_tree.wire import auth
from supervisor_tree.wire.dropped import Dropped
from supervisor_tree.wire.endpoints import drain_fd
from supervisor_tree.wire.shapes import BadFrame
from supervisor_tree.worker.code import code_roots
from supervisor_tree.worker.spawn import SpawnRequest

log = logging.getLogger(__name__)

__all__ = ["ServerConfig", "Conn", "LEN", "fork_server_main", "exec_main"]


class Conn(Protocol):
    """The node's end of the pipe, as multiprocess's Connection offers it."""

    def fileno(self) -> int: ...
    def poll(self, timeout: float = 0.0) -> bool: ...
    def recv_bytes(self) -> bytes: ...
    def send_bytes(self, data: bytes) -> None: ...
    def close(self) -> None: ...


_STANDBY_MAX_EARLY_DEATHS = 3
_REFILL_DELAY = 0.005  # s after a spawn before a replacement standby is forked


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


def fork_server_main(conn: Conn, cfg: ServerConfig) -> NoReturn:
    code = 0
    try:
        osproc.die_with_parent(cfg.parent_pid)
        _reset_signals()
        osproc.set_title(cfg.name, "fork-server")
        sys.path[:0] = list(cfg.sys_path)
        try:
            for name in cfg.preload:
                importlib.import_module(name)
            importlib.import_module("zmq")
            importlib.import_module("supervisor_tree.worker.main")
        except BaseException as exc:  # noqa: BLE001 - reported to the node, which raises it from start()
            conn.send_bytes(pipe.encode(("error", f"preloading failed: {type(exc).__name__}: {exc}")))
            os._exit(1)
        gc.freeze()  # what we imported stays shared with the workers: their GC never touches it
        server = _ForkServer(conn, cfg)
        conn.send_bytes(pipe.encode(("ok", os.getpid())))
        server.announce_code()
        server.serve()
    except BaseException:
        log.exception("fork server failed")
        code = 1
    finally:
        os._exit(code)


def exec_main(argv: Sequence[str]) -> NoReturn:
    """A replacement fork server, executed by the node: `argv` is [FD]; the config is the pipe's first message."""
    from multiprocess.connection import Connection

    conn: Conn = Connection(int(argv[0]))
    try:
        cfg = pipe.decode_config(conn.recv_bytes())
        auth.hold_key(cfg.run_dir, auth.read_key(cfg.run_dir))  # what the first fork server inherited
    except (BadFrame, auth.RunKeyError, EOFError, OSError) as exc:
        reason = exc.reason if isinstance(exc, BadFrame) else str(exc)
        with contextlib.suppress(OSError):
            conn.send_bytes(pipe.encode(("error", f"a replacement fork server cannot start: {reason}")))
        os._exit(2)
    fork_server_main(conn, cfg)


class _ForkServer:
    """The fork server's loop: requests from the node; standbys refilled when idle.

    Standbys: each one waits on an activation socket whose other end is handed to the node
    (SCM_RIGHTS), so the node activates it without a hop through here, then says
    ("activated", pid).  Invariant: `standbys` holds the standbys the node may still
    activate; the node says which it activated or found dead ("discard").
    """

    def __init__(self, conn: Conn, cfg: ServerConfig) -> None:
        self.conn = conn
        self.fd: int = conn.fileno()
        self.sock = socket.socket(fileno=os.dup(self.fd))  # the same pipe, for handing over fds
        self.cfg = cfg
        self.pid = os.getpid()
        self.inbound = cfg.inbound
        self.standbys: set[int] = set(cfg.standbys)
        self.standby_target = cfg.standby
        self.standby_early_deaths = 0
        self.last_spawn = 0.0
        self.closing = False
        self.dropped = Dropped(log, "fork server")
        # The run's key, inherited from the node.  Held here (and wire.auth so among the fork server's own
        # modules, which a code refresh never drops), so every fork, before and after a refresh, inherits it.
        self.key = auth.held_key(cfg.run_dir)
        self.preload = cfg.preload
        self.code_epoch = cfg.code_epoch  # the snapshot of the project's modules its forks inherit (refresh.py)
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._on_sigterm)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # an intermediate exited: wakes select

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
                drain_fd(self.wake_r)
                _reap_intermediates()
            if self.fd in ready:
                self.handle_requests()
            if not ready and refill_at is not None and not self.closing and time.monotonic() >= refill_at:
                # Only when idle, and not while the standby just activated is starting
                # (on a small machine the fork would compete with it for a core).
                self.fork_standbys(self.standby_target - len(self.standbys))

    def handle_requests(self) -> None:
        conn = self.conn
        while not self.closing and conn.poll(0):
            try:
                data = conn.recv_bytes()
            except (EOFError, OSError):
                self.closing = True  # the node is gone
                return
            try:
                self.handle(pipe.decode_request(data))
            except BadFrame as exc:
                self.dropped.drop("the node (pipe)", exc.kind, exc.reason)
            except Exception:  # a bug of ours, not the node's message: say so, and keep forking
                log.exception("fork server: a request of %d bytes failed; serving on", len(data))

    def handle(self, msg: tuple[object, ...]) -> None:
        """One request, its shape checked (`pipe.REQUESTS`); raises BadFrame for a spawn request that is not one."""
        match msg:
            case ("spawn", bytes(data)):
                self.spawn(pipe.decode_spawn_request(data))
            case ("activated", int(pid)):
                self.activated(pid)
            case ("discard", int(pid)):
                self.discard(pid)
            case ("refresh", tuple(preload), tuple(also)):
                self.refresh(pipe.names(preload), pipe.names(also))
            case ("close",):
                self.closing = True

    def send(self, msg: tuple[object, ...]) -> None:
        try:
            self.conn.send_bytes(pipe.encode(msg))
        except OSError:
            self.closing = True

    # -- the project's code (supervise reload --code) --

    def announce_code(self, problems: Sequence[str] = ()) -> None:
        """A new snapshot of the project's modules held here (what forks inherit), sent to the node."""
        self.code_epoch += 1
        files, own = refresh.take_snapshot(self.cfg.sys_path, self.code_epoch)
        self.send(("code", (self.code_epoch, files, tuple(problems), tuple(own))))

    def refresh(self, preload: Sequence[str], also: Sequence[str]) -> None:
        """Import the project's modules again from disk.  The standbys forked with the old ones go:
        the node closes their activation sockets (they exit) and reaps them."""
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
        pids = list(self.fork([lambda: cold_main(req, self.cfg.name)], f"{req.worker_id}#{req.generation}"))
        if not pids:
            self.send(("events", [SpawnFailed(req.token, "fork failed: no process could be made (see the node's log)")]))
            return
        self.send(("events", [Spawned(req.token, pids[0])]))

    def activated(self, pid: int) -> None:
        self.last_spawn = time.monotonic()
        if pid in self.standbys:
            self.standbys.discard(pid)
            self.standby_early_deaths = 0

    def discard(self, pid: int) -> None:
        """The node found a standby dead before it was used."""
        if pid not in self.standbys:
            return
        self.standbys.discard(pid)
        self.standby_early_deaths += 1
        if self.standby_early_deaths >= _STANDBY_MAX_EARLY_DEATHS:
            log.error("fork server: %d standbys in a row died before use (last: pid %d); spawning cold from now on",
                      self.standby_early_deaths, pid)
            self.standby_target = 0

    def fork_standbys(self, n: int) -> None:
        """Fork `n` standbys through one intermediate; each is announced to the node as its pid comes."""
        # Socketpairs rather than pipes: the node writes with MSG_NOSIGNAL, so a standby that
        # died is an EPIPE error even if the node let SIGPIPE kill.
        pairs = [(theirs.detach(), ours.detach()) for theirs, ours in
                 (socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(n))]
        children = [lambda r=r, w=w: standby_main(r, w, self.inbound, self.cfg) for r, w in pairs]
        announced = 0
        try:
            for (_, w), pid in zip(pairs, self.fork(children, "standby", pairs)):
                self.standbys.add(pid)
                self.send(("standby", pid))
                socket.send_fds(self.sock, [b"F"], [w])
                announced += 1
        except OSError:
            self.closing = True  # the node is gone
        finally:
            for pair in pairs:
                for fd in pair:
                    os.close(fd)
        if announced < n and not self.closing:
            log.warning("fork server: %d of %d standbys could not be forked; spawning cold", n - announced, n)
            self.standby_target = 0

    def fork(self, children: Sequence[Callable[[], object]], role: str,
             fds: Sequence[tuple[int, ...]] = ()) -> Iterator[int]:
        """Fork each of `children` (titled `role`) through one intermediate that exits once it has
        forked them all, so that the node adopts them; their pids, as they come (fewer if a fork
        failed).  `fds[i]`: child i's own descriptors; the others close them."""
        for stream in (sys.stdout, sys.stderr):  # else the child would print our buffered output again
            stream.flush()
        r, w = os.pipe()  # the intermediate writes each child's pid here
        # SIGTERM stays blocked in the children until each worker has its handler in place.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        try:
            if os.fork() == 0:
                self._intermediate(r, w, children, role, fds)
        except OSError as exc:  # EAGAIN, ENOMEM: no process at all
            log.warning("fork server: cannot fork (%s)", exc)
            os.close(r)
            return
        finally:
            os.close(w)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        try:  # its exit is reaped later (SIGCHLD): not in the way
            for _ in children:
                data = read_exactly(r, LEN.size)
                if data is None:
                    return
                pid: int = LEN.unpack(data)[0]
                yield pid
        finally:
            os.close(r)

    def _intermediate(self, r: int, w: int, children: Sequence[Callable[[], object]], role: str,
                      fds: Sequence[tuple[int, ...]]) -> NoReturn:
        code = 70
        try:
            os.close(r)
            osproc.die_with_parent(self.pid)  # if we die together, no fork is half done
            # Titled before the forks: the node adopts them at once, and must never see a second fork server.
            osproc.set_title(self.cfg.name, role)
            me = os.getpid()
            gate_r, gate_w = os.pipe()  # EOF once we exited: our children wait for it, then for their new parent
            for i, child in enumerate(children):
                pid = os.fork()
                if pid == 0:
                    for fd in [w, gate_w, *(fd for j, own in enumerate(fds) if j != i for fd in own)]:
                        os.close(fd)
                    self.in_child(me, gate_r)
                    child()  # never returns (if it raises: os._exit below)
                os.write(w, LEN.pack(pid))
            code = 0
        finally:
            os._exit(code)

    def in_child(self, intermediate: int, gate: int) -> None:
        # A child holding the node's pipe would keep it open after the fork server's death.
        self.sock.close()
        for fd in (self.fd, self.wake_r, self.wake_w):
            os.close(fd)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.read(gate, 1)  # blocks until the intermediate exited (no spinning while it forks our siblings)
        os.close(gate)
        os.setpgid(0, 0)  # a group of our own: what we start dies with us (node/launchers/groups.py)
        osproc.await_parent(self.cfg.parent_pid, intermediate)
        osproc.die_with_parent(self.cfg.parent_pid)


# ---------------------------------------------------------------------------
# Children of the fork server


def _reap_intermediates() -> None:
    """The fork server's only children are the intermediates (workers are adopted by the node)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


if __name__ == "__main__":
    from supervisor_tree.node.launchers import forkserver as _module  # the real module, not this __main__ copy

    _module.exec_main(sys.argv[1:])
