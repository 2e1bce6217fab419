"""Two real processes and their sockets: the plumbing every pairwise benchmark uses.

Owns forking the peer (before this side's ZeroMQ context exists), the private
ipc directory, socket options (linger 0, deadlines both ways), and tearing it
all down so that no process, socket or file is left behind.  It measures nothing.

    def echo_peer(dir: str, timeout_ms: int) -> None:        # runs in the forked peer
        io = PeerSockets(dir, timeout_ms)
        rep = io.socket(zmq.REP, bind="rpc")
        while (msg := rep.recv()) != b"":
            rep.send(msg)
        io.close()

    with ProcessPair(echo_peer, (), timeout=30.0, dir=None) as pair:
        req = pair.socket(zmq.REQ, connect="rpc")
        with_deadline("echo", lambda: (req.send(b"hi"), req.recv()))
        req.send(b"")                                       # "stop"; the pair waits for the peer to exit

The peer function is called as ``peer(dir, *args, timeout_ms)`` in a child
forked with ``multiprocess``'s fork context; it must not use anything ZeroMQ of
this process (it makes its own context) and it leaves through ``os._exit``.
The calling process must not hold a live ZeroMQ context of its own when a pair
starts: the fork would copy it half-alive.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import multiprocess
import zmq

from supervisor_tree.bench.harness import BenchError

__all__ = ["PeerSockets", "ProcessPair", "open_socket", "with_deadline"]


def _die_with_parent(parent: int) -> None:
    """PR_SET_PDEATHSIG: if the benchmark process is killed, its peer goes too."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG (Linux only; harmless elsewhere)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _peer_main(fn: Callable[..., None], parent: int, args: tuple[Any, ...]) -> None:
    """Run `fn` in the forked peer and leave with os._exit: no atexit, no flush of
    streams inherited from the parent (a lock held at fork time would hang us)."""
    code = 0
    try:
        _die_with_parent(parent)
        fn(*args)
    except BaseException:  # noqa: BLE001 - cleanup, then re-raised or reported
        traceback.print_exc()
        sys.stderr.flush()
        code = 1
    finally:
        os._exit(code)


class ProcessPair:
    """This process and one forked peer, with a private ipc directory and context.

    Use: ``with ProcessPair(peer_fn, args, timeout) as pair: sock = pair.socket(...)``.
    The peer is forked in ``__enter__`` before the context is created.  On exit
    this side waits for the peer to end (it was told to stop), then closes its
    sockets, terminates the context and removes the directory; a peer still
    alive after the grace period is killed and reported.
    """

    def __init__(self, peer: Callable[..., None], args: tuple[Any, ...], timeout: float, dir: Path | None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="raw-", dir=dir))
        if len(str(self.dir)) > 80:  # AF_UNIX paths are limited to 107 bytes
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = Path(tempfile.mkdtemp(prefix="raw-", dir="/tmp"))
        self.timeout_ms = int(timeout * 1000)
        self._peer_fn = peer
        self._peer_args = args
        self._sockets: list[zmq.Socket[bytes]] = []
        self.ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self.process: Any = None

    def __enter__(self) -> ProcessPair:
        fork = multiprocess.get_context("fork")
        args = (self._peer_fn, os.getpid(), (str(self.dir), *self._peer_args, self.timeout_ms))
        self.process = fork.Process(target=_peer_main, args=args, daemon=True, name="raw-peer")
        try:
            self.process.start()
            self.ctx = zmq.Context()
        except BaseException:
            self._finish(ok=False)
            raise
        return self

    def socket(self, kind: int, *, bind: str | None = None, connect: str | None = None) -> zmq.Socket[bytes]:
        assert self.ctx is not None
        s = open_socket(self.ctx, kind, str(self.dir), self.timeout_ms, bind, connect)
        self._sockets.append(s)
        return s

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._finish(ok=exc_type is None)

    def _finish(self, ok: bool) -> None:
        proc = self.process
        problem = None
        if proc is not None:
            proc.join(timeout=5.0 if ok else 0.2)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5.0)
                problem = "did not stop when told to; killed"
            elif proc.exitcode != 0:
                problem = f"exited with code {proc.exitcode} (its traceback is on stderr)"
        for s in self._sockets:
            s.close(linger=0)
        if self.ctx is not None:
            self.ctx.term()
        shutil.rmtree(self.dir, ignore_errors=True)
        if ok and problem:
            raise BenchError(f"benchmark peer (pid {proc.pid}) {problem}")


def open_socket(
    ctx: zmq.Context[zmq.Socket[bytes]], kind: int, dir: str, timeout_ms: int, bind: str | None, connect: str | None
) -> zmq.Socket[bytes]:
    """A socket with linger 0 and deadlines on both directions, bound or connected in `dir`."""
    s = ctx.socket(kind)
    s.linger = 0
    s.rcvtimeo = timeout_ms
    s.sndtimeo = timeout_ms
    if bind:
        s.bind(f"ipc://{dir}/{bind}")
    if connect:
        s.reconnect_ivl = 10  # the other side may bind after we connect: retry soon, not in 100 ms
        s.connect(f"ipc://{dir}/{connect}")
    return s


def with_deadline(what: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except zmq.Again:
        raise BenchError(f"{what}: no answer from the peer process before the deadline") from None


class PeerSockets:
    """The peer's own context (made after the fork) and its sockets, linger 0."""

    def __init__(self, dir: str, timeout_ms: int) -> None:
        self.dir = dir
        self.timeout_ms = timeout_ms
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.sockets: list[zmq.Socket[bytes]] = []

    def socket(self, kind: int, *, bind: str | None = None, connect: str | None = None) -> zmq.Socket[bytes]:
        s = open_socket(self.ctx, kind, self.dir, self.timeout_ms, bind, connect)
        self.sockets.append(s)
        return s

    def close(self) -> None:
        for s in self.sockets:
            s.close(linger=0)
        self.ctx.term()
