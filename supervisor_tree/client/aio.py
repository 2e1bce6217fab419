"""The asyncio `Client` (public as `supervisor_tree.aio.Client`; `AsyncClient` is the same class).

    from supervisor_tree.aio import Client

    async with Client(run_dir) as c:
        replies = await asyncio.gather(*(c.call("db", ("get", k)) for k in keys))
        values = await c.call_many("db", [("get", k) for k in keys])    # a window of 100 in flight
        c.cast("log", "done")
        await c.status()                                                 # control requests: awaitables too

The sync Client's API as awaitables: `call`, `call_many`, `call_async` (a Task), `cast`,
`resolve` and the control requests (`control`, `status`, `which_children`, ... `kill`).

What an asyncio worker's `await self.call(...)` and `self.cast(...)` use.  The
sends go through the same `Caller` as `Client`'s (non-blocking pushes); replies are
read when the loop sees the Caller's reply socket readable (`loop.add_reader` on its
ZeroMQ fd, drained to empty each time, as that fd is edge-triggered), and each
wakes the future of its ref, so any number of calls wait at once.  A callee that dies
fails its calls with `CalleeExited` (the loop watches each callee's pidfd).  Name
lookups and control requests go to the node through a sync `Client` in one helper
thread (a lookup may wait for a restart), never on the loop.  zmq.asyncio is not used:
its per-message cost (20x on one-way throughput here, DESIGN.md) is what the reader
on the raw fd avoids.  Not thread-safe: one Client per event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import pickle
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import zmq

from supervisor_tree.client.client import Client as SyncClient
from supervisor_tree.client.errors import CalleeExited, CallError, CallTimeout, ClientError
from supervisor_tree.client.pipeline import MAX_CALLS_PER_FRAME, Sender, drain_replies
from supervisor_tree.client.target import Target
from supervisor_tree.wire import curve
from supervisor_tree.wire.channel import PeerBusy, PeerUnavailable, Reply, encode_call
from supervisor_tree.wire.frames import encode_calls

__all__ = ["Client", "AsyncClient"]

_DEATH_GRACE_S = 0.02  # a callee's last reply may still be on its way when its pidfd says it died
_BUSY_RETRY_S = 0.001  # a full mailbox (backpressure): look again this soon
_NOBLOCK = int(zmq.NOBLOCK)


def _time_out(fut: asyncio.Future[Reply], worker_id: str, wait: float) -> None:
    if not fut.done():
        fut.set_exception(CallTimeout(f"call to worker {worker_id!r} timed out after {wait:g}s"))


class Client:
    """See the module docstring.  `context`: share a ZeroMQ context (a worker's own)."""

    def __init__(self, run_dir: str | os.PathLike[str], *, context: zmq.Context[Any] | None = None,
                 timeout: float = 5.0) -> None:
        self.run_dir = Path(run_dir)
        self.timeout = timeout
        self._names = SyncClient(run_dir, context=context, timeout=timeout)  # used in the helper thread only
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="supervise-names")
        self._caller: Sender | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._targets: dict[str, Target] = {}
        self._pending: dict[int, tuple[asyncio.Future[Reply], Target]] = {}
        self._watched: set[int] = set()  # pidfds the loop watches
        self._casts: dict[str, deque[object]] = {}  # casts waiting for their worker's name, in order
        self._cast_tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle --

    async def __aenter__(self) -> Client:
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

    def _caller_on_loop(self) -> Sender:
        if self._caller is None:
            self._loop = asyncio.get_running_loop()
            self._caller = Sender(self._names.ctx, curve.reply_directory(self.run_dir), self._names.key)
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
        """Forget an incarnation that is gone: stop watching its pidfd, close it.  One that still owes replies
        (its connection closed, its pidfd not readable yet: it is exiting) stays watched: its death fails them."""
        if any(t is target and not fut.done() for fut, t in self._pending.values()):
            if target.dead():
                self._on_death(target)
            elif self._targets.get(target.worker_id) is target:
                del self._targets[target.worker_id]  # the next call resolves its successor; the watch stays
            return
        if self._targets.get(target.worker_id) is target:
            del self._targets[target.worker_id]
        if target.pidfd is not None:
            self._unwatch(target.pidfd)
        target.close()

    # -- calls --

    async def call(self, worker_id: str, msg: object, timeout: float | None = None) -> Any:
        """Send `msg` to the worker's handle_call and await its reply (see the sync `Client.call`; no retries)."""
        wait = self.timeout if timeout is None else timeout
        deadline = asyncio.get_running_loop().time() + wait
        ref, fut = await self._send(worker_id, msg, deadline, wait)
        return await self._reply(worker_id, ref, fut, deadline, wait)

    def call_async(self, worker_id: str, msg: object, timeout: float | None = None) -> asyncio.Task[Any]:
        """`call` as a Task of its own: await it (or gather many) later.  Sent before it returns when the
        callee is resolved and its mailbox has room (so a `kill` after it finds the call owed); else the Task
        sends it, waiting for the callee as `call` does."""
        sent = self._send_now(worker_id, msg)
        if sent is None:
            return asyncio.ensure_future(self.call(worker_id, msg, timeout))
        wait = self.timeout if timeout is None else timeout
        deadline = asyncio.get_running_loop().time() + wait
        return asyncio.ensure_future(self._reply(worker_id, sent[0], sent[1], deadline, wait))

    async def call_many(self, worker_id: str, msgs: Iterable[object], timeout: float | None = None, *,
                        window: int = 100, return_exceptions: bool = False) -> list[Any]:
        """Each message's reply in order, up to `window` calls in flight (the sync `Client.call_many`'s rules:
        `timeout` per call, the first failure by position raised unless `return_exceptions`)."""
        loop = asyncio.get_running_loop()
        wait = self.timeout if timeout is None else timeout
        todo = list(msgs)
        results: list[Any] = [None] * len(todo)
        failed: list[int] = []
        inflight: deque[tuple[int, int, asyncio.Future[Reply], float]] = deque()

        async def settle_oldest() -> None:
            i, ref, fut, deadline = inflight.popleft()
            try:
                results[i] = await self._reply(worker_id, ref, fut, deadline, wait)
            except ClientError as exc:
                results[i] = exc
                failed.append(i)

        i = 0
        while i < len(todo):
            room = max(1, window) - len(inflight)
            if room <= 0:
                await settle_oldest()
                while inflight and inflight[0][2].done():  # answered meanwhile: room for one frame of many
                    await settle_oldest()
                continue
            deadline = loop.time() + wait
            try:
                sent = await self._send_some(worker_id, todo[i : i + min(room, MAX_CALLS_PER_FRAME)], deadline, wait)
            except ClientError as exc:
                results[i] = exc
                failed.append(i)
                i += 1
                continue
            inflight.extend((i + k, ref, fut, deadline) for k, (ref, fut) in enumerate(sent))
            i += len(sent)
        while inflight:
            await settle_oldest()
        if failed and not return_exceptions:
            raise results[min(failed)]
        return results

    async def _send_some(self, worker_id: str, msgs: list[object], deadline: float,
                         wait: float) -> list[tuple[int, asyncio.Future[Reply]]]:
        """Send the first of `msgs`, or all of them in one frame (`frames.CALLS`) when the callee is known,
        alive and its mailbox unbounded: what `call_many` has room for; (ref, Future) of each sent."""
        caller, target = self._caller_on_loop(), self._targets.get(worker_id)
        if len(msgs) > 1 and target is not None and target.command is None and not target.dead() \
                and target.mailbox not in caller.peer_hwm:
            refs = [caller.take_ref() for _ in msgs]
            try:
                caller.send_frame(target.mailbox, encode_calls(caller.key, caller.reply_to, list(zip(refs, msgs, strict=True))),
                                  target.pidfd)
            except (PeerUnavailable, ValueError, TypeError, AttributeError, pickle.PicklingError):
                pass  # busy, gone, or a message that does not pickle: the one-by-one path tells which
            else:
                loop = asyncio.get_running_loop()
                futs = [loop.create_future() for _ in refs]
                for ref, fut in zip(refs, futs, strict=True):
                    self._pending[ref] = (fut, target)
                return list(zip(refs, futs, strict=True))
        return [await self._send(worker_id, msgs[0], deadline, wait)]

    async def _send(self, worker_id: str, msg: object, deadline: float, wait: float) -> tuple[int, asyncio.Future[Reply]]:
        """Send one call (waiting for a restarting callee); its ref and the Future its reply settles."""
        self._caller_on_loop()  # before a resolve: the loop it sets is where the callee's pidfd is watched
        loop = asyncio.get_running_loop()
        while True:
            try:
                target = self._targets.get(worker_id)
                if target is None or target.pidfd is None:
                    target = await self._target(worker_id, deadline)
            except ClientError as exc:
                if "timeout" in str(exc) or loop.time() >= deadline:
                    raise CallTimeout(f"call to worker {worker_id!r} timed out after {wait:g}s ({exc})") from None
                raise
            try:
                sent = self._send_to(target, msg, loop)
            except PeerBusy:
                if loop.time() >= deadline:
                    raise CallTimeout(f"worker {worker_id!r}'s mailbox stayed full (backpressure) past the timeout") from None
                await asyncio.sleep(_BUSY_RETRY_S)
                continue
            if sent is not None:
                return sent

    def _send_now(self, worker_id: str, msg: object) -> tuple[int, asyncio.Future[Reply]] | None:
        """Send one call at once if nothing needs waiting for (a resolved, live callee with room), else None."""
        target = self._targets.get(worker_id)
        if target is None or target.pidfd is None:
            return None
        try:
            return self._send_to(target, msg, asyncio.get_running_loop())
        except PeerBusy:
            return None

    def _send_to(self, target: Target, msg: object, loop: asyncio.AbstractEventLoop) -> tuple[int, asyncio.Future[Reply]] | None:
        """Send one call to `target`: its ref and the Future its reply settles; None if the target is gone
        (dropped: the next incarnation takes the call).  Raises PeerBusy (mailbox full) and NotAWorker."""
        caller = self._caller_on_loop()
        target.refuse_messages()
        if target.dead():  # not sent to an incarnation already gone: the next one takes it
            self._drop(target)
            return None
        ref = caller.take_ref()
        try:
            caller.send_frame(target.mailbox, encode_call(caller.key, ref, caller.reply_to, msg), target.pidfd)
        except PeerUnavailable:
            self._drop(target)
            return None
        fut: asyncio.Future[Reply] = loop.create_future()
        self._pending[ref] = (fut, target)
        return ref, fut

    async def _reply(self, worker_id: str, ref: int, fut: asyncio.Future[Reply], deadline: float, wait: float) -> Any:
        try:
            if not fut.done():  # pipelined: often answered already, while the loop read other replies
                timer = asyncio.get_running_loop().call_at(deadline, _time_out, fut, worker_id, wait)
                try:
                    await fut
                finally:
                    timer.cancel()
            reply = fut.result()
        finally:
            self._pending.pop(ref, None)
        if reply.ok:
            return reply.value
        raise CallError(worker_id, reply.value)

    def _on_replies(self) -> None:
        caller = self._caller
        if caller is not None:
            drain_replies(caller.reply_socket, caller.key, caller.dropped, self._answer)

    def _answer(self, reply: Reply) -> None:
        waiting = self._pending.get(reply.ref)
        if waiting is not None and not waiting[0].done():
            waiting[0].set_result(reply)

    # -- control requests (the sync Client's, in the helper thread) --

    async def _in_thread(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn)

    async def control(self, op: str, _wait: float | None = None, **args: object) -> Any:
        """One control request (see the sync `Client.control`)."""
        return await self._in_thread(lambda: self._names.control(op, _wait, **args))

    async def resolve(self, worker_id: str, *, after_generation: int = 0, timeout: float | None = None) -> Target:
        return await self._in_thread(lambda: self._names.resolve(worker_id, after_generation=after_generation,  # type: ignore[no-any-return]
                                                                 timeout=timeout))

    async def status(self, rss: bool = True) -> dict[str, Any]:
        return await self._in_thread(lambda: self._names.status(rss))  # type: ignore[no-any-return]

    async def which_children(self, supervisor: str = "root") -> list[dict[str, Any]]:
        return await self._in_thread(lambda: self._names.which_children(supervisor))  # type: ignore[no-any-return]

    async def count_children(self, supervisor: str = "root") -> dict[str, int]:
        return await self._in_thread(lambda: self._names.count_children(supervisor))  # type: ignore[no-any-return]

    async def start_child(self, supervisor: str, spec: dict[str, object] | None = None,
                          args: dict[str, object] | None = None, timeout: float = 60.0) -> dict[str, Any]:
        return await self._in_thread(lambda: self._names.start_child(supervisor, spec, args, timeout))  # type: ignore[no-any-return]

    async def terminate_child(self, target: str | int, supervisor: str | None = None,
                              timeout: float = 120.0) -> dict[str, Any]:
        return await self._in_thread(lambda: self._names.terminate_child(target, supervisor, timeout))  # type: ignore[no-any-return]

    async def restart_child(self, child: str, supervisor: str | None = None, timeout: float = 60.0) -> dict[str, Any]:
        return await self._in_thread(lambda: self._names.restart_child(child, supervisor, timeout))  # type: ignore[no-any-return]

    async def delete_child(self, child: str, supervisor: str | None = None) -> dict[str, Any]:
        return await self._in_thread(lambda: self._names.delete_child(child, supervisor))  # type: ignore[no-any-return]

    async def kill(self, worker_id: str, sig: str = "KILL") -> dict[str, Any]:
        return await self._in_thread(lambda: self._names.kill(worker_id, sig))  # type: ignore[no-any-return]

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


AsyncClient = Client  # the name it had first
