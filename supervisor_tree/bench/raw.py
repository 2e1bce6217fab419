"""Reference figures: raw pyzmq between two processes, measured in the same run as ours.

Owns the references every project figure is printed beside: what ZeroMQ and
pickle alone give between two real processes on this machine today.  It never
touches the supervisor core.

    >>> m = raw_push_pull(2_000, payload=64, repeats=5)      # doctest: +SKIP
    >>> m.name, m.unit, m.value > 0
    ('push_pull_64B', 'msg/s', True)

How every reference is set up (the same rules as the project's workloads):

* Two processes.  The peer is started with ``multiprocess``'s fork context
  *before* this process creates its ZeroMQ context (a context does not survive
  a fork); the peer makes its own.  Nothing here may run while the calling
  process holds a live ZeroMQ context of its own.
* ipc:// endpoints in a fresh temporary directory; ``linger=0`` on every
  socket.  Nothing is lost anyway because no side closes before the other has
  confirmed what it needed: the peer's last report is read before this side
  sends "stop", and this side keeps its sockets open until the peer has exited.
* Messages are pickled, one pickle per frame (``PICKLE_PROTOCOL``), one frame
  per message; a message is ``(i, payload)`` with ``payload`` bytes of the
  given size (the frame is ~20 B larger; the note says how large).
* A request counts when its reply has been read; a one-way message counts when
  the receiver has read it (the receiver reports the time of the last one, on
  CLOCK_MONOTONIC, which both processes share).
* Every blocking step has a deadline (``timeout`` seconds): a dead or stuck peer
  raises ``BenchError`` instead of hanging the run.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import TracebackType
from typing import Any, Callable

import multiprocess
import zmq

from .harness import BenchContext, BenchError, BenchProgress, Measurement, Trial, workload
from .hist import Histogram
from .measurement import measure_latency, measure_throughput, run_repeats

__all__ = [
    "PICKLE_PROTOCOL",
    "raw_push_pull",
    "raw_req_rep",
    "raw_dealer_router",
    "raw_push_pull_roundtrip",
    "fork_ready_latency",
]

PICKLE_PROTOCOL = pickle.HIGHEST_PROTOCOL
DEFAULT_TIMEOUT = 30.0  # seconds any single blocking step may take
MAX_COUNT = 50_000_000  # bounded counts: a typo must not run for an hour
_STOP = b""  # an empty frame: "stop" (never a pickle)
_now = time.perf_counter_ns  # CLOCK_MONOTONIC on Linux: comparable across processes


# -- the peer process ------------------------------------------------------------------
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
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        code = 1
    finally:
        os._exit(code)


class _Pair:
    """This process and one forked peer, with a private ipc directory and context.

    Use: ``with _Pair(peer_fn, args, timeout) as pair: sock = pair.socket(...)``.
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

    def endpoint(self, name: str) -> str:
        return f"ipc://{self.dir}/{name}"

    def __enter__(self) -> _Pair:
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
        s = self.ctx.socket(kind)
        self._sockets.append(s)
        s.linger = 0
        s.rcvtimeo = self.timeout_ms
        s.sndtimeo = self.timeout_ms
        if bind:
            s.bind(self.endpoint(bind))
        if connect:
            s.reconnect_ivl = 10  # the peer may bind after we connect: retry soon, not in 100 ms
            s.connect(self.endpoint(connect))
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
            raise BenchError(f"raw benchmark peer (pid {proc.pid}) {problem}")


def _deadline(what: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except zmq.Again:
        raise BenchError(f"{what}: no answer from the peer process before the deadline") from None


def _check_count(n: int, what: str) -> None:
    if not 1 <= n <= MAX_COUNT:
        raise ValueError(f"{what} must be within 1..{MAX_COUNT:,}; got {n!r}")


def _frame_note(payload: int, batch: int = 1) -> str:
    item = (0, b"x" * payload)
    size = len(pickle.dumps([item] * batch if batch > 1 else item, PICKLE_PROTOCOL))
    return f"payload {payload} B, frame {size} B, pickle protocol {PICKLE_PROTOCOL}, ipc"


