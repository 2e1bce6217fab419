"""Calls from an asyncio loop to workers of the tree, without blocking the loop.

Owns the network worker's side of the channel: one PULL socket for replies whose
ZeroMQ file descriptor is watched with `loop.add_reader`, one PUSH per callee
incarnation, the table of calls in flight with their deadlines, and name
resolution (a worker id to its running incarnation), which is a blocking control
round trip to the node and so runs in one helper thread with its own Client.
It never touches a TCP connection: callers hand it a callback.

    up = Upstream(loop, ctx, run_dir, timeout=5.0)
    up.call("pool", {"op": "run", "task": "supervisor_tree.workers.net.tools:echo", "args": ["hi"]},
            lambda ok, value: print(ok, value))

`on_reply(ok, value)` runs on the loop exactly once per call: ``(True, value)``
with the callee's reply, or ``(False, error)`` where error is the callee's
`RemoteError` or an `UpstreamError` (timed out, callee exited, unreachable).
Why raw file descriptors and not zmq.asyncio or a thread: measured in
docs/network.md (zmq.asyncio costs ~20x; a thread hand-off costs a wake-up per batch).

Invariants: only the loop thread touches the sockets and tables; a call is in
`_pending` from its send until its callback has run; `_deadlines` holds
(deadline, ref) in send order and in deadline order (every call of one
Upstream has the same timeout; see `_send` for calls that waited for a name).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import itertools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import zmq

from supervisor_tree.wire import auth, channel

if TYPE_CHECKING:
    from supervisor_tree.client import Client

log = logging.getLogger(__name__)

OnReply = Callable[[bool, object], None]
_SWEEP_S = 0.05  # how often deadlines are checked
_DEATH_GRACE_S = 0.02  # replies sent just before the callee died may still be in transit
_seq = itertools.count()


class UpstreamError(Exception):
    """A call that got no reply: `kind` is "timeout", "exited", "unavailable" or "overloaded"."""

    def __init__(self, kind: str, worker_id: str, detail: str) -> None:
        super().__init__(f"{worker_id}: {detail}")
        self.kind, self.worker_id, self.detail = kind, worker_id, detail


@dataclass(eq=False)
class _Target:
    """One running incarnation of a callee: its mailbox socket and a pidfd telling its death."""

    worker_id: str
    generation: int
    pid: int
    sock: zmq.Socket[bytes]
    pidfd: int | None
    refs: set[int] = field(default_factory=set)


@dataclass(eq=False)
class _Resolving:
    """Calls waiting for a name to resolve: (frame payload, callback, deadline)."""

    queued: list[tuple[object, OnReply, float]] = field(default_factory=list)


class Upstream:
    def __init__(self, loop: asyncio.AbstractEventLoop, ctx: zmq.Context[Any], run_dir: str,
                 timeout: float = 5.0) -> None:  # fmt: skip
        self.loop = loop
        self.ctx = ctx
        self.run_dir = run_dir
        self.timeout = timeout
        self._key = auth.key_for(run_dir)  # the run's key, inherited by this worker process
        self._reply_to = channel.check_endpoint(f"ipc://{run_dir}/w/n-{os.getpid()}-{next(_seq)}")
        self._pull = channel.make_socket(ctx, zmq.PULL, rcvhwm=0)
        self._pull.bind(self._reply_to)
        self._fd = self._pull.fileno()  # ZMQ_FD: readable when the socket may have messages
        self._next_ref = 1
        self._pending: dict[int, tuple[OnReply, _Target]] = {}
        self._deadlines: collections.deque[tuple[float, int]] = collections.deque()
        self._targets: dict[str, _Target] = {}
        self._last_gen: dict[str, int] = {}
        self._resolving: dict[str, _Resolving] = {}
        self._resolver = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="resolve")
        self._client: Client | None = None  # made in the resolver thread, used only there
        self.counts = collections.Counter[str]()
        loop.add_reader(self._fd, self._on_readable)
        self._sweeper = loop.call_later(_SWEEP_S, self._sweep)
        self._closed = False

    # -- calls --

    def call(self, worker_id: str, msg: object, on_reply: OnReply) -> None:
        """Send `msg` to `worker_id`'s handle_call; `on_reply` runs on the loop with the outcome."""
        target = self._targets.get(worker_id)
        if target is None:
            self._queue_for_resolve(worker_id, msg, on_reply, time.monotonic() + self.timeout)
            return
        self._send(target, msg, on_reply, time.monotonic() + self.timeout)

    @property
    def in_flight(self) -> int:
        # Read from other threads (stats): list() copies in one step under the GIL.
        return len(self._pending) + sum(len(r.queued) for r in list(self._resolving.values()))

    def _send(self, target: _Target, msg: object, on_reply: OnReply, deadline: float) -> None:
        ref = self._next_ref
        self._next_ref = ref + 1
        try:
            target.sock.send(channel.encode_call(self._key, ref, self._reply_to, msg), zmq.NOBLOCK)
        except zmq.Again:
            self.counts["overloaded"] += 1
            on_reply(False, UpstreamError("overloaded", target.worker_id, "its mailbox queue is full"))
            return
        except Exception as exc:  # noqa: BLE001 - a message that does not pickle is the caller's error
            on_reply(False, UpstreamError("unavailable", target.worker_id, f"cannot send: {exc}"))
            return
        self._pending[ref] = (on_reply, target)
        target.refs.add(ref)
        dl = self._deadlines
        # A call that waited for a name carries an earlier deadline than calls sent meanwhile:
        # keeping the deque sorted makes it expire with them, at most one timeout late.
        dl.append((deadline if not dl or dl[-1][0] <= deadline else dl[-1][0], ref))

    def _on_readable(self) -> None:
        recv, pending, decode, key = self._pull.recv, self._pending, channel.decode, self._key
        while True:
            try:
                frame = recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            reply = decode(key, frame)
            if not isinstance(reply, channel.Reply):
                self.counts["malformed_replies"] += 1  # no tag, or not a reply: only replies are sent here
                continue
            entry = pending.pop(reply.ref, None)
            if entry is None:
                self.counts["late_replies"] += 1  # timed out already
                continue
            on_reply, target = entry
            target.refs.discard(reply.ref)
            on_reply(reply.ok, reply.value)

    def _sweep(self) -> None:
        now = time.monotonic()
        dl = self._deadlines
        while dl and dl[0][0] <= now:
            _, ref = dl.popleft()
            entry = self._pending.pop(ref, None)
            if entry is not None:
                on_reply, target = entry
                target.refs.discard(ref)
                self.counts["timeouts"] += 1
                on_reply(False, UpstreamError("timeout", target.worker_id, f"no reply within {self.timeout:g} s"))
        for worker_id, waiting in list(self._resolving.items()):
            expired = [q for q in waiting.queued if q[2] <= now]
            waiting.queued = [q for q in waiting.queued if q[2] > now]  # before the callbacks: they may queue more
            for _, on_reply, _ in expired:
                self.counts["timeouts"] += 1
                on_reply(False, UpstreamError("timeout", worker_id, f"not running within {self.timeout:g} s"))
        if not self._closed:
            self._sweeper = self.loop.call_later(_SWEEP_S, self._sweep)

    # -- names and deaths --

    def _queue_for_resolve(self, worker_id: str, msg: object, on_reply: OnReply, deadline: float) -> None:
        waiting = self._resolving.get(worker_id)
        if waiting is None:
            waiting = self._resolving[worker_id] = _Resolving()
            after = self._last_gen.get(worker_id, 0)
            fut = self.loop.run_in_executor(self._resolver, self._resolve_blocking, worker_id, after)
            fut.add_done_callback(lambda f: self._resolved(worker_id, f))
        waiting.queued.append((msg, on_reply, deadline))

    def _resolve_blocking(self, worker_id: str, after: int) -> tuple[int, int, str]:
        from supervisor_tree.client import Client

        client = self._client
        if client is None:
            client = self._client = Client(self.run_dir, context=self.ctx)
        t = client.resolve(worker_id, after_generation=after, timeout=self.timeout)
        return t.pid, t.generation, t.mailbox

    def _resolved(self, worker_id: str, fut: asyncio.Future[tuple[int, int, str]]) -> None:
        waiting = self._resolving.pop(worker_id, _Resolving())
        if self._closed:
            return
        try:
            pid, generation, mailbox = fut.result()
            sock = channel.make_socket(self.ctx, zmq.PUSH, sndhwm=100_000)
            channel.connect(sock, mailbox)
        except Exception as exc:  # noqa: BLE001 - every waiting call gets told why
            self.counts["unavailable"] += 1
            log.warning("network: cannot reach worker %r: %s", worker_id, exc)
            for _, on_reply, _ in waiting.queued:
                on_reply(False, UpstreamError("unavailable", worker_id, f"cannot resolve: {exc}"))
            return
        pidfd = _open_pidfd(pid)
        target = _Target(worker_id, generation, pid, sock, pidfd)
        self._targets[worker_id] = target
        self._last_gen[worker_id] = generation
        if pidfd is None:
            self.loop.call_soon(self._on_death, target)
        else:
            self.loop.add_reader(pidfd, self._on_death, target)
        for msg, on_reply, deadline in waiting.queued:
            self._send(target, msg, on_reply, deadline)

    def _on_death(self, target: _Target) -> None:
        if self._targets.get(target.worker_id) is target:
            del self._targets[target.worker_id]  # the next call resolves the next incarnation
        if target.pidfd is not None:
            self.loop.remove_reader(target.pidfd)
            os.close(target.pidfd)
            target.pidfd = None
        self.counts["callee_exits"] += 1
        self.loop.call_later(_DEATH_GRACE_S, self._fail_orphans, target)

    def _fail_orphans(self, target: _Target) -> None:
        self._on_readable()  # take the replies that made it before the death
        for ref in list(target.refs):
            entry = self._pending.pop(ref, None)
            if entry is not None:
                entry[0](False, UpstreamError("exited", target.worker_id,
                                              f"pid {target.pid} (generation {target.generation}) exited before replying"))
        target.refs.clear()
        target.sock.close(0)

    # -- teardown --

    def close(self) -> None:
        """Fail nothing, close everything (the loop is stopping).  Loop thread only."""
        self._closed = True
        self._sweeper.cancel()
        self.loop.remove_reader(self._fd)
        for target in self._targets.values():
            if target.pidfd is not None:
                self.loop.remove_reader(target.pidfd)
                os.close(target.pidfd)
            target.sock.close(0)
        self._targets.clear()
        self._pull.close(0)
        # The resolver thread may be inside a control request: its socket closes with the worker's context.
        self._resolver.shutdown(wait=False, cancel_futures=True)


def _open_pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (ProcessLookupError, OSError):
        return None
