"""The loop of an asyncio worker: a Worker whose callbacks are `async def`, on an event loop in its process.

    class Db(Worker):
        async def init(self, dsn):
            self.pool = await connect(dsn)
        async def handle_call(self, msg):
            return await self.pool.fetch(msg)          # 100 calls wait here at once
        async def handle_cast(self, msg):
            await self.call("audit", ("saw", msg))     # other workers, the loop never blocked

Semantics (OTP's, with calls as tasks):

* Each call runs as its own task and is answered by its ref when it finishes, so
  calls that await run concurrently; `max_concurrency` (the child's config, default
  `spec.DEFAULT_MAX_CONCURRENCY`) bounds the tasks in flight: beyond it the mailbox
  is not read, and senders meet backpressure.  Casts and infos (timers included)
  run one after the other, in arrival order, in one task.
* A callback that raises answers its call with the error, then the worker crashes:
  the other calls in flight are cancelled (their callers get a "Cancelled" error),
  `terminate(error)` runs, and the supervisor restarts it.
* A stop request (SIGTERM) cancels the calls in flight, the same way; with
  `trap_exits` and `handle_shutdown_request()` True, the mailbox is closed and the
  calls in flight finish first (within the child's shutdown timeout, after which the
  node kills it).  `stop(reason)` in a handler: its own reply goes out, the rest is
  cancelled.  `init` and `terminate` may be `async def`; sync callbacks run inline.
* Heartbeats are sent by the loop itself, so a loop blocked by a sync call inside a
  handler misses them, and the node reports the worker `hung` and kills it.

The mailbox and control sockets are read with `loop.add_reader` on their ZeroMQ fds
(edge-triggered: each wake-up drains to empty, or reschedules itself), never through
zmq.asyncio.  Owns only this loop; the sockets, counters and exit are `Incarnation`'s.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import pickle
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import zmq

from supervisor_tree.spec import SHUTDOWN
from supervisor_tree.wire import channel, frames
from supervisor_tree.wire.coalesce import unpack_batch
from supervisor_tree.wire.shapes import UNAUTHENTICATED
from supervisor_tree.worker import faults, idempotency
from supervisor_tree.worker.behaviour import IGNORE, NOREPLY
from supervisor_tree.worker.exits import exit_status
from supervisor_tree.worker.heartbeat import LAT_MASK
from supervisor_tree.worker.incarnation import BATCH, Incarnation
from supervisor_tree.worker.standby import mark

try:  # uvloop where installed (the `fast` extra)
    import uvloop

    _new_loop: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
except ImportError:  # pragma: no cover - uvloop is in the default install
    _new_loop = asyncio.new_event_loop

if TYPE_CHECKING:
    from supervisor_tree.client.aio import AsyncClient
    from supervisor_tree.worker.spawn import SpawnRequest
    from supervisor_tree.worker.standby import Prepared

__all__ = ["AioIncarnation", "new_event_loop"]

log = logging.getLogger("supervisor_tree.worker")

_CURRENT: contextvars.ContextVar[tuple[bytes, bytes] | None] = contextvars.ContextVar("current_call", default=None)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when installed, else asyncio's."""
    return _new_loop()


async def _settle(value: object) -> object:
    """A callback's result: awaited when it is awaitable (an `async def` callback), else as is."""
    if inspect.isawaitable(value):
        return await value
    return value


async def _run_callback(callback: Callable[..., object], *args: object) -> object:
    """Call a sync or `async def` callback and settle its result."""
    return await _settle(callback(*args))


class AioIncarnation(Incarnation):
    """One asyncio worker incarnation.  Invariant: everything below runs on the loop's (main) thread."""

    def __init__(self, req: SpawnRequest, prepared: Prepared | None) -> None:
        super().__init__(req, prepared)
        self.max_concurrency = max(1, req.max_concurrency)
        self.calls_in_flight: set[asyncio.Task[None]] = set()
        self.calls_waiting: deque[tuple[bytes, bytes, object]] = deque()  # a calls frame's rest, past max_concurrency
        self.graceful = False  # a trapped stop request: let the calls in flight finish
        self.crashed = False
        self.stopper: asyncio.Task[Any] | None = None  # the task that called stop(): its reply goes out
        self.reading = False
        self._timer_handles: dict[int, asyncio.TimerHandle] = {}
        self._timer_ids = 0
        self._init_task: asyncio.Future[object] | None = None
        self._aio_client: AsyncClient | None = None
        self._stopping = asyncio.Event()

    # Worker.caller() reads `current`: per task here, as calls run concurrently.
    @property
    def current(self) -> tuple[bytes, bytes] | None:
        return _CURRENT.get()

    @current.setter
    def current(self, token: tuple[bytes, bytes] | None) -> None:
        _CURRENT.set(token)

    def aio_client(self) -> AsyncClient:
        """What `await self.call(...)` and `self.cast(...)` use in this worker (one per process)."""
        if self._aio_client is None:
            from supervisor_tree.client.aio import AsyncClient

            self._aio_client = AsyncClient(self.req.run_dir, context=self.ctx)
        return self._aio_client

    # -- lifecycle --

    def run(self) -> int:
        loop = new_event_loop()
        asyncio.set_event_loop(loop)
        self.loop = loop
        try:
            return loop.run_until_complete(self._main())
        finally:
            asyncio.set_event_loop(None)

    async def _main(self) -> int:
        req = self.req
        try:
            self._open_sockets()
            mark("sockets")
            worker = self._instantiate()
            self.loop.add_signal_handler(signal.SIGTERM, self._on_sigterm)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
            faults.before_init(req.run_dir, req.worker_id)  # a chaos run's slow or failing start, if any
            self._init_task = asyncio.ensure_future(_settle(worker.init(**dict(req.args))))
            result = await self._init_task
        except asyncio.CancelledError:  # a stop request while init awaited
            return await self._finish_aio(SHUTDOWN, call_terminate=False)
        except Exception as exc:
            log.error("worker %s#%s: init failed", req.worker_id, req.generation, exc_info=True)
            self._notify(("start_failed", req.worker_id, req.generation, self.pid, repr(exc)))
            return await self._finish_aio(exc, call_terminate=False)
        if result is IGNORE:
            self._notify(("ignore", req.worker_id, req.generation, self.pid))
            return await self._finish_aio("normal", call_terminate=False)
        if self.stop_reason is not None:  # stop() inside init, or a stop request that came meanwhile
            if self.stop_reason is not SHUTDOWN:
                self._notify(("start_failed", req.worker_id, req.generation, self.pid, repr(self.stop_reason)))
            return await self._finish_aio(self.stop_reason, call_terminate=False)
        declared = idempotency.declared(worker)
        if declared:  # before "ready": callers learn which calls they may retry (node/retries.py)
            self._notify(("declare", req.worker_id, req.generation, self.pid, {"idempotent": declared}))
        mark("ready")
        self._notify(("ready", req.worker_id, req.generation, self.pid))
        self._beat_soon()
        reason = await self._serve_aio()
        return await self._finish_aio(reason, call_terminate=True)

    async def _finish_aio(self, reason: object, call_terminate: bool) -> int:
        self.exiting = True
        self.loop.remove_signal_handler(signal.SIGTERM)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        self._stop_reading()
        for handle in self._timer_handles.values():
            handle.cancel()
        code, exit_reason = exit_status(reason)
        if call_terminate:
            if isinstance(reason, BaseException):
                log.error("worker %s#%s crashed: %s", self.req.worker_id, self.req.generation, exit_reason,
                          exc_info=reason)
            if self.worker is not None:
                try:
                    await _run_callback(self.worker.terminate, exit_reason)
                except Exception as exc:
                    log.error("worker %s#%s: terminate raised", self.req.worker_id, self.req.generation, exc_info=True)
                    code, exit_reason = exit_status(exc)
        if self._aio_client is not None:
            self._aio_client.close()
        return self._finish(exit_reason, call_terminate=False)

    # -- stop requests --

    def _on_sigterm(self) -> None:
        if self.exiting or self.stop_reason is not None:
            return
        if self._init_task is not None and not self._init_task.done():
            self.stop_reason = SHUTDOWN
            self._init_task.cancel()
            return
        worker = self.worker
        if worker is not None and worker.trap_exits:
            self.loop.create_task(self._ask_worker_to_stop())
            return
        self._stop(SHUTDOWN)

    async def _ask_worker_to_stop(self) -> None:
        assert self.worker is not None
        try:
            agreed = await _settle(self.worker.handle_shutdown_request())
        except Exception as exc:  # noqa: BLE001 - a raising callback crashes the worker, as anywhere
            self._crash(exc)
            return
        if agreed and self.stop_reason is None:
            self.graceful = True
            self._stop(SHUTDOWN)

    def request_stop(self, reason: object) -> None:
        """Worker.stop: from a handler (its reply still goes out), or from another thread."""
        if threading.current_thread() is not threading.main_thread():
            self.loop.call_soon_threadsafe(self._stop, reason)
            return
        if self._init_task is not None and not self._init_task.done():
            self.stop_reason = reason  # init returns, then `_main` fails the start with it
            return
        self.stopper = asyncio.current_task()
        self._stop(reason)

    def _stop(self, reason: object) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self._stopping.set()

    def _crash(self, exc: BaseException) -> None:
        self.errors += 1
        if not self.crashed:
            self.crashed = True
            self.stop_reason = exc
        self._stopping.set()

    # -- serving --

    async def _serve_aio(self) -> object:
        loop = self.loop
        self.ordered: asyncio.Queue[tuple[bool, object]] = asyncio.Queue()
        self.ordered_task = loop.create_task(self._run_ordered())
        self.mailbox_fd = int(self.mailbox.getsockopt(zmq.FD))
        self.control_fd = int(self.control.getsockopt(zmq.FD))
        loop.add_reader(self.mailbox_fd, self._read_mailbox)
        loop.add_reader(self.control_fd, self._serve_control)
        self.reading = True
        self._read_mailbox()  # what arrived before the readers were in place (the fds are edge-triggered)
        self._serve_control()
        await self._stopping.wait()
        return await self._wind_down()

    def _stop_reading(self) -> None:
        if self.reading:
            self.reading = False
            self.loop.remove_reader(self.mailbox_fd)
            self.loop.remove_reader(self.control_fd)

    def _read_mailbox(self) -> None:
        recv, Again, poll = self.mailbox.recv, zmq.Again, zmq.zmq_poll
        mailbox_only = [(self.mailbox, zmq.POLLIN)]
        n = 0
        while (self.reading and not self._stopping.is_set() and not self.calls_waiting
               and len(self.calls_in_flight) < self.max_concurrency):
            if n == BATCH:  # give the tasks a turn; the fd will not wake us for what is already queued
                self.loop.call_soon(self._read_mailbox)
                return
            if n == 1 and not poll(mailbox_only, 0):  # it reads the socket's events, as Again would: the fd re-arms
                return  # a frame that came alone: a poll is cheaper than raising Again
            try:
                frame = recv(zmq.NOBLOCK)
            except Again:
                return
            n += 1
            self._dispatch(frame)
        # At max_concurrency: a call that finishes reads on (`_call_done`).

    def _dispatch(self, frame: bytes) -> None:
        end = self.key.verify(frame)
        if end < 0:  # not tagged with the run's key: not one byte of it is read
            self.drop("a sender (mailbox PULL)", UNAUTHENTICATED, f"frame of {len(frame)} bytes without the run's tag")
            return
        kind = frame[0]
        if kind == channel.CALL:
            try:
                ref8, reply_to, payload = channel.split_call(frame, end)
                msg = pickle.loads(payload)
            except Exception as exc:  # noqa: BLE001
                self._malformed(frame, end, exc)
                return
            self._start_call(ref8, reply_to, msg)
        elif kind == frames.CALLS:  # calls pipelined together (call_many): each a task, as if it came alone
            try:
                reply_to, calls = frames.split_calls(frame, end)
            except Exception as exc:  # noqa: BLE001
                self._malformed(frame, end, exc)
                return
            for ref, msg in calls:
                if len(self.calls_in_flight) < self.max_concurrency:
                    self._start_call(ref.to_bytes(8, "little"), reply_to, msg)
                else:
                    self.calls_waiting.append((ref.to_bytes(8, "little"), reply_to, msg))
        elif kind in (channel.CAST, channel.INFO):
            try:
                msg = pickle.loads(memoryview(frame)[1:end])
            except Exception as exc:  # noqa: BLE001
                self._malformed(frame, end, exc)
                return
            self.ordered.put_nowait((kind == channel.CAST, msg))
        elif kind == channel.BATCH:  # casts coalesced by a sender: queued one by one, in order
            for msg in unpack_batch(self, frame, end):
                self.ordered.put_nowait((True, msg))
        else:
            self._malformed(frame, end, ValueError(f"unknown frame kind {frame[:1]!r}"))

    def _start_call(self, ref8: bytes, reply_to: bytes, msg: object) -> None:
        task = self.loop.create_task(self._call(ref8, reply_to, msg))
        self.calls_in_flight.add(task)
        task.add_done_callback(self._call_done)

    async def _call(self, ref8: bytes, reply_to: bytes, msg: object) -> None:
        assert self.worker is not None
        _CURRENT.set((ref8, reply_to))
        t0 = time.perf_counter_ns()
        try:
            value = self.worker.handle_call(msg)
            if inspect.isawaitable(value):  # inline, not through _settle: one frame less in a traceback
                value = await value
        except asyncio.CancelledError:
            why = "it crashed" if self.crashed else f"it stopped: {exit_status(self.stop_reason)[1]}"
            error = channel.RemoteError("Cancelled", f"worker {self.req.worker_id!r} cancelled this call: {why}")
            self.replies.send(reply_to, channel.reply_frame(self.key, ref8, False, error))
            raise
        except Exception as exc:  # noqa: BLE001 - answered with the error, then the worker crashes
            self.replies.send(reply_to, channel.reply_frame(self.key, ref8, False, channel.RemoteError.from_exception(exc)))
            self._crash(exc)
            return
        self.lat[self.lat_i & LAT_MASK] = time.perf_counter_ns() - t0
        self.lat_i += 1
        self.calls += 1
        if value is not NOREPLY:
            self.replies.send(reply_to, self._reply_ok(ref8, value))

    def _call_done(self, task: asyncio.Task[None]) -> None:
        full = len(self.calls_in_flight) >= self.max_concurrency
        self.calls_in_flight.discard(task)
        if self.calls_waiting and self.reading and not self._stopping.is_set():
            self._start_call(*self.calls_waiting.popleft())
            full = not self.calls_waiting and len(self.calls_in_flight) < self.max_concurrency
        if full and self.reading:
            self.loop.call_soon(self._read_mailbox)

    async def _run_ordered(self) -> None:
        """Casts and infos, one at a time, in the order they came."""
        worker = self.worker
        assert worker is not None
        while True:
            is_cast, msg = await self.ordered.get()
            try:
                if is_cast:
                    self.casts += 1
                    await _run_callback(worker.handle_cast, msg)
                else:
                    self.infos += 1
                    await _run_callback(worker.handle_info, msg)
            except Exception as exc:  # noqa: BLE001 - a raising callback crashes the worker
                self._crash(exc)
                return
            finally:
                self.ordered.task_done()
            if self._stopping.is_set() and not self.graceful:
                return  # stop() from this cast, or a stop request: nothing after it runs

    async def _wind_down(self) -> object:
        """Stop reading; let the calls in flight finish (a trapped stop) or cancel them; the reason to exit with."""
        self._stop_reading()
        stopper = self.stopper
        if stopper is not None and stopper is not asyncio.current_task() and not stopper.done():
            await asyncio.wait({stopper})  # stop() from a handler: its reply goes out first
        if self.graceful:
            while not self.crashed and (self.calls_in_flight or self.ordered.qsize()):
                waiting: set[asyncio.Future[Any]] = set(self.calls_in_flight)
                if self.ordered.qsize():
                    waiting.add(asyncio.ensure_future(self.ordered.join()))
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        rest = [t for t in (*self.calls_in_flight, self.ordered_task) if not t.done()]
        for task in rest:
            task.cancel()
        if rest:
            await asyncio.wait(rest)
        return self.stop_reason

    # -- timers (Worker.send_after) --

    def add_timer(self, seconds: float, msg: object) -> int:
        self._timer_ids += 1
        tid = self._timer_ids
        self._timer_handles[tid] = self.loop.call_later(max(0.0, seconds), self._fire_timer, tid, msg)
        return tid

    def cancel_timer(self, timer_id: int) -> None:
        handle = self._timer_handles.pop(timer_id, None)
        if handle is not None:
            handle.cancel()

    def _fire_timer(self, tid: int, msg: object) -> None:
        self._timer_handles.pop(tid, None)
        self.ordered.put_nowait((False, msg))

    # -- heartbeats: sent by the loop, so a blocked loop misses them --

    def _beat_soon(self) -> None:
        self.loop.call_later(self.req.heartbeat_interval, self._beat_now)

    def _beat_now(self) -> None:
        if self.exiting:
            return
        try:
            self.inbound.send(self._beat(), zmq.NOBLOCK)  # an encoded, tagged notice
        except zmq.Again:
            pass  # the node is not reading: it will see the misses itself
        self._beat_soon()

