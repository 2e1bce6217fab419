"""The worker behaviour (what users subclass) and the loop that runs one incarnation.

Owns, inside a worker process: the mailbox and control sockets, dispatch of
calls, casts and infos to the behaviour's callbacks, the stop request (SIGTERM),
heartbeats to the node, and exiting with a reason (docs/internals.md: reason file
plus exit code 0 / 80 / 81 / 82).  Must not fork, and must not decide anything
about restarts: it only says how it ended.

    from supervisor_tree import Worker

    class Counter(Worker):
        def init(self, start=0):
            self.n = start
        def handle_call(self, msg):
            op, k = msg
            self.n += k
            return self.n

Semantics, OTP's gen_server in OS processes:

* `init` returning `IGNORE` starts nothing (exit 0); raising fails the start.
* A call's return value is its reply.  A callback that raises crashes the worker:
  a call first gets the error (`channel.RemoteError`) as its reply, then the
  worker runs `terminate` and exits with reason error (82).
* A message that does not decode is not a crash: a call is answered with a
  "malformed message" error, anything else is logged; both are counted.
* Stop request (SIGTERM from the node): with `trap_exits` False it interrupts
  whatever runs; with True the current message finishes first and
  `handle_shutdown_request` decides.  Either way `terminate(shutdown)`, exit 80.
* `stop(reason)` ends the loop after the current callback (its reply still goes out).
"""

from __future__ import annotations

import _thread
import heapq
import importlib
import logging
import os
import pickle
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, NoReturn

import zmq

from . import channel
from .spec import NORMAL, SHUTDOWN, ExitKind, ExitReason, error, shutdown_with

if TYPE_CHECKING:
    from .launcher import SpawnRequest

__all__ = ["Worker", "IGNORE", "NOREPLY", "run_worker", "prepare", "Prepared", "exit_status"]

log = logging.getLogger(__name__)

EXIT_NORMAL, EXIT_SHUTDOWN, EXIT_SHUTDOWN_WITH, EXIT_ERROR = 0, 80, 81, 82
BATCH = 256  # mailbox messages per round before the control socket is looked at again
EXIT_LINGER_MS = 200  # how long the last replies and notices may take to leave at exit
# A standby connects to the node's inbound socket before the node has bound it (the
# launcher starts first); libzmq's default 100 ms retry would delay the first "ready".
_INBOUND_RECONNECT_MS = 10
_LAT_SIZE = 1024  # call latency ring (power of two)
_LAT_MASK = _LAT_SIZE - 1


class _Ignore:
    def __repr__(self) -> str:
        return "IGNORE"


IGNORE = _Ignore()
"""Return it from `init` to start nothing (OTP's `ignore`)."""


class _NoReply:
    def __repr__(self) -> str:
        return "NOREPLY"


NOREPLY = _NoReply()
"""Return it from `handle_call` to answer later with `Worker.reply` (gen_server's noreply)."""


class MissingCallback(TypeError):
    """A message arrived for a callback the behaviour does not define (OTP: the server crashes)."""


class _StopRequested(BaseException):
    """Raised in the main thread by SIGTERM when the worker does not trap exits."""


class Worker:
    """Subclass and override the callbacks.  Instantiated with no arguments: `init` takes the args.

    `id`, `generation` and `run_dir` are set before `init` runs.
    """

    trap_exits: bool = False
    id: str = ""
    generation: int = 0
    run_dir: str = ""
    _ctx: zmq.Context[Any] | None = None
    _st_loop: _Incarnation | None = None
    _st_client: object = None

    # -- callbacks --

    def init(self, **args: object) -> object:
        return None

    def handle_call(self, msg: object) -> object:
        raise MissingCallback(f"{type(self).__name__} defines no handle_call, so it cannot answer {msg!r}")

    def handle_cast(self, msg: object) -> None:
        raise MissingCallback(f"{type(self).__name__} defines no handle_cast, so it cannot take {msg!r}")

    def handle_info(self, msg: object) -> None:
        log.warning("worker %s: unexpected message %r (no handle_info); ignored", self.id, msg)

    def terminate(self, reason: ExitReason) -> None:
        pass

    def handle_shutdown_request(self) -> bool:
        """Only consulted when `trap_exits`: return False to ignore the stop request."""
        return True

    def statistics(self) -> dict[str, object] | None:
        """The worker's own figures, shown under "worker" in its stats and heartbeats.

        Called from the heartbeat thread too: read counters, take no locks, block on nothing.
        """
        return None

    # -- services --

    def stop(self, reason: object = "normal") -> None:
        """End the loop after the current callback.

        `reason`: "normal", "shutdown", ("shutdown", detail), or anything else
        (an exception, a string, ...) which is an error.
        """
        loop = self._st_loop
        if loop is None:
            raise RuntimeError("stop() is only available inside a running worker")
        loop.request_stop(reason)

    def caller(self) -> tuple[bytes, bytes]:
        """A token for the call being handled, to answer it later with `reply` (return NOREPLY)."""
        loop = self._st_loop
        if loop is None or loop.current is None:
            raise RuntimeError("caller() is only available inside handle_call")
        return loop.current

    def reply(self, token: tuple[bytes, bytes], value: object) -> None:
        """Answer a call deferred with NOREPLY (gen_server:reply)."""
        loop = self._st_loop
        assert loop is not None, "reply() is only available inside a running worker"
        ref8, reply_to = token
        loop.replies.send(reply_to, loop._reply_ok(ref8, value))

    def reply_error(self, token: tuple[bytes, bytes], exc: BaseException) -> None:
        """Answer a deferred call with an error: the caller raises CallError."""
        loop = self._st_loop
        assert loop is not None, "reply_error() is only available inside a running worker"
        ref8, reply_to = token
        loop.replies.send(reply_to, channel.reply_frame(ref8, False, channel.RemoteError.from_exception(exc)))

    def send_after(self, seconds: float, msg: object) -> int:
        """Deliver `msg` to handle_info after `seconds` (erlang:send_after).  Returns a timer id."""
        loop = self._st_loop
        if loop is None:
            raise RuntimeError("send_after() is only available inside a running worker")
        return loop.add_timer(seconds, msg)

    def cancel_timer(self, timer_id: int) -> None:
        loop = self._st_loop
        if loop is not None:
            loop.timers_live.discard(timer_id)

    def call(self, worker_id: str, msg: object, timeout: float = 5.0) -> object:
        """Call another worker of the tree by id."""
        return self._client().call(worker_id, msg, timeout=timeout)  # type: ignore[attr-defined]

    def cast(self, worker_id: str, msg: object) -> None:
        """Cast to another worker of the tree by id."""
        self._client().cast(worker_id, msg)  # type: ignore[attr-defined]

    def _client(self) -> object:
        if self._st_client is None:
            from .client import Client  # written beside this module; imported only when used

            self._st_client = Client(self.run_dir, context=self._ctx)
        return self._st_client


# ---------------------------------------------------------------------------
# Exit reasons


def exit_status(reason: object) -> tuple[int, ExitReason]:
    """(exit code, ExitReason) for a stop reason as `Worker.stop` takes it."""
    if isinstance(reason, ExitReason):
        code = {ExitKind.NORMAL: EXIT_NORMAL, ExitKind.SHUTDOWN: EXIT_SHUTDOWN,
                ExitKind.SHUTDOWN_WITH: EXIT_SHUTDOWN_WITH}.get(reason.kind, EXIT_ERROR)
        return code, reason
    if isinstance(reason, str):
        if reason == "normal":
            return EXIT_NORMAL, NORMAL
        if reason == "shutdown":
            return EXIT_SHUTDOWN, SHUTDOWN
        return EXIT_ERROR, error(reason)
    if isinstance(reason, tuple) and len(reason) == 2 and reason[0] == "shutdown":
        return EXIT_SHUTDOWN_WITH, shutdown_with(reason[1])
    if isinstance(reason, BaseException):
        return EXIT_ERROR, error(f"{type(reason).__name__}: {reason}")
    return EXIT_ERROR, error(repr(reason))


def write_reason(run_dir: str, reason: ExitReason) -> None:
    """RUN/reasons/PID, read (and removed) by the launcher when it reaps us."""
    path = os.path.join(run_dir, "reasons", str(os.getpid()))
    try:
        with open(path, "wb") as f:
            pickle.dump(reason, f, protocol=channel.PROTOCOL)
    except OSError as exc:
        log.warning("cannot write the exit reason to %s: %s", path, exc)


# ---------------------------------------------------------------------------
# Entry points


@dataclass(slots=True)
class Prepared:
    """What a process sets up before it knows its job: a context, a PUSH to the node, signals.

    A standby also creates its mailbox and control sockets, bound under names of
    its own (`mailbox_at`, `control_at`) that it renames to its worker's endpoints
    when activated (`channel.move_bind`).
    """

    context: zmq.Context[Any]
    inbound: zmq.Socket[bytes]
    inbound_endpoint: str
    wake_r: int
    wake_w: int
    mailbox: zmq.Socket[bytes] | None = None
    mailbox_at: str = ""
    control: zmq.Socket[bytes] | None = None
    control_at: str = ""


def prepare(inbound: str, standby_in: str | None = None) -> Prepared:
    """Make the context, connect to the node's `inbound`, install the SIGTERM handler.

    SIGTERM stays as the launcher left it (blocked) until the incarnation is ready
    for it.  `standby_in`: the run directory of a standby, which also binds its
    sockets there and rehearses an activation, touching (after the fork, copying)
    the memory an activation uses while nobody waits.
    """
    ctx = zmq.Context()
    sock = channel.make_socket(ctx, zmq.PUSH, reconnect_ivl=_INBOUND_RECONNECT_MS)
    channel.connect(sock, inbound)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    signal.signal(signal.SIGTERM, _on_sigterm)
    prepared = Prepared(ctx, sock, inbound, wake_r, wake_w)
    if standby_in is not None:
        base = f"ipc://{standby_in}/w/.standby-{os.getpid()}"
        prepared.mailbox, prepared.mailbox_at = _mailbox_socket(ctx), base + ".mbx"
        channel.bind(prepared.mailbox, prepared.mailbox_at)
        prepared.control, prepared.control_at = _control_socket(ctx), base + ".ctl"
        channel.bind(prepared.control, prepared.control_at)
        _rehearse(prepared, standby_in)
    return prepared


def _mailbox_socket(ctx: zmq.Context[Any]) -> zmq.Socket[bytes]:
    return channel.make_socket(ctx, zmq.PULL, rcvhwm=100_000)


def _control_socket(ctx: zmq.Context[Any]) -> zmq.Socket[bytes]:
    return channel.make_socket(ctx, zmq.PULL)


def _rehearse(prepared: Prepared, run_dir: str) -> None:
    from .launcher import SpawnRequest

    req = SpawnRequest(0, ".standby", 0, "supervisor_tree.worker:Worker", {}, run_dir, prepared.inbound_endpoint,
                       prepared.mailbox_at, prepared.control_at, 1.0)
    req = pickle.loads(pickle.dumps(req, protocol=channel.PROTOCOL))
    rehearsal = _Incarnation(req, prepared)
    rehearsal.replies = channel.ReplySender(rehearsal.ctx)
    rehearsal.worker = _load_target(req.start)()  # type: ignore[operator]
    rehearsal.stats(reset_window=True)
    channel.encode_notice(("ready", req.worker_id, req.generation, rehearsal.pid))
    channel.reply_frame(b"\0" * 8, True, None)
    exit_status("normal")


_current: _Incarnation | None = None  # the incarnation this process runs, for the signal handler


def _on_sigterm(signum: int, frame: object) -> None:
    if _current is not None:
        _current.on_sigterm()


def run_worker(req: SpawnRequest, prepared: Prepared | None = None) -> NoReturn:
    """Run one incarnation in this (freshly forked) process; never returns."""
    code = EXIT_ERROR
    try:
        code = _Incarnation(req, prepared).run()
    except BaseException as exc:  # noqa: BLE001 - last resort: say why, then exit
        log.error("worker %s#%s: internal error", req.worker_id, req.generation, exc_info=True)
        write_reason(req.run_dir, error(f"internal: {type(exc).__name__}: {exc}"))
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - closed or broken stream; nothing to do
                pass
        os._exit(code)


# ---------------------------------------------------------------------------
# One incarnation


class _Incarnation:
    """Sockets, counters and flags of the running worker.

    Invariant: only the main thread touches the sockets except the heartbeat
    thread's own PUSH; counters are published once per batch, so the heartbeat
    thread reads them at most one batch late.
    """

    def __init__(self, req: SpawnRequest, prepared: Prepared | None) -> None:
        self.req = req
        self.pid = os.getpid()
        if prepared is None:
            prepared = prepare(req.inbound)
        elif prepared.inbound_endpoint != req.inbound:
            prepared.inbound.close(0)
            prepared.inbound = channel.make_socket(prepared.context, zmq.PUSH, reconnect_ivl=_INBOUND_RECONNECT_MS)
            channel.connect(prepared.inbound, req.inbound)
            prepared.inbound_endpoint = req.inbound
        self.prepared = prepared
        self.ctx = prepared.context
        self.inbound = prepared.inbound
        self.wake_r, self.wake_w = prepared.wake_r, prepared.wake_w
        self.worker: Worker | None = None
        # flags set from signal handlers and from Worker.stop
        self.halt = False  # the loop must look at stop_reason / shutdown_requested
        self.stop_reason: object = None
        self.shutdown_requested = False
        self.exiting = False
        # counters (published per batch)
        self.calls = self.casts = self.infos = self.errors = self.malformed = 0
        self.max_batch = 0
        self.lat = [0] * _LAT_SIZE
        self.lat_i = 0
        self._window_lat_i = 0
        self.started = time.monotonic()
        self.current: tuple[bytes, bytes] | None = None  # the call being handled (Worker.caller)
        self.timers: list[tuple[float, int, object]] = []  # heap of (due, id, msg)
        self.timers_live: set[int] = set()
        self._timer_ids = 0
        self._hb_stop = threading.Event()
        self._hb_started = threading.Event()
        self._hb_done = threading.Event()

    # -- lifecycle --

    def run(self) -> int:
        req = self.req
        try:
            self._open_sockets()
            worker = self._instantiate()
            self._install_signals()
            result = worker.init(**dict(req.args))
        except _StopRequested:
            return self._finish(SHUTDOWN, call_terminate=False)
        except Exception as exc:  # noqa: BLE001 - a failed start, reported to the node
            log.error("worker %s#%s: init failed", req.worker_id, req.generation, exc_info=True)
            self._notify(("start_failed", req.worker_id, req.generation, self.pid, repr(exc)))
            return self._finish(exc, call_terminate=False)
        try:
            if result is IGNORE:
                self._notify(("ignore", req.worker_id, req.generation, self.pid))
                return self._finish("normal", call_terminate=False)
            if self.stop_reason is not None:  # stop() inside init: OTP's {stop, Reason}
                self._notify(("start_failed", req.worker_id, req.generation, self.pid, repr(self.stop_reason)))
                return self._finish(self.stop_reason, call_terminate=False)
            self._notify(("ready", req.worker_id, req.generation, self.pid))
            self._start_heartbeat()
            reason = self._serve()
        except _StopRequested:
            reason = SHUTDOWN
        return self._finish(reason, call_terminate=True)

    def _open_sockets(self) -> None:
        pre, req = self.prepared, self.req
        self.mailbox = self._adopt(pre.mailbox, pre.mailbox_at, req.mailbox, _mailbox_socket)
        self.control = self._adopt(pre.control, pre.control_at, req.control, _control_socket)
        self.replies = channel.ReplySender(self.ctx)

    def _adopt(self, sock: zmq.Socket[bytes] | None, bound_at: str, endpoint: str,
               make: Callable[[zmq.Context[Any]], zmq.Socket[bytes]]) -> zmq.Socket[bytes]:
        """The standby's socket renamed to `endpoint`, or a new socket bound there."""
        if sock is not None:
            if channel.move_bind(bound_at, endpoint):
                return sock
            sock.close(0)
            channel.unlink_ipc(bound_at)
        sock = make(self.ctx)
        channel.bind(sock, endpoint)
        return sock

    def _instantiate(self) -> Worker:
        req = self.req
        target = _load_target(req.start)
        if isinstance(target, type) and issubclass(target, Worker):
            worker = target()
        elif callable(target):
            worker = target()
            if not isinstance(worker, Worker):
                raise TypeError(f"start factory {target!r} returned {type(worker).__name__}, not a Worker")
        else:
            raise TypeError(f"start target {target!r} is neither a Worker subclass nor a factory")
        worker.id, worker.generation, worker.run_dir = req.worker_id, req.generation, req.run_dir
        worker._ctx = self.ctx
        worker._st_loop = self
        self.worker = worker
        return worker

    def _finish(self, reason: object, call_terminate: bool) -> int:
        self.exiting = True
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        code, exit_reason = exit_status(reason)
        if isinstance(reason, BaseException) and call_terminate:
            log.error("worker %s#%s crashed: %s", self.req.worker_id, self.req.generation, exit_reason,
                      exc_info=reason)
        if call_terminate and self.worker is not None:
            try:
                self.worker.terminate(exit_reason)
            except Exception as exc:  # noqa: BLE001 - OTP: a crash in terminate becomes the reason
                log.error("worker %s#%s: terminate raised", self.req.worker_id, self.req.generation, exc_info=True)
                code, exit_reason = exit_status(exc)
        # Invariant: the heartbeat thread owns a socket only between _hb_started and
        # _hb_done; it checks _hb_stop after setting _hb_started, we check _hb_started
        # after setting _hb_stop, so either we wait for it or it never opens a socket.
        self._hb_stop.set()
        if self._hb_started.is_set():
            self._hb_done.wait(1.0)
        client = self.worker._st_client if self.worker is not None else None
        if client is not None:
            try:
                client.close()  # type: ignore[attr-defined]
            except Exception:  # noqa: BLE001 - exiting anyway; the context below closes its sockets
                pass
        # Closing flushes: the last replies and notices leave before we exit.
        self.ctx.destroy(linger=EXIT_LINGER_MS)
        write_reason(self.req.run_dir, exit_reason)
        return code

    # -- timers --

    def add_timer(self, seconds: float, msg: object) -> int:
        self._timer_ids += 1
        heapq.heappush(self.timers, (time.monotonic() + max(0.0, seconds), self._timer_ids, msg))
        self.timers_live.add(self._timer_ids)
        return self._timer_ids

    def _timer_wait_ms(self, timeout: int) -> int:
        """The poll timeout, shortened to the next timer."""
        while self.timers and self.timers[0][1] not in self.timers_live:
            heapq.heappop(self.timers)
        if not self.timers or timeout == 0:
            return timeout
        wait = max(0, int((self.timers[0][0] - time.monotonic()) * 1000) + 1)
        return wait if timeout < 0 else min(wait, timeout)

    def _fire_timers(self, handle_info: object) -> None:
        now = time.monotonic()
        while self.timers and self.timers[0][0] <= now:
            _, tid, msg = heapq.heappop(self.timers)
            if tid in self.timers_live:
                self.timers_live.discard(tid)
                self.infos += 1
                handle_info(msg)  # type: ignore[operator]
            if self.halt:
                return

    # -- signals --

    def _install_signals(self) -> None:
        # The launcher forks us with SIGTERM blocked, so a stop request sent at any
        # moment is delivered here, once the handler is in place, and never kills
        # the process by the default disposition.  (prepare() installed the handler.)
        global _current
        _current = self
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})

    def on_sigterm(self) -> None:
        if self.exiting:
            return
        worker = self.worker
        if worker is not None and worker.trap_exits:
            self.shutdown_requested = True
            self.halt = True
            return
        self.exiting = True
        raise _StopRequested()

    def request_stop(self, reason: object) -> None:
        self.stop_reason = reason
        self.halt = True
        if threading.current_thread() is not threading.main_thread():
            try:
                os.write(self.wake_w, b"\0")  # wake the loop from its poll
            except OSError:
                pass

    def _on_halt(self) -> object:
        """The reason to stop with, or None to keep serving (a refused stop request)."""
        self.halt = False
        if self.stop_reason is not None:
            return self.stop_reason
        if self.shutdown_requested:
            self.shutdown_requested = False
            assert self.worker is not None
            if self.worker.handle_shutdown_request():
                return SHUTDOWN
            if self.stop_reason is not None:  # it chose another reason itself
                return self.stop_reason
        return None

    # -- the loop --

    def _serve(self) -> object:
        """Serve until a stop; returns the stop reason (see exit_status)."""
        worker = self.worker
        assert worker is not None
        handle_call, handle_cast, handle_info = worker.handle_call, worker.handle_cast, worker.handle_info
        control, wake = self.control, self.wake_r
        recv = self.mailbox.recv
        send = self.replies.send
        items: list[tuple[Any, int]] = [(control, zmq.POLLIN), (self.mailbox, zmq.POLLIN), (wake, zmq.POLLIN)]
        poll = zmq.zmq_poll
        split_call, reply_frame, loads = channel.split_call, channel.reply_frame, pickle.loads
        CALL, CAST, INFO = channel.CALL, channel.CAST, channel.INFO
        NOBLOCK, Again = zmq.NOBLOCK, zmq.Again
        clock = time.perf_counter_ns
        lat, lat_i = self.lat, self.lat_i
        timeout = -1
        while True:
            if self.halt:
                reason = self._on_halt()
                if reason is not None:
                    return reason
            if self.timers:
                timeout = self._timer_wait_ms(timeout)
            for sock, _ in poll(items, timeout):
                if sock is control:
                    self._serve_control()
                elif sock == wake:  # zmq_poll gives raw fds back as ints
                    _drain_fd(wake)
            if self.halt:
                timeout = 0
                continue
            n = calls = casts = infos = 0
            try:
                if self.timers:
                    self._fire_timers(handle_info)
                while n < BATCH:
                    try:
                        frame = recv(NOBLOCK)
                    except Again:
                        break
                    n += 1
                    kind = frame[0]
                    if kind == CALL:
                        try:
                            ref8, reply_to, payload = split_call(frame)
                            msg = loads(payload)
                        except Exception as exc:  # noqa: BLE001
                            self._malformed(frame, exc)
                            continue
                        t0 = clock()
                        self.current = (ref8, reply_to)
                        try:
                            value = handle_call(msg)
                        except Exception as exc:  # noqa: BLE001 - OTP: reply the error, then crash
                            send(reply_to, reply_frame(ref8, False, channel.RemoteError.from_exception(exc)))
                            raise
                        lat[lat_i & _LAT_MASK] = clock() - t0
                        lat_i += 1
                        calls += 1
                        self.current = None
                        if value is not NOREPLY:
                            send(reply_to, self._reply_ok(ref8, value))
                    elif kind == CAST:
                        try:
                            msg = loads(memoryview(frame)[1:])
                        except Exception as exc:  # noqa: BLE001
                            self._malformed(frame, exc)
                            continue
                        casts += 1
                        handle_cast(msg)
                    elif kind == INFO:
                        try:
                            msg = loads(memoryview(frame)[1:])
                        except Exception as exc:  # noqa: BLE001
                            self._malformed(frame, exc)
                            continue
                        infos += 1
                        handle_info(msg)
                    else:
                        self._malformed(frame, ValueError(f"unknown frame kind {frame[:1]!r}"))
                    if self.halt:
                        break
            except Exception as exc:  # noqa: BLE001 - a callback raised: the worker crashes
                self.errors += 1
                return exc
            finally:
                self.calls += calls
                self.casts += casts
                self.infos += infos
                self.lat_i = lat_i
                if n > self.max_batch:
                    self.max_batch = n
            timeout = 0 if n == BATCH else -1

    def _reply_ok(self, ref8: bytes, value: object) -> bytes:
        try:
            return channel.reply_frame(ref8, True, value)
        except Exception as exc:  # noqa: BLE001 - the handler's value does not pickle: tell the caller
            self.errors += 1
            err = channel.RemoteError(type(exc).__name__, f"reply value does not pickle: {exc}")
            return channel.reply_frame(ref8, False, err)

    def _malformed(self, frame: bytes, exc: BaseException) -> None:
        self.malformed += 1
        why = f"malformed message: {type(exc).__name__}: {exc}"
        if frame and frame[0] == channel.CALL:
            try:
                ref8, reply_to, _ = channel.split_call(frame)
            except ValueError:
                pass
            else:
                self.replies.send(reply_to, channel.reply_frame(ref8, False, channel.RemoteError("MalformedMessage", why)))
                return
        log.warning("worker %s#%s: %s (frame starts %r; no reply address, dropped)",
                    self.req.worker_id, self.req.generation, why, frame[:24])

    # -- control --

    def _serve_control(self) -> None:
        while True:
            try:
                frame = self.control.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            msg = channel.decode(frame)
            if not isinstance(msg, channel.Call):
                self._malformed(frame, ValueError(f"control socket takes calls only; got {type(msg).__name__}"))
                continue
            try:
                op, kwargs = channel.loads_payload(msg.payload)  # type: ignore[misc]
                ok, value = True, self._control_op(op, dict(kwargs))  # type: ignore[has-type]
                out = channel.encode_reply(msg.ref, ok, value)
            except Exception as exc:  # noqa: BLE001 - a failed op is answered, never a crash
                out = channel.encode_reply(msg.ref, False, channel.RemoteError.from_exception(exc))
            self.replies.send(msg.reply_to.encode(), out)

    def _control_op(self, op: object, kwargs: dict[str, object]) -> object:
        if op == "ping":
            return "pong"
        if op == "stats":
            return self.stats(reset_window=False)
        if op in ("profile_start", "profile_stop"):
            from .profiling import yappi_engine  # written beside this module; imported only when used

            fn: Callable[..., object] = yappi_engine.start if op == "profile_start" else yappi_engine.stop
            return fn(**kwargs)
        raise ValueError(f"unknown control op {op!r}; expected ping, stats, profile_start or profile_stop")

    # -- heartbeats and stats --

    def stats(self, reset_window: bool) -> dict[str, object]:
        end = self.lat_i
        since = self._window_lat_i
        stats: dict[str, object] = {
            "calls": self.calls, "casts": self.casts, "infos": self.infos,
            "errors": self.errors, "malformed": self.malformed,
            "dropped_replies": self.replies.dropped,
            "call_p99_us": _p99_us(self.lat, since, end),
            "max_batch": self.max_batch,
            "uptime_s": round(time.monotonic() - self.started, 3),
        }
        own = self._worker_statistics()
        if own:
            stats["worker"] = own
        if reset_window:
            self._window_lat_i = end
            self.max_batch = 0
        return stats

    def _worker_statistics(self) -> dict[str, object] | None:
        if self.worker is None:
            return None
        try:
            return self.worker.statistics()
        except Exception:  # noqa: BLE001 - figures are optional; a broken one must not stop heartbeats
            log.warning("worker %s#%s: statistics() raised", self.req.worker_id, self.req.generation, exc_info=True)
            return None

    def _start_heartbeat(self) -> None:
        # _thread, not threading.Thread: Thread.start() waits until the new thread has
        # run, which put ~1 ms between "ready" and serving the first call on a busy host.
        _thread.start_new_thread(self._beat, ())

    def _beat(self) -> None:
        self._hb_started.set()
        if self._hb_stop.is_set():
            return
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # the main thread takes stop requests
        req = self.req
        sock = channel.make_socket(self.ctx, zmq.PUSH, reconnect_ivl=_INBOUND_RECONNECT_MS)
        try:
            channel.connect(sock, req.inbound)
            while not self._hb_stop.wait(req.heartbeat_interval):
                beat = ("hb", req.worker_id, req.generation, self.pid, self.stats(reset_window=True))
                try:
                    sock.send(channel.encode_notice(beat), zmq.NOBLOCK)
                except zmq.Again:
                    pass  # the node is not reading: it will see the misses itself
        finally:
            sock.close(0)
            self._hb_done.set()

    def _notify(self, notice: tuple[object, ...]) -> None:
        try:
            self.inbound.send(channel.encode_notice(notice), zmq.NOBLOCK)
        except (zmq.Again, AttributeError):
            log.warning("worker %s#%s: could not tell the node %r", self.req.worker_id, self.req.generation, notice[0])


def _p99_us(lat: list[int], since: int, end: int) -> int:
    n = min(end - since, _LAT_SIZE)
    if n <= 0:
        return 0
    samples = sorted(lat[(end - k - 1) & _LAT_MASK] for k in range(n))
    return samples[min(n - 1, (n * 99) // 100)] // 1000


def _drain_fd(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _load_target(start: str | bytes) -> object:
    if isinstance(start, bytes):
        import cloudpickle

        return cloudpickle.loads(start)
    module_name, _, qualname = start.partition(":")
    obj: object = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj
