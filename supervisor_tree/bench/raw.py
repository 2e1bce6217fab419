"""Reference figures: raw pyzmq between two processes, measured in the same run as ours.

Owns the references every project figure is printed beside: what ZeroMQ and
pickle alone give between two real processes on this machine today.  It never
touches the supervisor core.

    m = raw_push_pull(200_000, payload=64)       # 5 repeats after 1 warm-up
    m.name, m.unit, m.value                      # ('push_pull_64B', 'msg/s', 603000.0...)
    ours.compared_to(m)                          # a project figure with this as its reference

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
import signal
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import multiprocess
import zmq

from supervisor_tree.bench.harness import (
    BenchContext,
    BenchError,
    BenchProgress,
    Measurement,
    Trial,
    workload,
)
from supervisor_tree.bench.hist import Histogram
from supervisor_tree.bench.measurement import Role, measure_latency, measure_throughput, run_repeats
from supervisor_tree.bench.pair import PeerSockets, ProcessPair, with_deadline

__all__ = [
    "PICKLE_PROTOCOL",
    "fork_ready_latency",
    "raw_dealer_router",
    "raw_push_pull",
    "raw_push_pull_roundtrip",
    "raw_req_rep",
]

PICKLE_PROTOCOL = pickle.HIGHEST_PROTOCOL
DEFAULT_TIMEOUT = 30.0  # seconds any single blocking step may take
MAX_COUNT = 50_000_000  # bounded counts: a typo must not run for an hour
_STOP = b""  # an empty frame: "stop" (never a pickle)
_now = time.perf_counter_ns  # CLOCK_MONOTONIC on Linux: comparable across processes


def _check_count(n: int, what: str) -> None:
    if not 1 <= n <= MAX_COUNT:
        raise ValueError(f"{what} must be within 1..{MAX_COUNT:,}; got {n!r}")


def _bodies(payload: int, count: int) -> list[bytes]:
    """Distinct payload objects: pickle writes an object shared within one dumps() only
    once, so a batch of one shared payload would be ~10x smaller than real messages."""
    return [os.urandom(payload) for _ in range(count)]


def _frame_note(payload: int, batch: int = 1) -> str:
    bodies = _bodies(payload, batch)
    frame = [(i, b) for i, b in enumerate(bodies)] if batch > 1 else (0, bodies[0])
    size = len(pickle.dumps(frame, PICKLE_PROTOCOL))
    return f"payload {payload} B, frame {size} B, pickle protocol {PICKLE_PROTOCOL}, ipc"


# -- the peers: each binds what it reads and connects what it writes --------------------
def _sink_peer(dir: str, frames: int, batched: bool, timeout_ms: int) -> None:
    """PULL "data"; per round read `frames` frames, then PUSH (time of last, items) to "report"."""
    io = PeerSockets(dir, timeout_ms)
    data = io.socket(zmq.PULL, bind="data")
    report = io.socket(zmq.PUSH, connect="report")
    recv, loads = data.recv, pickle.loads
    while True:
        first = recv()
        if first == _STOP:
            break
        if first == b"hello":
            report.send(b"ready")
            continue
        obj = loads(first)
        items = len(obj) if batched else 1
        for _ in range(frames - 1):
            obj = loads(recv())
            items += len(obj) if batched else 1
        report.send(pickle.dumps((_now(), items), PICKLE_PROTOCOL))
    io.close()


def _rep_peer(dir: str, timeout_ms: int) -> None:
    """REP "rpc": unpickle each request and answer it with a pickle of the same value."""
    io = PeerSockets(dir, timeout_ms)
    rep = io.socket(zmq.REP, bind="rpc")
    recv, send, loads, dumps = rep.recv, rep.send, pickle.loads, pickle.dumps
    while (msg := recv()) != _STOP:
        send(dumps(loads(msg), PICKLE_PROTOCOL))
    io.close()


def _router_peer(dir: str, timeout_ms: int) -> None:
    """ROUTER "rpc": the same echo, for any number of requests in flight."""
    io = PeerSockets(dir, timeout_ms)
    router = io.socket(zmq.ROUTER, bind="rpc")
    recv, send, loads, dumps = router.recv_multipart, router.send_multipart, pickle.loads, pickle.dumps
    while True:
        ident, msg = recv()
        if msg == _STOP:
            break
        send([ident, dumps(loads(msg), PICKLE_PROTOCOL)])
    io.close()


def _mailbox_peer(dir: str, timeout_ms: int) -> None:
    """PULL "mbx" -> PUSH "reply": the project's call pattern, one frame each way."""
    io = PeerSockets(dir, timeout_ms)
    mailbox = io.socket(zmq.PULL, bind="mbx")
    reply = io.socket(zmq.PUSH, connect="reply")
    recv, send, loads, dumps = mailbox.recv, reply.send, pickle.loads, pickle.dumps
    while (msg := recv()) != _STOP:
        send(dumps(loads(msg), PICKLE_PROTOCOL))
    io.close()


def _zygote_peer(dir: str, conn: Any, timeout_ms: int) -> None:
    """A fork server without a ZeroMQ context: on each "fork" from `conn`, fork a
    child that says ready over ZeroMQ; reap it and answer its exit code."""
    libc = ctypes.CDLL(None)  # loaded once here, so the child's prctl costs ~1 µs
    timeout = timeout_ms / 1000
    me = os.getpid()
    while conn.poll(timeout):
        try:
            if conn.recv() is None:
                break
        except EOFError:
            break
        t0 = _now()
        pid = os.fork()
        if pid == 0:
            _ready_child(dir, t0, me, libc, timeout_ms)  # never returns
        _, status = os.waitpid(pid, 0)
        conn.send(os.waitstatus_to_exitcode(status))


def _ready_child(dir: str, t0: int, zygote: int, libc: Any, timeout_ms: int) -> None:
    code = 1
    try:
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG, as a worker would
        if os.getppid() != zygote:
            return
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        s = ctx.socket(zmq.DEALER)
        s.linger, s.rcvtimeo, s.sndtimeo = 0, timeout_ms, timeout_ms
        s.connect(f"ipc://{dir}/ready")
        s.send(pickle.dumps(("ready", os.getpid(), t0), PICKLE_PROTOCOL))
        s.recv()  # the acknowledgement: our message arrived, closing with linger 0 loses nothing
        s.close()
        ctx.term()
        code = 0
    except BaseException:  # noqa: BLE001 - cleanup, then re-raised or reported
        traceback.print_exc()
    finally:
        os._exit(code)


# -- the references ---------------------------------------------------------------------
def raw_push_pull(
    n: int,
    payload: int = 64,
    batch: int = 1,
    *,
    repeats: int = 5,
    warmup: int = 1,
    progress: BenchProgress | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    dir: Path | None = None,
) -> Measurement:
    """One-way msgs/s, PUSH -> PULL, `n` messages of `payload` bytes per repeat.

    ``batch == 1``: one pickled ``(i, payload)`` per frame.  ``batch > 1``: one
    pickled list of `batch` such tuples per frame (each with its own payload
    object), and the figure counts tuples.
    Elapsed runs from this side's first send to the receiver's last read.
    """
    _check_count(n, "n")
    _check_count(batch, "batch")
    frames = -(-n // batch)
    body = b"x" * payload
    bodies = _bodies(payload, batch)
    name = f"push_pull_{payload}B" if batch == 1 else f"push_pull_batch{batch}_{payload}B"
    with ProcessPair(_sink_peer, (frames, batch > 1), timeout, dir) as pair:
        report = pair.socket(zmq.PULL, bind="report")
        data = pair.socket(zmq.PUSH, connect="data")
        with_deadline(f"{name} handshake", lambda: (data.send(b"hello"), report.recv()))
        send, dumps, p = data.send, pickle.dumps, PICKLE_PROTOCOL

        def one_round() -> Trial:
            t0 = _now()
            if batch == 1:
                for i in range(n):
                    send(dumps((i, body), p))
            else:
                for start in range(0, n, batch):
                    chunk = bodies if n - start >= batch else bodies[: n - start]
                    send(dumps([(start + k, b) for k, b in enumerate(chunk)], p))
            t_last, items = pickle.loads(report.recv())
            if items != n:
                raise BenchError(f"{name}: the receiver counted {items} messages of {n}")
            return Trial(items, (t_last - t0) / 1e9)

        trials = with_deadline(name, lambda: run_repeats(one_round, repeats, warmup, progress, f"raw {name}"))
        data.send(_STOP)
    return measure_throughput(name, trials, unit="msg/s", note=_frame_note(payload, batch), role=Role.REFERENCE)


def _round_trips(name: str, n: int, payload: int, send: Callable[[bytes], Any], recv: Callable[[], bytes]) -> Trial:
    """`n` sequential requests: send one, read its reply, next.  Latency per request."""
    dumps, loads, p, now = pickle.dumps, pickle.loads, PICKLE_PROTOCOL, _now
    body = b"x" * payload
    samples: list[int] = []
    append = samples.append
    t_start = now()
    for i in range(n):
        t = now()
        send(dumps((i, body), p))
        if loads(recv())[0] != i:
            raise BenchError(f"{name}: reply {i} is not the answer to request {i}")
        append(now() - t)
    elapsed = now() - t_start
    h = Histogram()
    h.record_many(samples)
    return Trial(n, elapsed / 1e9, h)


def raw_req_rep(
    n: int,
    payload: int = 64,
    *,
    repeats: int = 5,
    warmup: int = 1,
    progress: BenchProgress | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    dir: Path | None = None,
) -> Measurement:
    """REQ -> REP round trips, one at a time: req/s, with the round-trip latency percentiles."""
    _check_count(n, "n")
    name = f"req_rep_{payload}B"
    with ProcessPair(_rep_peer, (), timeout, dir) as pair:
        req = pair.socket(zmq.REQ, connect="rpc")
        with_deadline(f"{name} handshake", lambda: _round_trips(name, 1, payload, req.send, req.recv))
        trials = with_deadline(
            name,
            lambda: run_repeats(
                lambda: _round_trips(name, n, payload, req.send, req.recv), repeats, warmup, progress, f"raw {name}"
            ),
        )
        req.send(_STOP)
    return measure_throughput(name, trials, unit="req/s", note=_frame_note(payload), role=Role.REFERENCE)


def raw_push_pull_roundtrip(
    n: int,
    payload: int = 64,
    *,
    repeats: int = 5,
    warmup: int = 1,
    progress: BenchProgress | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    dir: Path | None = None,
) -> Measurement:
    """The project's call pattern: caller PUSH -> worker PULL, worker PUSH -> caller PULL."""
    _check_count(n, "n")
    name = f"push_pull_roundtrip_{payload}B"
    with ProcessPair(_mailbox_peer, (), timeout, dir) as pair:
        replies = pair.socket(zmq.PULL, bind="reply")
        mailbox = pair.socket(zmq.PUSH, connect="mbx")
        with_deadline(f"{name} handshake", lambda: _round_trips(name, 1, payload, mailbox.send, replies.recv))
        trials = with_deadline(
            name,
            lambda: run_repeats(
                lambda: _round_trips(name, n, payload, mailbox.send, replies.recv),
                repeats,
                warmup,
                progress,
                f"raw {name}",
            ),
        )
        mailbox.send(_STOP)
    return measure_throughput(name, trials, unit="req/s", note=_frame_note(payload), role=Role.REFERENCE)


def raw_dealer_router(
    n: int,
    inflight: int = 100,
    payload: int = 64,
    *,
    repeats: int = 5,
    warmup: int = 1,
    progress: BenchProgress | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    dir: Path | None = None,
) -> Measurement:
    """DEALER -> ROUTER with `inflight` requests outstanding: req/s and per-request latency."""
    _check_count(n, "n")
    _check_count(inflight, "inflight")
    name = f"dealer_router_x{inflight}_{payload}B"
    body = b"x" * payload
    with ProcessPair(_router_peer, (), timeout, dir) as pair:
        dealer = pair.socket(zmq.DEALER, connect="rpc")
        send, recv, dumps, loads, p, now = dealer.send, dealer.recv, pickle.dumps, pickle.loads, PICKLE_PROTOCOL, _now
        with_deadline(f"{name} handshake", lambda: (send(dumps((0, body), p)), recv()))

        def one_round() -> Trial:
            sent_at = [0] * n
            samples: list[int] = []
            append = samples.append
            sent = 0
            t_start = now()
            while sent < min(inflight, n):
                sent_at[sent] = now()
                send(dumps((sent, body), p))
                sent += 1
            for _ in range(n):
                i = loads(recv())[0]
                append(now() - sent_at[i])
                if sent < n:
                    sent_at[sent] = now()
                    send(dumps((sent, body), p))
                    sent += 1
            elapsed = now() - t_start
            h = Histogram()
            h.record_many(samples)
            return Trial(n, elapsed / 1e9, h)

        trials = with_deadline(name, lambda: run_repeats(one_round, repeats, warmup, progress, f"raw {name}"))
        send(_STOP)
    note = _frame_note(payload) + f", {inflight} in flight"
    return measure_throughput(name, trials, unit="req/s", note=note, role=Role.REFERENCE)


def fork_ready_latency(
    n: int,
    *,
    repeats: int = 5,
    warmup: int = 1,
    progress: BenchProgress | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    dir: Path | None = None,
) -> Measurement:
    """Time from os.fork (in a fork server with no ZeroMQ context) to the new
    process's first ZeroMQ message read here: its own context, a socket, a
    connect over ipc and one pickled "ready".  The reference for restart latency."""
    _check_count(n, "n")
    name = "fork_ready"
    ours, theirs = multiprocess.get_context("fork").Pipe()
    try:
        with ProcessPair(_zygote_peer, (theirs,), timeout, dir) as pair:
            router = pair.socket(zmq.ROUTER, bind="ready")
            loads = pickle.loads

            def one_round() -> Trial:
                samples: list[int] = []
                t_start = _now()
                for _ in range(n):
                    ours.send("fork")
                    ident, msg = router.recv_multipart()
                    t1 = _now()
                    _, pid, t0 = loads(msg)
                    router.send_multipart([ident, b"ok"])
                    if not ours.poll(timeout):
                        raise BenchError(f"{name}: the fork server did not reap child {pid} in {timeout} s")
                    code = ours.recv()
                    if code != 0:
                        raise BenchError(f"{name}: the forked child {pid} exited with code {code}")
                    samples.append(t1 - t0)
                elapsed = _now() - t_start
                h = Histogram()
                h.record_many(samples)
                return Trial(n, elapsed / 1e9, h)

            trials = with_deadline(name, lambda: run_repeats(one_round, repeats, warmup, progress, f"raw {name}"))
            ours.send(None)
    finally:
        ours.close()
        theirs.close()
    note = "os.fork in a fork server -> new zmq.Context -> DEALER connect ipc -> 1 pickled msg read"
    return measure_latency(name, trials, note=note, role=Role.REFERENCE)


@workload("raw", quick=True, description="raw pyzmq between two processes: the references")
def raw_workload(ctx: BenchContext) -> list[Measurement]:
    """Every reference, at the counts the project's figures are compared with."""
    kw: dict[str, Any] = {"repeats": ctx.repeats, "warmup": ctx.warmup, "progress": ctx.progress, "dir": ctx.run_dir}
    return [
        raw_push_pull(ctx.count(full=200_000, quick=50_000), 64, **kw),
        raw_push_pull(ctx.count(full=1_000_000, quick=200_000), 64, batch=100, **kw),
        raw_req_rep(ctx.count(full=10_000, quick=2_000), 64, **kw),
        raw_push_pull_roundtrip(ctx.count(full=10_000, quick=2_000), 64, **kw),
        raw_dealer_router(ctx.count(full=100_000, quick=20_000), 100, 64, **kw),
        fork_ready_latency(ctx.count(full=100, quick=20), **kw),
    ]
