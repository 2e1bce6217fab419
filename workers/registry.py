"""The name registry: names to worker incarnations, and sending by name.

Owns the table name -> (worker id, generation, pid) in the registry worker,
and `Names`, the client side that caches lookups.  A name belongs to one
incarnation: it is dropped when that incarnation exits (the registry reads the
node's "exited" reports) and comes back when the restarted worker registers it
again, typically in its `init`.

    # tree: [[tree.children]] id = "registry", start = "supervisor_tree.workers.registry:Registry" (first, so
    # that workers registering in init find it running)
    class Db(Worker):
        def init(self):
            register_self(self, "db")                 # in init: id, generation and pid given

    names = Names(client)                             # any Client, or Names.of(worker)
    names.send("db", ("flush",))                      # a cast; the lookup is cached
    names.call("db", ("get", 1))
    names.whereis("db")                               # {"id": "db", "generation": 2, "pid": 4121}

    $ supervise call registry '{"op": "list"}'

Guarantees.  Every request first reads the node's reports that have reached the
registry, so an answer reflects the exits published before it (a few ms late at
worst; its `events_poll` timer reads them between requests).  A client's cached
name stays bound to the incarnation it was looked up for: once that incarnation
is seen dead (a send that finds its mailbox gone, or its pidfd, looked at every
256 sends and on every call) the name is looked up again, waiting up to the
send's timeout for the restarted worker to register it.  A name pointed elsewhere while its old owner lives is
seen by a client only after `Names.forget(name)` or the old owner's death.

The table lives in the registry's memory: when the registry restarts, a name
comes back when its worker registers it again.  Put the registry first under a
rest_for_one supervisor with the workers that register, so that they restart
(and register) after it.  Reports published before the registry's subscription
was made are not seen; a client never uses such a stale entry (it checks the
incarnation it resolves against the registered one).
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypedDict, cast

from supervisor_tree import NOREPLY, Worker
from supervisor_tree.client import Caller, CallError, Client, PeerUnavailable, Target
from supervisor_tree.workers._component import (
    BadRequest,
    Component,
    NodeEvents,
    Refused,
    Token,
    deadline_of,
    expect,
    reraise,
)

__all__ = ["Registry", "Names", "Registration", "register_self", "NotRegistered", "AlreadyRegistered"]


class NotRegistered(Refused):
    pass


class AlreadyRegistered(Refused):
    pass


class Registration(TypedDict):
    """What the registry answers for a name: the incarnation it is registered to."""

    id: str
    generation: int
    pid: int


_Waiter = tuple[Token, float | None, list[object] | None]  # an await_name caller: (token, deadline, stale)


class Registry(Component):
    """Names to workers.  Ops (dict or tuple form, see supervisor_tree.workers._component):

    register(name, id, generation=None, pid=None)  -> {"id", "generation", "pid"}
        generation/pid omitted: the running incarnation of `id` (never from that
        worker's own init: it is not running yet; `register_self` passes them).
    unregister(name) -> bool          whereis(name) / lookup(name) -> entry | None
    await_name(name, timeout=5.0, stale=None) -> entry, waiting for a registration;
        `stale` = [id, generation] of an entry the caller saw dead: wait for another.
    list() -> {name: id}              stats() -> counters (lookups served, ...)

    Init args: events_poll (s, default 0.05): how often exit reports are read
    between requests (every request reads them first anyway).
    """

    idempotent_calls = frozenset({"whereis", "list", "stats"})  # reads: a caller may retry them

    def init(self, events_poll: float = 0.05) -> None:
        self.names: dict[str, tuple[str, int, int]] = {}  # name -> (worker id, generation, pid)
        self.by_worker: dict[str, set[str]] = {}  # worker id -> its names
        self.waiters: dict[str, list[_Waiter]] = {}  # name -> [(token, deadline, stale)]
        self.counts = {"lookups": 0, "registers": 0, "unregisters": 0, "dropped_on_exit": 0, "awaits": 0}
        self.events = NodeEvents(self, kinds=("exited",))
        self.start_ticking(events_poll)

    def terminate(self, reason: object) -> None:
        self.events.close()

    # -- ops --

    def op_register(self, name: str, id: str, generation: int | None = None, pid: int | None = None) -> Registration:
        self._read_events()
        if not isinstance(name, str) or not name:
            raise BadRequest(f"register: name must be a non-empty string; got {name!r}")
        if generation is None or pid is None:
            generation, pid = self._running(id)
        elif not _alive(pid):
            raise NotRegistered(f"register {name!r}: worker {id!r} (pid {pid}, generation {generation}) is not alive")
        held = self.names.get(name)
        if held is not None and held[0] != id:
            raise AlreadyRegistered(f"name {name!r} is registered to worker {held[0]!r} (generation {held[1]}); unregister it first")
        if held is not None and held[1] > generation:
            raise AlreadyRegistered(f"name {name!r} is registered to a newer incarnation of {id!r} ({held[1]} > {generation})")
        self.names[name] = (id, generation, pid)
        self.by_worker.setdefault(id, set()).add(name)
        self.counts["registers"] += 1
        entry = _entry(self.names[name])
        for token, _, _stale in self.waiters.pop(name, ()):
            self.reply(token, entry)  # a stale entry cannot be the new one: it is newer or another worker's
        return entry

    def op_unregister(self, name: str) -> bool:
        held = self.names.pop(name, None)
        if held is None:
            return False
        self.by_worker.get(held[0], set()).discard(name)
        self.counts["unregisters"] += 1
        return True

    def op_whereis(self, name: str) -> Registration | None:
        self._read_events()
        self.counts["lookups"] += 1
        held = self.names.get(name)
        return None if held is None else _entry(held)

    op_lookup = op_whereis

    def op_await_name(self, name: str, timeout: float | None = 5.0, stale: list[object] | None = None) -> object:
        self._read_events()
        self.counts["lookups"] += 1
        held = self.names.get(name)
        if held is not None and (stale is None or [held[0], held[1]] != list(stale)):
            return _entry(held)
        self.counts["awaits"] += 1
        if timeout is not None and timeout <= 0:
            raise NotRegistered(f"no worker has registered the name {name!r}")
        deadline = deadline_of(timeout)
        self.waiters.setdefault(name, []).append((self.caller(), deadline, stale))
        if deadline is not None:
            self.arm_deadline(deadline)
        return NOREPLY

    def op_list(self) -> dict[str, str]:
        self._read_events()
        return {name: held[0] for name, held in self.names.items()}

    def op_stats(self) -> dict[str, int]:
        return {**self.counts, "names": len(self.names), "waiting": sum(map(len, self.waiters.values()))}

    # -- deaths --

    def tick(self, now: float) -> None:
        self._read_events()

    def _read_events(self) -> None:
        for rec in self.events.drain():
            self._drop_incarnation(rec.get("child"), rec.get("generation"))

    def _drop_incarnation(self, worker_id: object, generation: object) -> None:
        if not isinstance(worker_id, str) or not isinstance(generation, int):
            return
        names = self.by_worker.get(worker_id)
        if not names:
            return
        for name in [n for n in names if self.names[n][1] <= generation]:
            del self.names[name]
            names.discard(name)
            self.counts["dropped_on_exit"] += 1
        if not names:
            del self.by_worker[worker_id]

    def _running(self, worker_id: str) -> tuple[int, int]:
        try:
            target = self.client.resolve(worker_id, timeout=1.0)
        except Exception as exc:  # noqa: BLE001 - the node's answer says why (no such worker, not running)
            raise NotRegistered(f"cannot register for worker {worker_id!r}: {exc}") from None
        return target.generation, target.pid

    def expire(self, now: float) -> float | None:
        nxt = None
        for name, waiting in list(self.waiters.items()):
            keep = []
            for w in waiting:
                if w[1] is not None and w[1] <= now:
                    self.reply_error(w[0], NotRegistered(f"no worker registered the name {name!r} in time"))
                else:
                    keep.append(w)
                    if w[1] is not None and (nxt is None or w[1] < nxt):
                        nxt = w[1]
            if keep:
                self.waiters[name] = keep
            else:
                del self.waiters[name]
        return nxt


def _alive(pid: int) -> bool:
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    try:
        return not select.select([fd], [], [], 0)[0]  # a pidfd is readable once its process exited
    finally:
        os.close(fd)


def _entry(held: tuple[str, int, int]) -> Registration:
    return {"id": held[0], "generation": held[1], "pid": held[2]}


# ---------------------------------------------------------------------------
# Client side


def register_self(worker: Worker, name: str, registry_id: str = "registry", timeout: float = 5.0) -> Registration:
    """Register `name` for this incarnation of `worker` (safe in `init`: it passes generation and pid)."""
    try:
        msg = ("register", name, worker.id, worker.generation, os.getpid())
        answer = worker.call(registry_id, msg, timeout=timeout)
    except CallError as exc:
        reraise(exc, _ERRORS)
    return _registration(answer, "register")


def _registration(answer: object, op: str) -> Registration:
    """The registry's answer to `op`, which arrives unpickled: a dict made by `_entry`."""
    return cast(Registration, expect(answer, dict, f"registry: {op}"))


@dataclass(slots=True, eq=False)
class _Bound:
    """A name's cached incarnation (the Client's target, with its pidfd) and the sends left before a look at it."""

    target: Target
    left: int
    mailbox: str = ""

    def __post_init__(self) -> None:
        self.mailbox = self.target.mailbox


class Names:
    """Send and call by name through a Client, with lookups cached per incarnation.

    Steady state, `send(name, msg)` is one cast: the name's incarnation is cached
    (the Client's target, with its pidfd), no round trip.  Not
    thread-safe (nor is the Client).
    """

    CHECK_EVERY = 256  # sends between two looks at the cached incarnation's pidfd (a poll: ~3 µs; a batch of casts)

    def __init__(self, client: Client, registry_id: str = "registry") -> None:
        self.client = client
        self.registry_id = registry_id
        self._cache: dict[str, _Bound] = {}
        self._caller: Caller | None = None
        self.lookups = 0  # round trips to the registry this client made

    @classmethod
    def of(cls, worker: Worker, registry_id: str = "registry") -> Names:
        """The Names of a worker, over the worker's own Client."""
        return cls(worker.client, registry_id)

    def send(self, name: str, msg: object, timeout: float | None = None) -> None:
        """Cast `msg` to the worker registered as `name` (waits up to `timeout` for a registration).

        The cached incarnation's pidfd is looked at every CHECK_EVERY sends; in
        between, a send to a mailbox whose process is gone fails at once (the
        Client's sockets do not queue for an absent peer) and triggers the lookup.
        A cast to a worker that dies is lost with its mailbox, as in OTP.
        """
        entry = self._cache.get(name)
        if entry is None or entry.left <= 0:
            entry = self._fresh(name, entry, timeout)
        entry.left -= 1
        caller = self._caller
        if caller is None:
            caller = self._caller = self.client.caller  # the Client's own sockets: no second set
        try:
            caller.send_cast(entry.mailbox, msg)  # casts that follow closely leave as one frame (wire/coalesce.py)
        except PeerUnavailable:
            entry.target.close()  # the Client sees this incarnation as dead too
            caller.send_cast(self._fresh(name, entry, timeout).target.mailbox, msg)

    def call(self, name: str, msg: object, timeout: float | None = None) -> Any:
        """Call the worker registered as `name`; its errors are the Client's (CallError, CalleeExited...)."""
        entry = self._cache.get(name)
        if entry is None or entry.target.dead():
            entry = self._fresh(name, entry, timeout)
        return self.client.call(entry.target.worker_id, msg, timeout=timeout)

    def call_async(self, name: str, msg: object, timeout: float | None = None) -> Future[Any]:
        """`call` without waiting for the reply: the Client's Future (`Client.call_async`)."""
        return self.client.call_async(self._worker_of(name, timeout), msg, timeout=timeout)

    def call_many(self, name: str, msgs: Sequence[object], timeout: float | None = None, *, window: int = 100,
                  return_exceptions: bool = False) -> list[Any]:
        """Call the worker registered as `name` with each message, pipelined (`Client.call_many`)."""
        return self.client.call_many(self._worker_of(name, timeout), msgs, timeout, window=window,
                                     return_exceptions=return_exceptions)

    def _worker_of(self, name: str, timeout: float | None) -> str:
        entry = self._cache.get(name)
        if entry is None or entry.target.dead():
            entry = self._fresh(name, entry, timeout)
        return entry.target.worker_id

    def _fresh(self, name: str, entry: _Bound | None, timeout: float | None) -> _Bound:
        """The cache entry of `name`, its incarnation checked alive; looked up again if it died."""
        if entry is not None and not entry.target.dead():
            entry.left = self.CHECK_EVERY
            return entry
        fresh = _Bound(self._target(name, None if entry is None else entry.target, timeout), self.CHECK_EVERY)
        self._cache[name] = fresh
        return fresh

    def whereis(self, name: str) -> Registration | None:
        self.lookups += 1
        answer = self._registry(("whereis", name))
        return None if answer is None else _registration(answer, "whereis")

    def register(self, name: str, worker_id: str, generation: int | None = None,
                 pid: int | None = None) -> Registration:  # fmt: skip
        return _registration(self._registry(("register", name, worker_id, generation, pid)), "register")

    def unregister(self, name: str) -> bool:
        self._cache.pop(name, None)
        return expect(self._registry(("unregister", name)), bool, "registry: unregister")

    def list(self) -> dict[str, str]:
        return expect(self._registry(("list",)), dict, "registry: list")

    def stats(self) -> dict[str, int]:
        return expect(self._registry(("stats",)), dict, "registry: stats")

    def forget(self, name: str) -> None:
        """Drop the cached lookup of `name` (the next send asks the registry)."""
        self._cache.pop(name, None)

    def _target(self, name: str, dead: Target | None, timeout: float | None) -> Target:
        """Look `name` up (waiting for a registration) and resolve its incarnation."""
        t = self.client.timeout if timeout is None else timeout
        deadline = time.monotonic() + t
        stale = None if dead is None else [dead.worker_id, dead.generation]
        while True:
            left = deadline - time.monotonic()
            self.lookups += 1
            answer = self._registry(("await_name", name, max(0.0, left), stale), timeout=left + 1.0)
            entry = _registration(answer, "await_name")
            target = self.client.resolve(entry["id"], timeout=max(0.001, left))
            if target.generation == entry["generation"] and not target.dead():
                return target
            # The registered incarnation is gone; its successor has not registered yet.
            stale = [entry["id"], entry["generation"]]
            if time.monotonic() >= deadline:
                raise NotRegistered(f"name {name!r}: its worker {entry['id']!r} exited and no successor registered it in {t:g}s")

    def _registry(self, msg: tuple[object, ...], timeout: float | None = None) -> object:
        try:
            return self.client.call(self.registry_id, msg, timeout=timeout)
        except CallError as exc:
            reraise(exc, _ERRORS)


_ERRORS: dict[str, type[Exception]] = {"NotRegistered": NotRegistered, "AlreadyRegistered": AlreadyRegistered, "BadRequest": BadRequest}
