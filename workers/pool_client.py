"""The pool's typed client, and the refusals a caller of the pool can get.

Owns the tuple messages a caller sends the pool manager (workers/pool.py) and
turning the manager's refusals back into typed exceptions.  Runs in any process
with a `Client`; knows nothing of the manager's state.

    pool = PoolClient(client, "pool")
    pool.run("echo", 42)                              # 42, run on some member
    pool.run_many("mymod:score", [(x,) for x in xs])  # one round trip for the whole list
    with pool.member(timeout=1.0) as member_id:       # checkout ... checkin
        client.call(member_id, ("run", "pid"))
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from typing import Any, TypedDict, cast

from supervisor_tree.client import CallError, Client
from supervisor_tree.workers._component import BadRequest, Refused, expect, reraise
from supervisor_tree.workers._pipelined import typed_future, typed_list
from supervisor_tree.workers.pool_member import PoolTimeout, TaskFailed

__all__ = ["PoolClient", "Lease", "PoolTimeout", "MemberExited", "DEFAULT_TIMEOUT"]

DEFAULT_TIMEOUT = 5.0  # s a request may wait for a free member


class MemberExited(Refused):
    """The member running the task exited before it finished."""


class Lease(TypedDict):
    """A checked-out member: its worker id, and the ref that checks it back in."""

    member: str
    ref: int


class PoolClient:
    """The typed client: tuple messages, refusals as exceptions.

    `timeout` bounds the wait for a free member; the wire waits that long plus
    `task_timeout` for the task itself.
    """

    def __init__(self, client: Client, pool_id: str = "pool", task_timeout: float = 30.0) -> None:
        self.client = client
        self.pool_id = pool_id
        self.task_timeout = task_timeout

    def run(self, task: str, *args: Any, timeout: float = DEFAULT_TIMEOUT) -> Any:
        return self._call(("run", task, args, timeout), timeout)

    def run_async(self, task: str, *args: Any, timeout: float = DEFAULT_TIMEOUT) -> Future[Any]:
        """`run` without waiting for its answer: a Future of the task's value (or its typed error)."""
        fut = self.client.call_async(self.pool_id, ("run", task, args, timeout), timeout + self.task_timeout)
        return typed_future(fut, _ERRORS, None, "pool: run")

    def map(self, task: str, args: Sequence[tuple[Any, ...]], timeout: float = DEFAULT_TIMEOUT,
            window: int = 100) -> list[Any]:
        """One `run` per argument tuple, `window` in flight (pipelined), so the manager spreads them over its
        members as they free up; the values in order, the first failure raised.  (`run_many` is one call.)"""
        msgs = [("run", task, tuple(a), timeout) for a in args]
        results = self.client.call_many(self.pool_id, msgs, timeout + self.task_timeout, window=window,
                                        return_exceptions=True)
        return typed_list(results, _ERRORS, None, "pool: run")

    def run_many(self, task: str, args: list[Any], timeout: float = DEFAULT_TIMEOUT, chunk: int = 256) -> list[Any]:
        return expect(self._call(("run_many", task, args, timeout, chunk), timeout), list, "pool: run_many")

    def checkout(self, block: bool = True, timeout: float = DEFAULT_TIMEOUT) -> Lease:
        lease = expect(self._call(("checkout", block, timeout, os.getpid()), timeout), dict, "pool: checkout")
        return cast(Lease, lease)  # the manager's {"member": key, "ref": n}

    def checkin(self, lease: Lease) -> bool:
        return expect(self._call(("checkin", lease["ref"]), 0.0), bool, "pool: checkin")

    @contextlib.contextmanager
    def member(self, timeout: float = DEFAULT_TIMEOUT) -> Iterator[str]:
        """Check a member out for the block (poolboy:transaction); yields its worker id."""
        lease = self.checkout(timeout=timeout)
        try:
            yield lease["member"]
        finally:
            self.checkin(lease)

    def stats(self) -> dict[str, Any]:
        return expect(self._call(("stats",), 0.0), dict, "pool: stats")

    def _call(self, msg: tuple[object, ...], waits: float) -> object:
        try:
            return self.client.call(self.pool_id, msg, timeout=waits + self.task_timeout)
        except CallError as exc:
            reraise(exc, _ERRORS)


_ERRORS: dict[str, type[Exception]] = {"PoolTimeout": PoolTimeout, "MemberExited": MemberExited,
                                       "TaskFailed": TaskFailed, "BadRequest": BadRequest}
