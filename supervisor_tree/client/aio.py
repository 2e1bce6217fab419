"""`AsyncClient`: calls and casts from asyncio code, the event loop never blocked on a socket.

    async with AsyncClient(run_dir) as c:
        replies = await asyncio.gather(*(c.call("db", ("get", k)) for k in keys))
        c.cast("log", "done")

What an asyncio worker's `await self.call(...)` and `self.cast(...)` use.  The
sends go through the same `Caller` as `Client`'s (non-blocking pushes); replies are
read when the loop sees the Caller's reply socket readable (`loop.add_reader` on its
ZeroMQ fd, drained to empty each time, as that fd is edge-triggered), and each
wakes the future of its ref, so any number of calls wait at once.  A callee that dies
fails its calls with `CalleeExited` (the loop watches each callee's pidfd).  Name
lookups go to the node through a `Client` in one helper thread (a lookup may wait for
a restart), never on the loop.  Not thread-safe: one AsyncClient per event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
from collections import deque
from pathlib import Path
from typing import Any, cast

import zmq

from supervisor_tree.client.client import Client
from supervisor_tree.client.errors import CalleeExited, CallError, CallTimeout, ClientError
from supervisor_tree.client.target import Target
from supervisor_tree.wire import curve
from supervisor_tree.wire.channel import Caller, Malformed, PeerBusy, PeerUnavailable, Reply, decode

__all__ = ["AsyncClient"]

_DEATH_GRACE_S = 0.02  # a callee's last reply may still be on its way when its pidfd says it died
_BUSY_RETRY_S = 0.001  # a full mailbox (backpressure): look again this soon


class AsyncClient:
    """See the module docstring.  `context`: share a ZeroMQ context (a worker's own)."""

    def __init__(self, run_dir: str | os.PathLike[str], *, context: zmq.Context[Any] | None = None,
                 timeout: float = 5.0) -> None:
        self.run_dir = Path(run_dir)
        self.timeout = timeout
        self._names = Client(run_dir, context=context, timeout=timeout)  # used in the helper thread only
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="supervise-names")
        self._caller: Caller | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._targets: dict[str, Target] = {}
        self._pending: dict[int, tuple[asyncio.Future[Reply], Target]] = {}
        self._watched: set[int] = set()  # pidfds the loop watches
        self._casts: dict[str, deque[object]] = {}  # casts waiting for their worker's name, in order
        self._cast_tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle --

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Deliver the casts still waiting for their worker's name (within the timeout), then `close`."""
        if self._cast_tasks:
            await asyncio.wait(set(self._cast_tasks))
        self.close()

    def close(self) -> None:
        """Close now: calls in flight are cancelled, casts not yet sent are dropped."""
        for task in self._cast_tasks:
            task.cancel()
        if self._loop is not None and self._caller is not None:
            self._loop.remove_reader(self._reply_fd)
        for target in list(self._targets.values()):
            self._drop(target)
        for fut, _ in self._pending.values():
            if not fut.done():
                fut.cancel()
        self._pending.clear()
        self._targets.clear()
        if self._caller is not None:
            self._caller.close()
            self._caller = None
        self._thread.shutdown(wait=True)
        self._names.close()

    def _caller_on_loop(self) -> Caller:
        if self._caller is None:
            self._loop = asyncio.get_running_loop()
            self._caller = Caller(self._names.ctx, curve.reply_directory(self.run_dir), self._names.key)
            self._reply_fd = int(self._caller.reply_socket.getsockopt(zmq.FD))
            self._loop.add_reader(self._reply_fd, self._on_replies)
        return self._caller

    # -- names --

    async def _target(self, worker_id: str, deadline: float) -> Target:
        target = self._targets.get(worker_id)
        if target is not None and target.pidfd is not None:
            return target
        after = target.generation if target is not None else 0
        loop = asyncio.get_running_loop()
        left = max(0.001, deadline - loop.time())
        info = await loop.run_in_executor(self._thread, lambda: self._names.control(
            "resolve", left + 0.5, id=worker_id, after_generation=after, timeout=left))
        found = Target.of_answer(worker_id, info)  # the policy rebuilt from JSON, its pidfd opened
        self._targets[worker_id] = found
        self._watch(found)
        return found

    def _drop(self, target: Target) -> None:
        """Forget an incarnation that is gone: stop watching its pidfd, close it."""
        if self._targets.get(target.worker_id) is target:
            del self._targets[target.worker_id]
        if target.pidfd is not None:
            self._unwatch(target.pidfd)
        target.close()

    # -- calls --

    async def call(self, worker_id: str, msg: object, timeout: float | None = None) -> Any:
        """Send `msg` to the worker's handle_call and await its reply (see `Client.call`)."""
        caller = self._caller_on_loop()
        loop = asyncio.get_running_loop()
        wait = self.timeout if timeout is None else timeout
        deadline = loop.time() + wait
        while True:
            try:
                target = await self._target(worker_id, deadline)
            except ClientError as exc:
                if "timeout" in str(exc) or loop.time() >= deadline:
                    raise CallTimeout(f"call to worker {worker_id!r} timed out after {wait:g}s ({exc})") from None
                raise
            target.refuse_messages()
            try:
                ref = caller.send_call(target.mailbox, msg, alive_fd=target.pidfd)
            except PeerBusy:
                if loop.time() >= deadline:
                    raise CallTimeout(f"worker {worker_id!r}'s mailbox stayed full (backpressure) past the timeout") from None
                await asyncio.sleep(_BUSY_RETRY_S)
                continue
            except PeerUnavailable:
                self._drop(target)
                continue
            fut: asyncio.Future[Reply] = loop.create_future()
            self._pending[ref] = (fut, target)
            try:
                reply = await asyncio.wait_for(fut, max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise CallTimeout(f"call to worker {worker_id!r} timed out after {wait:g}s") from None
            finally:
                self._pending.pop(ref, None)
            if reply.ok:
                return reply.value
            raise CallError(worker_id, reply.value)

    def _on_replies(self) -> None:
        caller = self._caller
        if caller is None:
            return
        sock = caller.reply_socket
        while cast(int, sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
            try:
                frame = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            reply = decode(caller.key, frame)
            if isinstance(reply, Malformed):  # no tag (never read), or not a reply
                caller.dropped.drop("an unnamed sender (PULL)", reply.kind, reply.reason)
            elif isinstance(reply, Reply):
                waiting = self._pending.get(reply.ref)
                if waiting is not None and not waiting[0].done():
                    waiting[0].set_result(reply)

    # -- casts --

    def cast(self, worker_id: str, msg: object) -> None:
        """Queue `msg` for the worker's handle_cast; never waits.  Casts to one worker keep their order."""
        caller = self._caller_on_loop()
        queued = self._casts.get(worker_id)
        target = self._targets.get(worker_id)
        if queued is None and target is not None and target.pidfd is not None:
            try:
                caller.send_cast(target.mailbox, msg, alive_fd=target.pidfd)
                return
            except (PeerBusy, PeerUnavailable):
                pass
        if queued is None:
            queued = self._casts[worker_id] = deque()
            task = asyncio.get_running_loop().create_task(self._send_casts(worker_id, queued))
            self._cast_tasks.add(task)
            task.add_done_callback(self._cast_tasks.discard)
        queued.append(msg)

    async def _send_casts(self, worker_id: str, queued: deque[object]) -> None:
        """Resolve `worker_id` (waiting for a restart), then send what queued up meanwhile, in order."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        try:
            while queued:
                target = await self._target(worker_id, deadline)
                target.refuse_messages()
                try:
                    self._caller_on_loop().send_cast(target.mailbox, queued[0], alive_fd=target.pidfd)
                    queued.popleft()
                except PeerBusy:
                    await asyncio.sleep(_BUSY_RETRY_S)
                except PeerUnavailable:
                    self._drop(target)
                if loop.time() > deadline:
                    raise CallTimeout(f"casts to {worker_id!r} not delivered within {self.timeout:g}s")
        except ClientError as exc:  # OTP drops a cast to a process that is not there; say so once
            import logging

            logging.getLogger("supervisor_tree.client").warning("dropped %d cast(s) to %r: %s", len(queued), worker_id, exc)
        finally:
            self._casts.pop(worker_id, None)

    # -- deaths --

    def _watch(self, target: Target) -> None:
        fd = target.pidfd
        if fd is None or fd in self._watched or self._loop is None:
            return
        self._watched.add(fd)
        self._loop.add_reader(fd, self._on_death, target)

    def _unwatch(self, fd: int) -> None:
        self._watched.discard(fd)
        if self._loop is not None:
            self._loop.remove_reader(fd)

    def _on_death(self, target: Target) -> None:
        fd = target.pidfd
        if fd is not None:
            self._unwatch(fd)
        if self._targets.get(target.worker_id) is target:
            del self._targets[target.worker_id]
        assert self._loop is not None
        self._loop.call_later(_DEATH_GRACE_S, self._fail_calls_of, target)

    def _fail_calls_of(self, target: Target) -> None:
        self._on_replies()
        doomed = [fut for fut, t in self._pending.values() if t is target and not fut.done()]
        if not doomed:
            target.close()
            return
        loop = asyncio.get_running_loop()

        def last_exit() -> object:
            try:
                return self._names.control("last_exit", 1.0, id=target.worker_id) or "unknown"
            except ClientError:
                return "unknown (node unreachable)"

        def fail(done: asyncio.Future[object]) -> None:
            reason = done.result() if not done.cancelled() and done.exception() is None else "unknown"
            for fut in doomed:
                if not fut.done():
                    fut.set_exception(CalleeExited(target.worker_id, target.pid, target.generation, reason))
            target.close()

        asyncio.ensure_future(loop.run_in_executor(self._thread, last_exit)).add_done_callback(fail)
