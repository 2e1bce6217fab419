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

import importlib
import logging
import os
import pickle
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

import zmq

from . import channel
from .spec import NORMAL, SHUTDOWN, ExitKind, ExitReason, error, shutdown_with

if TYPE_CHECKING:
    from .launcher import SpawnRequest

__all__ = ["Worker", "IGNORE", "run_worker", "prepare", "Prepared", "exit_status"]

log = logging.getLogger(__name__)

EXIT_NORMAL, EXIT_SHUTDOWN, EXIT_SHUTDOWN_WITH, EXIT_ERROR = 0, 80, 81, 82
BATCH = 256  # mailbox messages per round before the control socket is looked at again
EXIT_LINGER_MS = 200  # how long the last replies and notices may take to leave at exit
_LAT_SIZE = 1024  # call latency ring (power of two)
_LAT_MASK = _LAT_SIZE - 1


class _Ignore:
    def __repr__(self) -> str:
        return "IGNORE"


IGNORE = _Ignore()
"""Return it from `init` to start nothing (OTP's `ignore`)."""


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
    _ctx: zmq.Context | None = None
    _st_loop: _Incarnation | None = None
    _st_client: object = None

    # -- callbacks --

    def init(self, **args: object) -> object:
        return None

    def handle_call(self, msg: object) -> object:
        raise NotImplementedError(f"{type(self).__name__} has no handle_call (got {msg!r})")

    def handle_cast(self, msg: object) -> None:
        raise NotImplementedError(f"{type(self).__name__} has no handle_cast (got {msg!r})")

    def handle_info(self, msg: object) -> None:
        log.warning("worker %s: unexpected message %r (no handle_info); ignored", self.id, msg)

    def terminate(self, reason: ExitReason) -> None:
        pass

    def handle_shutdown_request(self) -> bool:
        """Only consulted when `trap_exits`: return False to ignore the stop request."""
        return True

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

    def call(self, worker_id: str, msg: object, timeout: float = 5.0) -> object:
        """Call another worker of the tree by id."""
        return self._client().call(worker_id, msg, timeout=timeout)  # type: ignore[attr-defined]

    def cast(self, worker_id: str, msg: object) -> None:
        """Cast to another worker of the tree by id."""
        self._client().cast(worker_id, msg)  # type: ignore[attr-defined]

    def _client(self) -> object:
        if self._st_client is None:
            from .client import Client  # written beside this module; imported only when used

            self._st_client = Client(self.run_dir, context=self._ctx)  # type: ignore[call-arg]
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
    """What a standby creates before it knows its job: a context and a PUSH to the node."""

    context: zmq.Context
    inbound: zmq.Socket
    inbound_endpoint: str


def prepare(inbound: str) -> Prepared:
    ctx = zmq.Context()
    sock = channel.make_socket(ctx, zmq.PUSH)
    channel.connect(sock, inbound)
    return Prepared(ctx, sock, inbound)


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
        if prepared is not None and prepared.inbound_endpoint != req.inbound:
            prepared.inbound.close(0)
            prepared.inbound = channel.make_socket(prepared.context, zmq.PUSH)
            channel.connect(prepared.inbound, req.inbound)
        self.prepared = prepared
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
        self._hb_stop = threading.Event()
        self._hb_thread: threading.Thread | None = None

    # -- lifecycle --

    def run(self) -> int:
        req = self.req
        self._install_signals()
        try:
            self._open_sockets()
            worker = self._instantiate()
            result = worker.init(**dict(req.args))
        except _StopRequested:
            return self._finish(SHUTDOWN, call_terminate=False)
        except Exception as exc:  # noqa: BLE001 - a failed start, reported to the node
            log.error("worker %s#%s: init failed", req.worker_id, req.generation, exc_info=True)
            self._notify(("start_failed", req.worker_id, req.generation, self.pid, repr(exc)))
            return self._finish(exc, call_terminate=False)
        if result is IGNORE:
            self._notify(("ignore", req.worker_id, req.generation, self.pid))
            return self._finish("normal", call_terminate=False)
        if self.stop_reason is not None:  # stop() inside init: OTP's {stop, Reason}
            self._notify(("start_failed", req.worker_id, req.generation, self.pid, repr(self.stop_reason)))
            return self._finish(self.stop_reason, call_terminate=False)
        self._notify(("ready", req.worker_id, req.generation, self.pid))
        self._start_heartbeat()
        try:
            reason = self._serve()
        except _StopRequested:
            reason = SHUTDOWN
        return self._finish(reason, call_terminate=True)

    def _open_sockets(self) -> None:
        if self.prepared is None:
            self.prepared = prepare(self.req.inbound)
        ctx = self.ctx = self.prepared.context
        self.inbound = self.prepared.inbound
        self.mailbox = channel.make_socket(ctx, zmq.PULL, rcvhwm=100_000)
        channel.bind(self.mailbox, self.req.mailbox)
        self.control = channel.make_socket(ctx, zmq.PULL)
        channel.bind(self.control, self.req.control)
        self.replies = channel.ReplySender(ctx)

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
        self._hb_stop.set()
        if self._hb_thread is not None:
            self._hb_thread.join(1.0)
        if self.prepared is not None:
            # Closing flushes: the last replies and notices leave before we exit.
            self.prepared.context.destroy(linger=EXIT_LINGER_MS)
        write_reason(self.req.run_dir, exit_reason)
        return code

    # -- signals --

    def _install_signals(self) -> None:
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum: int, frame: object) -> None:
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
        items = [(control, zmq.POLLIN), (self.mailbox, zmq.POLLIN), (wake, zmq.POLLIN)]
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
            for sock, _ in poll(items, timeout):
                if sock is control:
                    self._serve_control()
                elif sock == wake:
                    _drain_fd(wake)
            if self.halt:
                timeout = 0
                continue
            n = calls = casts = infos = 0
            try:
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
                        try:
                            value = handle_call(msg)
                        except Exception as exc:  # noqa: BLE001 - OTP: reply the error, then crash
                            send(reply_to, reply_frame(ref8, False, channel.RemoteError.from_exception(exc)))
                            raise
                        lat[lat_i & _LAT_MASK] = clock() - t0
                        lat_i += 1
                        calls += 1
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
                ok, value = True, self._control_op(op, dict(kwargs))
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

            fn = yappi_engine.start if op == "profile_start" else yappi_engine.stop
            return fn(**kwargs)
        raise ValueError(f"unknown control op {op!r}; expected ping, stats, profile_start or profile_stop")

    # -- heartbeats and stats --

    def stats(self, reset_window: bool) -> dict[str, object]:
        end = self.lat_i
        since = self._window_lat_i
        stats = {
            "calls": self.calls, "casts": self.casts, "infos": self.infos,
            "errors": self.errors, "malformed": self.malformed,
            "dropped_replies": self.replies.dropped,
            "call_p99_us": _p99_us(self.lat, since, end),
            "max_batch": self.max_batch,
            "uptime_s": round(time.monotonic() - self.started, 3),
        }
        if reset_window:
            self._window_lat_i = end
            self.max_batch = 0
        return stats

    def _start_heartbeat(self) -> None:
        self._hb_thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)
        self._hb_thread.start()

    def _beat(self) -> None:
        req = self.req
        sock = channel.make_socket(self.ctx, zmq.PUSH)
        try:
            channel.connect(sock, req.inbound)
            while not self._hb_stop.wait(req.heartbeat_interval):
                beat = ("hb", req.worker_id, req.generation, self.pid, self.stats(reset_window=True))
                try:
                    sock.send(channel.encode_info(beat), zmq.NOBLOCK)
                except zmq.Again:
                    pass  # the node is not reading: it will see the misses itself
        finally:
            sock.close(0)

    def _notify(self, notice: tuple[object, ...]) -> None:
        try:
            self.inbound.send(channel.encode_info(notice), zmq.NOBLOCK)
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
