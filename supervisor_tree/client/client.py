"""Talk to a running node and its workers: calls, casts, names, the dynamic API.

Owns name resolution (worker id -> the mailbox of its running incarnation, cached
and invalidated when that incarnation dies) and the node's control requests.  The
wire format belongs to wire/; retry policies to retry.py; the exceptions to errors.py.

    >>> with Client("/tmp/supervise-0/default") as c:          # doctest: +SKIP
    ...     c.call("counter", ("add", 1))
    1

A call to a worker that is restarting waits for the new incarnation (within the
timeout).  A call whose callee dies before replying raises `CalleeExited` at once:
the client watches the callee's pidfd while it waits.  Many calls in flight:
`call_many` (this thread sends and reads, `pipeline.py`) and `call_async` (a
`concurrent.futures.Future`, settled by the client's reader thread, `inflight.py`);
neither retries.  Not thread-safe: use one Client per thread (a Future may be waited
on from any thread).

Trust: the client reads the run's key from RUN/key (only when this user owns it and
nobody else can read it: `wire.auth`), tags every frame it sends with it and acts on
no frame without it.  Control requests are JSON (`wire.requests`), never pickle.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

import zmq

from supervisor_tree.client.book import NodeBudget, RetryBook, default_caller
from supervisor_tree.client.errors import (
    CalleeBusy,
    CalleeExited,
    CalleeUnavailable,
    CallError,
    CallTimeout,
    ClientError,
    ControlRefused,
    NodeNotRunning,
    UntrustedRunDir,
)
from supervisor_tree.client.inflight import Inflight
from supervisor_tree.client.ops import ControlOps
from supervisor_tree.client.pipeline import Sender, call_many
from supervisor_tree.client.retry import call_with_retry, died_soon, is_idempotent
from supervisor_tree.client.target import Target
from supervisor_tree.spec import RetryPolicy
from supervisor_tree.wire import auth, curve, rundir
from supervisor_tree.wire.channel import Caller, PeerBusy, PeerUnavailable, Reply, encode_call
from supervisor_tree.wire.requests import decode_answer, encode_request
from supervisor_tree.wire.shapes import UNAUTHENTICATED, BadFrame

if TYPE_CHECKING:
    from supervisor_tree.profiling.remote import AllResult, ProfileResult


class Client(ControlOps):
    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        *,
        context: zmq.Context[Any] | None = None,
        timeout: float = 5.0,
        caller: str | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.retries = RetryBook(caller or default_caller())  # policies, budget, per-pair figures
        self.last_attempts = 0  # how many attempts the last call made (1 when it was not retried)
        self.timeout = timeout
        self._own_ctx = context is None
        self.ctx = context or zmq.Context()
        self._ctl: zmq.Socket[bytes] | None = None
        self._req_ids = itertools.count(1)
        self._ahead: dict[int, Any] = {}  # requests sent ahead (req id -> their answer once read, else None)
        self._resolving: dict[str, int] = {}  # worker id -> a `resolve` sent ahead (a first call's)
        self._caller: Sender | None = None
        self._inflight: Inflight | None = None  # call_async's reader thread, made on first use
        self._targets: dict[str, Target] = {}
        self._key: auth.FrameKey | None = None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        self.close()

    def close(self) -> None:
        if any(self.retries.figures.values()) and self._ctl is not None and self.node_running():
            self.retries.flush(self, wait=0.5)  # the last figures, for the node's per-pair report
        self._drop_calls()
        if self._ctl is not None:
            self._ctl.close(0)
            self._ctl = None
        if self._own_ctx:
            curve.close_gate(self.ctx)  # a tcp:// reply socket's ZAP handler: its thread would keep ctx.term() waiting
            self.ctx.term()

    def node_running(self) -> bool:
        return rundir.is_locked(self.run_dir)

    # ------------------------------------------------------------------ control

    @property
    def key(self) -> auth.FrameKey:
        """The run's key (read once from RUN/key, or the one this process inherited); raises UntrustedRunDir."""
        if self._key is None:
            held = auth.held_key(self.run_dir)
            if held is None:
                problem = rundir.check(self.run_dir)
                if problem:
                    raise UntrustedRunDir(f"run dir {self.run_dir}: {problem}")
                try:
                    held = auth.read_key(self.run_dir)
                except auth.RunKeyError as exc:
                    raise UntrustedRunDir(str(exc)) from None
            self._key = held
        return self._key

    def _reload_key(self) -> bool:
        """Read RUN/key again (the node restarted with a new one?); True when it changed."""
        try:
            fresh = auth.read_key(self.run_dir)
        except auth.RunKeyError:
            return False
        if self._key is not None and fresh.fingerprint == self._key.fingerprint:
            return False
        self._key = fresh
        self._drop_calls()  # their frames carry the old key
        return True

    def _drop_calls(self) -> None:
        """Close what calls go through: the reader thread first (it uses the context), targets, sockets."""
        if self._inflight is not None:
            self._inflight.close()
            self._inflight = None
        for t in self._targets.values():
            t.close()
        self._targets.clear()
        if self._caller is not None:
            self._caller.close()
            self._caller = None

    def control(self, op: str, _wait: float | None = None, **args: object) -> Any:
        """One control request (`args` must make JSON); the node's answer, or raises ControlRefused / CallTimeout."""
        return self._control(op, self.timeout if _wait is None else _wait, args, retry=True)

    def _send_request(self, op: str, args: dict[str, object], ahead: bool = False) -> int:
        """Send one control request without waiting for its answer (`ahead`: another's wait keeps it); its req id."""
        if self._ctl is None:
            if not self.node_running():
                raise NodeNotRunning(f"no node is running in {self.run_dir}")
            sock = self.ctx.socket(zmq.DEALER)
            sock.linger = 0
            sock.connect(rundir.endpoint(self.run_dir, "control"))
            self._ctl = sock
        req_id = next(self._req_ids)
        try:
            frame = encode_request(self.key, req_id, op, args)
        except (TypeError, ValueError) as exc:
            raise ClientError(f"control {op!r}: its arguments do not make JSON ({exc}); "
                              "send ids, numbers, strings, lists and tables (a child spec as the config writes it)") from None
        self._ctl.send(frame)
        if ahead:
            self._ahead[req_id] = None
        return req_id

    def _control(self, op: str, wait: float, args: dict[str, object], retry: bool, sent: int | None = None) -> Any:
        """`control`'s request and answer; `sent`: a request already sent ahead (`_send_request`), answered here."""
        req_id = self._send_request(op, args) if sent is None else sent
        key, deadline, ctl = self.key, time.monotonic() + wait, cast(zmq.Socket[bytes], self._ctl)
        while True:
            early = self._ahead.pop(req_id, None)
            if early is not None:
                answer = early  # read while another request waited for its own
            elif (remaining := deadline - time.monotonic()) <= 0 or not ctl.poll(int(remaining * 1000) + 1):
                if not self.node_running():
                    raise NodeNotRunning(f"the node in {self.run_dir} stopped before answering {op!r}")
                raise CallTimeout(f"the node did not answer {op!r} within {wait:g}s")
            else:
                try:
                    answer = decode_answer(key, ctl.recv())
                except BadFrame as exc:
                    if exc.kind == UNAUTHENTICATED and retry and self._reload_key():
                        return self._control(op, max(0.0, deadline - time.monotonic()), args, retry=False)
                    raise UntrustedRunDir(f"the node in {self.run_dir} answered {op!r} with a frame this client "
                                          f"cannot trust: {exc.reason}") from None
            if answer.req_id != req_id:
                if answer.req_id in self._ahead:
                    self._ahead[answer.req_id] = answer  # a request sent ahead: kept for its reader
                continue  # else a late answer to an earlier request that timed out
            if not answer.ok:
                raise ControlRefused(str(answer.value))
            return answer.value

    # ------------------------------------------------------------------ names

    def resolve(self, worker_id: str, *, after_generation: int = 0, timeout: float | None = None) -> Target:
        """The running incarnation of `worker_id` (newer than `after_generation`), waiting for it if it is restarting."""
        t = self.timeout if timeout is None else timeout
        cached = self._targets.get(worker_id)
        if cached is not None and cached.generation > after_generation and not cached.dead():
            return cached
        ahead = self._resolving.pop(worker_id, None) if after_generation == 0 else None
        try:
            info = self._control("resolve", t + 0.5, {"id": worker_id, "after_generation": after_generation, "timeout": t},
                                 retry=True, sent=ahead)
        except ControlRefused as exc:
            # control._try_resolve's refusals: "not running", "is gone", "timeout: ... not running after"
            if "not running" in str(exc) or "is gone" in str(exc):
                raise CalleeUnavailable(str(exc)) from None
            raise
        if cached is not None:
            self._let_go(cached)
        target = Target.of_answer(worker_id, info)
        if info.get("mailbox_limit"):  # a bounded mailbox under backpressure: bound our send queue to it as well
            self.caller.peer_hwm[target.mailbox] = int(info["mailbox_limit"])
        self._targets[worker_id] = target
        return target

    def _let_go(self, target: Target) -> None:
        """A dead incarnation: its pidfd, and the sockets to its endpoints (each restart has new ones)."""
        target.close()
        if self._caller is not None:
            self._caller.forget(target.mailbox)
            self._caller.forget(target.control)

    def _live_target(self, worker_id: str, deadline: float) -> Target:
        target = self._targets.get(worker_id)
        if target is not None and (target.pidfd is not None or target.host):
            return target  # the send checks its pidfd (Caller._send with alive_fd); a remote one, its connection
        after = target.generation if target is not None else 0
        return self.resolve(worker_id, after_generation=after, timeout=max(0.001, deadline - time.monotonic()))

    @property
    def caller(self) -> Caller:
        """This client's sender (one socket per peer mailbox): what typed clients send casts through."""
        return self.sender

    @property
    def sender(self) -> Sender:
        """The same Caller, typed as what pipelined calls send frames through (`pipeline.Sender`)."""
        if self._caller is None:
            self._caller = Sender(self.ctx, curve.reply_directory(self.run_dir), self.key)
        return self._caller

    # ------------------------------------------------------------------ calls and casts

    def call(self, worker_id: str, msg: object, timeout: float | None = None, retry: RetryPolicy | None = None,
             idempotent: bool | None = None) -> Any:
        """Send `msg` to the worker's handle_call and return its reply.  `retry`: how to retry a failure a new attempt may cure (retry.py); default: the
        node's effective policy for this caller and callee (the caller's `retry_calls`,
        else the callee's `retry`, else none; changed live by `supervise retry set`).
        A call is retried only when `idempotent` (default: as the worker declares its
        handlers) and while the callee's shared retry budget allows.
        """
        t = self.timeout if timeout is None else timeout
        book = self.retries
        view = book.known.get(worker_id)
        if view is None:  # a first call: its name resolved in the same round trip as its retry view is learned
            if worker_id not in self._targets and worker_id not in self._resolving:
                req: dict[str, object] = {"id": worker_id, "after_generation": 0, "timeout": t}
                self._resolving[worker_id] = self._send_request("resolve", req, ahead=True)
            view = book.view(self, worker_id)
        book.count(self, worker_id)
        policy = retry if retry is not None else view.policy
        self.last_attempts = 1
        if policy is None:
            return self._call_once(worker_id, msg, t)
        safe = is_idempotent(view.idempotent, msg) if idempotent is None else idempotent
        self.last_attempts = 0

        def attempt(left: float) -> Any:
            self.last_attempts += 1
            return self._call_once(worker_id, msg, left)

        return call_with_retry(attempt, worker_id, policy, t, idempotent=safe, budget=NodeBudget(book, self),
                               figures=book.pair(worker_id), crashed=lambda: self._crashed(worker_id))

    def _crashed(self, worker_id: str) -> bool:
        """Whether the worker that just answered with an error dies of it (its handler raised)."""
        target = self._targets.get(worker_id)
        return target is not None and died_soon(target.pidfd)

    def _call_once(self, worker_id: str, msg: object, timeout: float | None) -> Any:
        t = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + t
        caller = self.sender
        key = caller.key
        while True:
            target = self._live_target(worker_id, deadline)
            target.refuse_messages()
            if target.dead():  # not sent to an incarnation already gone: the next one takes it
                target.close()
                continue
            ref = caller.take_ref()
            try:
                caller.send_frame(target.mailbox, encode_call(key, ref, caller.reply_to, msg), target.pidfd)
            except PeerBusy:
                self._wait_room(caller, target, deadline, worker_id)
                continue
            except PeerUnavailable:
                target.close()  # its socket is gone: the incarnation died; wait for the next
                continue
            fds = (target.pidfd,) if target.pidfd is not None else ()
            try:
                got = caller.wait_reply(ref, max(0.0, deadline - time.monotonic()), extra_poll_fds=fds)
            except TimeoutError:
                raise CallTimeout(f"call to worker {worker_id!r} timed out after {t:g}s") from None
            if isinstance(got, Reply):
                if got.ok:
                    return got.value
                raise CallError(worker_id, got.value)
            self._targets.pop(worker_id, None)
            self._let_go(target)
            reason = self._last_exit(worker_id)
            raise CalleeExited(worker_id, target.pid, target.generation, reason)

    def _last_exit(self, worker_id: str) -> object:
        # The node learns of the death a moment after the caller's pidfd does.
        deadline = time.monotonic() + 1.0
        reason = None
        while time.monotonic() < deadline:
            try:
                reason = self.control("last_exit", 1.0, id=worker_id)
            except ClientError:
                return "unknown (node unreachable)"
            if reason is not None:
                return reason
            self.control("ping", 1.0)  # one round trip lets the node process the exit
        return reason or "unknown"

    def call_many(self, worker_id: str, msgs: Iterable[object], timeout: float | None = None, *, window: int = 100,
                  return_exceptions: bool = False) -> list[Any]:
        """Call the worker with each message, up to `window` in flight; the replies in order (`pipeline.call_many`:
        CalleeExited for what a dead callee owed, `timeout` per call, the first failure raised unless
        `return_exceptions`; no retries)."""
        msgs = msgs if isinstance(msgs, Sequence) else list(msgs)
        self.retries.count(self, worker_id)
        self.retries.pair(worker_id).requests += max(0, len(msgs) - 1)
        return call_many(self, worker_id, msgs, timeout=self.timeout if timeout is None else timeout, window=window,
                         return_exceptions=return_exceptions)

    def call_async(self, worker_id: str, msg: object, timeout: float | None = None) -> concurrent.futures.Future[Any]:
        """Send `msg` to the worker's handle_call now; the Future its reply settles (`inflight.call_async`:
        CalleeExited, CallTimeout, CallError as `call` raises them; no retries)."""
        self.retries.count(self, worker_id)
        if self._inflight is None:
            self._inflight = Inflight(self)
        return self._inflight.call(worker_id, msg, self.timeout if timeout is None else timeout)

    def cast(self, worker_id: str, msg: object, timeout: float | None = None) -> None:
        """Send `msg` to the worker's handle_cast; returns once the message is queued for it."""
        target = self._targets.get(worker_id)
        if target is not None and self._caller is not None:
            try:
                self._caller.send_cast_unchecked(target.mailbox, msg)
                return
            except PeerUnavailable:
                pass  # full, gone or not connected yet: the checked path below tells which
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        caller = self.caller
        while True:
            target = self._live_target(worker_id, deadline)
            target.refuse_messages()
            try:
                caller.send_cast(target.mailbox, msg, alive_fd=target.pidfd)
                return
            except PeerBusy:
                self._wait_room(caller, target, deadline, worker_id)
            except PeerUnavailable:
                target.close()

    def _wait_room(self, caller: Caller, target: Target, deadline: float, worker_id: str) -> None:
        """Backpressure: the worker is alive but its mailbox is full; wait for room within the timeout."""
        left = deadline - time.monotonic()
        if left <= 0 or not caller.wait_writable(target.mailbox, left, target.pidfd):
            if target.dead():
                target.close()
                return  # it died meanwhile: the caller's loop resolves the next incarnation
            raise CalleeBusy(f"worker {worker_id!r}'s mailbox stayed full (backpressure) past the timeout")

    def control_worker(self, worker_id: str, op: str, kwargs: dict[str, object], timeout: float = 10.0) -> Any:
        """A control operation served by the worker itself (stats, profile_start, ...)."""
        deadline = time.monotonic() + timeout
        caller = self.caller
        while True:
            target = self._live_target(worker_id, deadline)
            target.refuse_messages()
            try:
                ref = caller.send_call(target.control, (op, kwargs), alive_fd=target.pidfd)
                break
            except PeerUnavailable:
                target.close()  # that incarnation died: the next one answers (within the timeout)
            except PeerBusy:
                raise CallTimeout(f"worker {worker_id!r}'s control socket is full") from None
        fds = (target.pidfd,) if target.pidfd is not None else ()
        try:
            got = caller.wait_reply(ref, max(0.0, deadline - time.monotonic()), extra_poll_fds=fds)
        except TimeoutError:
            raise CallTimeout(f"worker {worker_id!r} did not answer control {op!r} within {timeout:g}s") from None
        if isinstance(got, Reply):
            if got.ok:
                return got.value
            raise CallError(worker_id, got.value)
        raise CalleeExited(worker_id, target.pid, target.generation, self._last_exit(worker_id))

    # ------------------------------------------------------------------ profiling

    def clone(self) -> Client:
        """A new Client of the same node, sharing this one's ZeroMQ context: one for another thread."""
        return Client(self.run_dir, context=self.ctx, timeout=self.timeout, caller=self.retries.caller)

    def profile(self, worker_id: str, **kwargs: Any) -> ProfileResult:
        """Profile a running worker, its code untouched: ``(path, profile)``; ``.stacks`` too.  ``engine="py-spy"|"yappi"``,
        ``duration``, ``rate``, ``fmt``, ``output``, ``profiles_dir``, ...: ``supervisor_tree.profiling.remote.profile``."""
        from supervisor_tree.profiling.remote import profile

        return profile(self, worker_id, **kwargs)

    def profile_all(self, **kwargs: Any) -> AllResult:
        """Every running worker at once: a file each plus a merged graph (``remote.profile_all``)."""
        from supervisor_tree.profiling.remote import profile_all

        return profile_all(self, **kwargs)


def find_run_dir(run_dir: str | None, config: str | None = None) -> Path:
    """--run-dir, else $SUPERVISE_RUN_DIR, else the config's default, else the only live node."""
    if run_dir:
        return Path(run_dir)
    env = os.environ.get("SUPERVISE_RUN_DIR")
    if env:
        return Path(env)
    if config:
        return rundir.default_run_dir(config)
    live = rundir.live_run_dirs()
    if len(live) == 1:
        return live[0]
    return rundir.default_run_dir(None)
