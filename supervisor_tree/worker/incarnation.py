"""The loop that runs one worker incarnation, inside its own process.

Owns, inside a worker process: the mailbox and control sockets, dispatch of
calls, casts and infos to the behaviour's callbacks (the loop: `serve.py`), the stop request (SIGTERM),
heartbeats to the node (`heartbeat.py`), and exiting with a reason (`exits.py`).
Must not fork, and must not decide anything about restarts: it only says how it ended.

    run_worker(SpawnRequest(...))          # in a freshly forked process; never returns

* A message that does not decode is not a crash.  A frame without the run's tag
  is dropped unread (its reply address cannot be trusted either); an authentic call
  that does not decode is answered with a "malformed message" error; all are counted
  (`malformed`) and logged at most once a second per sender.
* A callback that raises crashes the worker: a call first gets the error
  (`channel.RemoteError`) as its reply, then `terminate`, then exit 82.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable

import zmq

from supervisor_tree.spec import SHUTDOWN
from supervisor_tree.wire import auth, channel
from supervisor_tree.wire.dropped import Dropped
from supervisor_tree.wire.shapes import MALFORMED
from supervisor_tree.worker import faults, idempotency, standby
from supervisor_tree.worker.behaviour import IGNORE, Worker
from supervisor_tree.worker.control import serve_control
from supervisor_tree.worker.exits import exit_status, write_reason
from supervisor_tree.worker.heartbeat import LAT_SIZE, Heartbeat, stats_of
from supervisor_tree.worker.mailbox import Backlog
from supervisor_tree.worker.replies import send_answers
from supervisor_tree.worker.serve import BATCH, serve
from supervisor_tree.worker.spawn import SpawnRequest, load_target
from supervisor_tree.worker.standby import INBOUND_RECONNECT_MS, Prepared, control_socket, mailbox_socket, prepare
from supervisor_tree.worker.timers import Timers

__all__ = ["Incarnation", "BATCH", "EXIT_LINGER_MS"]

log = logging.getLogger("supervisor_tree.worker")

EXIT_LINGER_MS = 200  # how long the last replies and notices may take to leave at exit


class _StopRequested(BaseException):
    """Raised in the main thread by SIGTERM when the worker does not trap exits."""


class Incarnation:
    """Sockets, counters and flags of the running worker.

    Invariant: only the main thread touches the sockets except the heartbeat
    thread's own PUSH; counters are published once per batch, so the heartbeat
    thread reads them at most one batch late.
    """

    def __init__(self, req: SpawnRequest, prepared: Prepared | None) -> None:
        self.req = req
        self.pid = os.getpid()
        self.key = auth.key_for(req.run_dir)  # inherited from the node through the fork server: no file read
        self.drops = Dropped(log, f"worker {req.worker_id}#{req.generation}")
        if prepared is None:
            prepared = prepare(req.inbound)
        elif prepared.inbound_endpoint != req.inbound:
            prepared.inbound.close(0)
            prepared.inbound = channel.make_socket(prepared.context, zmq.PUSH, reconnect_ivl=INBOUND_RECONNECT_MS)
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
        self.lat = [0] * LAT_SIZE
        self.lat_i = 0
        self.window_lat_i = 0
        self.started = time.monotonic()
        self.current: tuple[bytes, bytes] | None = None  # the call being handled (Worker.caller)
        self.box: Backlog | None = None  # the mailbox's depth and overflow policy (mailbox.py)
        self.timers = Timers()
        self.heartbeat = Heartbeat(self.ctx, req.inbound, req.heartbeat_interval, self._beat, INBOUND_RECONNECT_MS)

    # -- lifecycle --

    def run(self) -> int:
        req = self.req
        try:
            self._open_sockets()
            standby.mark("sockets")
            worker = self._instantiate()
            self._install_signals()
            faults.before_init(req.run_dir, req.worker_id)  # a chaos run's slow or failing start, if any
            result = worker.init(**dict(req.args))
        except _StopRequested:
            return self._finish(SHUTDOWN, call_terminate=False)
        except Exception as exc:
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
            declared = idempotency.declared(worker)
            if declared:  # before "ready": callers learn which calls they may retry (node/retries.py)
                self._notify(("declare", req.worker_id, req.generation, self.pid, {"idempotent": declared}))
            standby.mark("ready")
            self._notify(("ready", req.worker_id, req.generation, self.pid))
            self.heartbeat.start()
            reason = self._serve()
        except _StopRequested:
            reason = SHUTDOWN
        return self._finish(reason, call_terminate=True)

    def _open_sockets(self) -> None:
        pre, req = self.prepared, self.req
        self.mailbox = standby.adopt(self.ctx, pre.mailbox, pre.mailbox_at, req.mailbox, mailbox_socket)
        self.control = standby.adopt(self.ctx, pre.control, pre.control_at, req.control, control_socket)
        self.replies = channel.ReplySender(self.ctx, spare=pre.reply)
        self.box = Backlog(self.mailbox, self.replies, f"{req.worker_id}#{req.generation}", self.key,
                           req.mailbox_limit, req.mailbox_overflow)

    def _instantiate(self) -> Worker:
        req = self.req
        target = load_target(req.start)
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
            except Exception as exc:
                log.error("worker %s#%s: terminate raised", self.req.worker_id, self.req.generation, exc_info=True)
                code, exit_reason = exit_status(exc)
        self.heartbeat.stop()
        client = self.worker._st_client if self.worker is not None else None
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - exiting anyway; the context below closes its sockets
                pass
        # Closing flushes: the last replies and notices leave before we exit.
        self.ctx.destroy(linger=EXIT_LINGER_MS)
        write_reason(self.req.run_dir, exit_reason)
        return code

    # -- timers --

    def add_timer(self, seconds: float, msg: object) -> int:
        return self.timers.add(seconds, msg)

    def cancel_timer(self, timer_id: int) -> None:
        self.timers.cancel(timer_id)

    def _fire_timers(self, handle_info: Callable[[object], None]) -> None:
        for msg in self.timers.due():
            self.infos += 1
            handle_info(msg)
            if self.halt:
                return

    # -- signals --

    def _install_signals(self) -> None:
        # The launcher forks us with SIGTERM blocked, so a stop request sent at any
        # moment is delivered here, once the handler is in place, and never kills
        # the process by the default disposition.  (prepare() installed the handler.)
        standby.on_sigterm(self.on_sigterm)
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
        """Serve until a stop; returns the stop reason (see exit_status).  The loop: serve.py."""
        return serve(self)

    def reply(self, token: tuple[bytes, bytes], value: object) -> None:
        ref8, reply_to = token
        self.replies.send(reply_to, self._reply_ok(ref8, value))

    def reply_error(self, token: tuple[bytes, bytes], exc: BaseException) -> None:
        self._reply_error(token[1], token[0], exc)

    def reply_many(self, answers: list[tuple[tuple[bytes, bytes], bool, object]]) -> None:
        send_answers(self.replies.send, self.key, self._reply_ok, answers)

    def _reply_error(self, reply_to: bytes, ref8: bytes, exc: BaseException) -> None:
        self.replies.send(reply_to, channel.reply_frame(self.key, ref8, False, channel.RemoteError.from_exception(exc)))

    def _reply_ok(self, ref8: bytes, value: object) -> bytes:
        try:
            return channel.reply_frame(self.key, ref8, True, value)
        except Exception as exc:  # noqa: BLE001 - the handler's value does not pickle: tell the caller
            self.errors += 1
            err = channel.RemoteError(type(exc).__name__, f"reply value does not pickle: {exc}")
            return channel.reply_frame(self.key, ref8, False, err)

    def _serve_control(self) -> None:
        serve_control(self)

    def drop(self, peer: str, kind: str, why: str) -> None:
        """A frame not acted on: counted in `malformed`, logged at most once a second per peer."""
        self.malformed += 1
        self.drops.drop(peer, kind, why)

    def _malformed(self, frame: bytes, end: int, exc: BaseException) -> None:
        """An authentic frame that does not decode: a call is answered with the error, anything else dropped."""
        why = f"malformed message: {type(exc).__name__}: {exc}"
        if frame[0] == channel.CALL:
            try:
                ref8, reply_to, _ = channel.split_call(frame, end)
            except ValueError:
                pass
            else:
                self.drop(reply_to.decode(errors="replace"), MALFORMED, why)
                self.replies.send(reply_to, channel.reply_frame(self.key, ref8, False, channel.RemoteError("MalformedMessage", why)))
                return
        self.drop("a sender (mailbox PULL)", MALFORMED, f"{why} (no reply address)")

    # -- heartbeats and stats --

    def stats(self, reset_window: bool) -> dict[str, object]:
        return stats_of(self, reset_window)

    def dropped_replies(self) -> int:
        return self.replies.dropped

    def mailbox_figures(self) -> dict[str, object]:
        return self.box.figures() if self.box is not None else {}

    def worker_statistics(self) -> dict[str, object] | None:
        if self.worker is None:
            return None
        try:
            return self.worker.statistics()
        except Exception:
            log.warning("worker %s#%s: statistics() raised", self.req.worker_id, self.req.generation, exc_info=True)
            return None

    def _beat(self) -> bytes:
        req = self.req
        return channel.encode_notice(self.key, ("hb", req.worker_id, req.generation, self.pid, self.stats(reset_window=True)))

    def _notify(self, notice: tuple[object, ...]) -> None:
        try:
            self.inbound.send(channel.encode_notice(self.key, notice), zmq.NOBLOCK)
        except (zmq.Again, AttributeError):
            log.warning("worker %s#%s: could not tell the node %r", self.req.worker_id, self.req.generation, notice[0])
