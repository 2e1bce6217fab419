"""`Client.call_async`'s machinery: calls answered into `concurrent.futures.Future`s by one reader thread.

Owns a reply socket of its own (a PULL bound at ``RUN/w/a-PID-N``) and the one thread
that reads it: each reply resolves the Future of its ref; a callee's death (a dup of its
pidfd, watched by the same poll) fails exactly the Futures that incarnation owed, with
`CalleeExited`; a call's deadline fails it with `CallTimeout`.  Sends stay in the
Client's thread, through the Client's own sockets (`pipeline.Sender`), so casts, calls
and async calls to one worker arrive in the order they were made.  Futures work as the
standard library's do: ``result()``, ``concurrent.futures.wait``, ``as_completed``,
callbacks (which run in the reader thread).

    fut = client.call_async("db", ("get", 7))       # sent before this returns
    fut.result(timeout=5)

Thread rules: the Client's thread inserts into `_pending` and sends; the reader alone
reads the socket and settles Futures; a ref is settled by whoever pops it first.  No
retries (a Future's failure is the call's first failure).
"""

from __future__ import annotations

import concurrent.futures
import heapq
import itertools
import logging
import os
import queue
import threading
import time
from collections import deque
from typing import Any

import zmq

from supervisor_tree.client.errors import CalleeExited, CallError, CallTimeout, ClientError
from supervisor_tree.client.pipeline import Client, drain_replies
from supervisor_tree.client.target import Target
from supervisor_tree.wire import curve
from supervisor_tree.wire.channel import (
    PeerBusy,
    PeerUnavailable,
    Reply,
    bind,
    encode_call,
    make_socket,
    unlink_ipc,
)

__all__ = ["Inflight", "failed_future"]

log = logging.getLogger("supervisor_tree.client")

_seq = itertools.count()
_DEATH_GRACE_MS = 20
_NOBLOCK, _POLLIN = int(zmq.NOBLOCK), int(zmq.POLLIN)
_Owed = tuple[concurrent.futures.Future[Any], str, int, int]  # future, worker id, pid, generation


class Inflight:
    """One Client's asynchronous calls (see the module docstring).  Made on the first `call_async`."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._key = client.key
        directory = curve.reply_directory(client.run_dir)  # RUN/w, or tcp://HOST for a tree with workers elsewhere
        at = f"{directory}:*" if curve.is_tcp(directory) else f"ipc://{directory}/a-{os.getpid()}-{next(_seq)}"
        self._pull = make_socket(client.ctx, zmq.PULL, rcvhwm=100_000)
        self.reply_to = bind(self._pull, at)
        self._refs = itertools.count(1)
        self._pending: dict[int, _Owed] = {}
        self._deadlines: deque[tuple[float, int]] = deque()  # appended by the Client's thread
        self._watch: queue.SimpleQueue[tuple[int, str, int, int]] = queue.SimpleQueue()  # (dup'd pidfd, id, pid, gen)
        self._watching: set[tuple[int, int]] = set()  # (pid, generation) handed to the reader
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._wake_at = float("inf")  # when the reader wakes next by itself
        self._closing = False
        self.discarded = 0
        self._thread = threading.Thread(target=self._run, name="supervise-replies", daemon=True)
        self._thread.start()

    # -- the Client's thread --

    def call(self, worker_id: str, msg: object, timeout: float) -> concurrent.futures.Future[Any]:
        """`Client.call_async`: returns once the call is sent (after waiting for a restarting worker,
        as `call` does); a failure to send is the Future's exception."""
        client = self._client
        deadline = time.monotonic() + timeout
        while True:
            try:
                target = client._live_target(worker_id, deadline)
                target.refuse_messages()
                if target.dead():  # not sent to an incarnation already gone: the next one takes it
                    target.close()
                    continue
                return self.submit(target, msg, max(0.0, deadline - time.monotonic()))
            except PeerBusy:
                try:
                    client._wait_room(client.sender, target, deadline, worker_id)
                except ClientError as exc:
                    return failed_future(exc)
            except PeerUnavailable:
                target.close()
            except ClientError as exc:
                return failed_future(exc)

    def submit(self, target: Target, msg: object, timeout: float) -> concurrent.futures.Future[Any]:
        """Send `msg` to `target` as a call; the Future its reply settles.  Raises what the send raises."""
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        ref = next(self._refs)
        frame = encode_call(self._key, ref, self.reply_to, msg)
        if (target.pid, target.generation) not in self._watching and target.pidfd is not None:
            self._watching.add((target.pid, target.generation))
            self._watch.put((os.dup(target.pidfd), target.worker_id, target.pid, target.generation))
            self._poke()
        deadline = time.monotonic() + timeout
        self._pending[ref] = (fut, target.worker_id, target.pid, target.generation)
        try:
            self._client.sender.send_frame(target.mailbox, frame, target.pidfd)
        except BaseException:
            self._pending.pop(ref, None)
            raise
        self._deadlines.append((deadline, ref))
        if deadline < self._wake_at:
            self._poke()
        return fut

    def _poke(self) -> None:
        os.eventfd_write(self._wake, 1)

    def close(self) -> None:
        """Stop the reader; Futures still pending fail with ClientError ("the client closed")."""
        if self._closing:
            return
        self._closing = True
        self._poke()
        self._thread.join()
        self._fail_all(ClientError("the client closed before the worker replied"))
        self._pull.close(0)
        unlink_ipc(self.reply_to)
        os.close(self._wake)

    def _fail_all(self, exc: ClientError) -> None:
        for ref in list(self._pending):
            owed = self._pending.pop(ref, None)
            if owed is not None:
                _settle(owed[0], exc, failed=True)

    # -- the reader thread --

    def _run(self) -> None:
        watched: dict[int, tuple[str, int, int]] = {}  # dup'd pidfd -> (worker id, pid, generation)
        heap: list[tuple[float, int]] = []
        pull, wake = self._pull, self._wake
        try:
            self._loop(watched, heap, pull, wake)
        except Exception as exc:  # a bug here must not leave Futures waiting forever
            log.error("the reply reader of %s stopped: %r; failing its calls in flight", self.reply_to, exc, exc_info=True)
            self._fail_all(ClientError(f"the client's reply reader stopped: {exc!r}"))
        finally:
            for fd in watched:
                os.close(fd)

    def _loop(self, watched: dict[int, tuple[str, int, int]], heap: list[tuple[float, int]],
              pull: zmq.Socket[bytes], wake: int) -> None:
        while not self._closing:
            self._wake_at = float("inf")  # a call made while this is recomputed pokes the eventfd: none is missed
            while not self._watch.empty():
                fd, worker_id, pid, gen = self._watch.get()
                watched[fd] = (worker_id, pid, gen)
            while self._deadlines:
                heapq.heappush(heap, self._deadlines.popleft())
            while heap and heap[0][1] not in self._pending:
                heapq.heappop(heap)
            self._wake_at = heap[0][0] if heap else float("inf")
            wait_ms = -1 if not heap else max(0, int((heap[0][0] - time.monotonic()) * 1000) + 1)
            items: list[tuple[Any, int]] = [(pull, _POLLIN), (wake, _POLLIN)]
            items.extend((fd, _POLLIN) for fd in watched)
            dead = []
            for sock, _ in zmq.zmq_poll(items, wait_ms):
                if sock is pull:
                    self._read()
                elif sock == wake:
                    try:
                        os.eventfd_read(wake)
                    except BlockingIOError:
                        pass
                else:
                    dead.append(sock)
            for fd in dead:
                self._died(watched.pop(fd))
                os.close(fd)
            self._expire(heap)

    def _read(self) -> None:
        other = drain_replies(self._pull, self._key, self._client.sender.dropped, self._answer)  # _answer counts too
        self.discarded += other

    def _answer(self, reply: Reply) -> None:
        owed = self._pending.pop(reply.ref, None)
        if owed is None:
            self.discarded += 1  # a late reply to a call that timed out
        elif reply.ok:
            _settle(owed[0], reply.value)
        else:
            _settle(owed[0], CallError(owed[1], reply.value), failed=True)

    def _died(self, who: tuple[str, int, int]) -> None:
        """An incarnation died: its last replies get a moment, then the Futures it owed fail."""
        worker_id, pid, gen = who
        self._watching.discard((pid, gen))
        if self._pull.poll(_DEATH_GRACE_MS, zmq.POLLIN):
            self._read()
        owed = [ref for ref, o in list(self._pending.items()) if o[2] == pid and o[3] == gen]
        if not owed:
            return
        exc = CalleeExited(worker_id, pid, gen, self._reason(worker_id))
        for ref in owed:
            o = self._pending.pop(ref, None)
            if o is not None:
                _settle(o[0], exc, failed=True)

    def _reason(self, worker_id: str) -> object:
        """How the incarnation ended, as the node recorded it (over a control socket of this thread's own)."""
        names = self._client.clone()
        try:
            return names._last_exit(worker_id)
        finally:
            names.close()

    def _expire(self, heap: list[tuple[float, int]]) -> None:
        now = time.monotonic()
        while heap and heap[0][0] <= now:
            _, ref = heapq.heappop(heap)
            owed = self._pending.pop(ref, None)
            if owed is not None:
                _settle(owed[0], CallTimeout(f"call to worker {owed[1]!r} got no reply within its timeout"), failed=True)


def _settle(fut: concurrent.futures.Future[Any], value: object, failed: bool = False) -> None:
    if fut.done():  # cancelled by its owner
        return
    try:
        if failed:
            assert isinstance(value, BaseException)
            fut.set_exception(value)
        else:
            fut.set_result(value)
    except concurrent.futures.InvalidStateError:
        pass  # cancelled in between


def failed_future(exc: BaseException) -> concurrent.futures.Future[Any]:
    """A Future that already failed with `exc` (a call that could not be sent)."""
    fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
    fut.set_exception(exc)
    return fut
