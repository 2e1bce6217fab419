"""The worker behaviour: what users subclass (OTP's gen_server callbacks), IGNORE and NOREPLY.

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
  a call first gets the error as its reply, then the worker runs `terminate` and
  exits with reason error.
* Stop request (SIGTERM from the node): with `trap_exits` False it interrupts
  whatever runs; with True the current message finishes first and
  `handle_shutdown_request` decides.  Either way `terminate(shutdown)`.
* `stop(reason)` ends the loop after the current callback (its reply still goes out).

Owns the callbacks and the services a running worker offers them; the loop that
drives them is `incarnation.py`, reached through the `Services` protocol.
"""

from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import zmq

from supervisor_tree.spec import ExitReason

if TYPE_CHECKING:
    from supervisor_tree.client import Client

__all__ = ["Worker", "IGNORE", "NOREPLY", "MissingCallback", "Services", "is_async_worker", "ASYNC_CALLBACKS"]

ASYNC_CALLBACKS = ("init", "handle_call", "handle_cast", "handle_info", "terminate")

log = logging.getLogger("supervisor_tree.worker")


class Services(Protocol):
    """What the running incarnation offers its behaviour (implemented by incarnation._Incarnation)."""

    current: tuple[bytes, bytes] | None

    def request_stop(self, reason: object) -> None: ...
    def add_timer(self, seconds: float, msg: object) -> int: ...
    def cancel_timer(self, timer_id: int) -> None: ...
    def reply(self, token: tuple[bytes, bytes], value: object) -> None: ...
    def reply_error(self, token: tuple[bytes, bytes], exc: BaseException) -> None: ...


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


class Worker:
    """Subclass and override the callbacks.  Instantiated with no arguments: `init` takes the args.

    `id`, `generation` and `run_dir` are set before `init` runs.
    """

    trap_exits: bool = False
    idempotent_calls: ClassVar[bool | frozenset[str] | set[str]] = False
    """Calls a caller may retry: True (all), or op names; `@idempotent` marks ops too (idempotency.py)."""
    id: str = ""
    generation: int = 0
    run_dir: str = ""
    _ctx: zmq.Context[Any] | None = None
    _st_loop: Services | None = None
    _st_client: Client | None = None

    # -- callbacks --

    def init(self, *args: Any, **kwargs: Any) -> object:
        """Called with the child's `args` as keyword arguments; return IGNORE to start nothing.

        Typed `(*args: Any, **kwargs: Any)` so that a subclass declares the arguments it
        takes (`def init(self, capacity: int = 1000)`) and type checkers accept it.
        """
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
        loop.reply(token, value)

    def reply_error(self, token: tuple[bytes, bytes], exc: BaseException) -> None:
        """Answer a deferred call with an error: the caller raises CallError."""
        loop = self._st_loop
        assert loop is not None, "reply_error() is only available inside a running worker"
        loop.reply_error(token, exc)

    def reply_many(self, answers: list[tuple[tuple[bytes, bytes], bool, object]]) -> None:
        """Answer several deferred calls: (token, ok, value or the exception) each, in order; the answers
        to one caller leave in one frame (a pipelining caller reads one message, not one per answer)."""
        loop = self._st_loop
        assert loop is not None, "reply_many() is only available inside a running worker"
        many = getattr(loop, "reply_many", None)
        if many is not None:
            return many(answers)  # type: ignore[no-any-return]
        for token, ok, value in answers:  # a loop without it (asyncio's): one frame each
            if ok:
                loop.reply(token, value)
            else:
                loop.reply_error(token, value if isinstance(value, BaseException) else RuntimeError(str(value)))
        return None

    def send_after(self, seconds: float, msg: object) -> int:
        """Deliver `msg` to handle_info after `seconds` (erlang:send_after).  Returns a timer id."""
        loop = self._st_loop
        if loop is None:
            raise RuntimeError("send_after() is only available inside a running worker")
        return loop.add_timer(seconds, msg)

    def cancel_timer(self, timer_id: int) -> None:
        loop = self._st_loop
        if loop is not None:
            loop.cancel_timer(timer_id)

    @property
    def context(self) -> zmq.Context[Any]:
        """The worker process's ZeroMQ context: for sockets a component opens itself (one I/O thread)."""
        if self._ctx is None:
            raise RuntimeError("context is only available inside a running worker")
        return self._ctx

    @property
    def client(self) -> Client:
        """A `Client` of this tree, opened on first use and closed when the worker exits.

        What components use to reach other workers (`self.client.call(...)`, or a
        typed client built on it); one per worker process, used from the main thread.
        """
        if self._st_client is None:
            from supervisor_tree.client import Client

            self._st_client = Client(self.run_dir, context=self._ctx, caller=self.id)
        return self._st_client

    def call(self, worker_id: str, msg: object, timeout: float = 5.0) -> Any:
        """Call another worker of the tree by id.

        In an asyncio worker (`async def` callbacks) this returns an awaitable:
        `await self.call(...)`, and the loop serves other calls meanwhile.
        """
        aio = getattr(self._st_loop, "aio_client", None)
        if aio is not None:
            return aio().call(worker_id, msg, timeout)
        return self.client.call(worker_id, msg, timeout=timeout)

    def cast(self, worker_id: str, msg: object) -> None:
        """Cast to another worker of the tree by id (never blocks an asyncio worker's loop)."""
        aio = getattr(self._st_loop, "aio_client", None)
        if aio is not None:
            aio().cast(worker_id, msg)
            return
        self.client.cast(worker_id, msg)


def is_async_worker(target: object) -> bool:
    """A Worker subclass with at least one `async def` callback: it runs on an event loop."""
    return isinstance(target, type) and issubclass(target, Worker) and any(
        inspect.iscoroutinefunction(getattr(target, name, None)) for name in ASYNC_CALLBACKS)
