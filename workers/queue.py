"""A bounded FIFO queue worker with acknowledgements, and its typed client.

Owns the items, who holds which unacknowledged delivery, and the producers and
consumers waiting on it.  Puts wait while the queue is full (deferred replies),
gets wait while it is empty, both within a timeout.

    # tree: [[tree.children]] id = "jobs", start = "supervisor_tree.workers.queue:Queue", args = { capacity = 1000 }
    q = QueueClient(client, "jobs")
    q.put_many(["a", "b", "c"])                  # waits while full; QueueFull after the timeout
    tag, items = q.get_many(100)                 # waits while empty; (None, []) after the timeout
    ...                                          # process the items
    q.ack(tag)                                   # or piggyback: q.get_many(100, ack=[tag])

    $ supervise call jobs '{"op": "put", "item": "x", "block": false}'
    $ supervise call jobs '{"op": "stats"}'

The guarantee, exactly:

* FIFO: items leave in the order they were put.  Items taken back (see below)
  return to the head, in their original order, ahead of newer items.
* A get that names a `consumer` (a pid; the typed client sends its own) hands
  out a delivery tag.  The delivery stays owned until `ack(tag)`.  If the
  consumer's process exits (pidfd), or `visibility_timeout` passes without an
  ack, or the consumer `reject`s it, the items go back to the head and are
  delivered again.  An acked delivery never comes back; an ack of a tag that was
  taken back answers 0 and does nothing.
* So every item put is acknowledged exactly once and processed at least once:
  a consumer that dies after processing but before its ack makes the next one
  process those items again.  Gets without a consumer (e.g. from the CLI) are
  acknowledged on delivery: at most once.
* Nothing survives the queue worker itself: it keeps items in memory, and its
  restart starts empty.
* `capacity` bounds the ready items.  Items taken back may exceed it for a while
  (never dropped); puts then wait until depth falls below capacity.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from supervisor_tree import NOREPLY
from supervisor_tree.client import CallError, Client
from supervisor_tree.workers._component import (
    BadRequest,
    Component,
    PidWatch,
    Refused,
    Token,
    deadline_of,
    expect,
    reraise,
)
from supervisor_tree.workers._pipelined import typed_future, typed_list

__all__ = ["Queue", "QueueClient", "QueueFull"]

DEFAULT_TIMEOUT = 5.0  # seconds a blocking put or get waits when the request names none


class QueueFull(Refused):
    pass


@dataclass(slots=True, eq=False)
class Getter:
    token: Token
    n: int
    consumer: int | None
    deadline: float | None
    single: bool  # get (one item) rather than get_many


@dataclass(slots=True, eq=False)
class Putter:
    token: Token
    items: Sequence[Any]
    taken: int  # how many of `items` are in the queue already
    deadline: float | None


class Queue(Component):
    """Bounded FIFO.  Ops (dict or tuple form, see supervisor_tree.workers._component):

    put(item, block=True, timeout=5.0) -> depth
    put_many(items, block=True, timeout=5.0) -> depth
        Full and block: waits, taking items as room frees (in order, behind earlier
        waiting producers); after `timeout`: QueueFull saying how many it took.
        Full and not block: QueueFull, nothing taken.
    get(block=True, timeout=5.0, consumer=None, ack=None) -> [tag, item] | null
    get_many(n=100, block=True, timeout=5.0, consumer=None, ack=None) -> [tag, items]
        Empty: waits for at least one item; after `timeout` (or not block) the empty
        answer.  `ack`: tags to acknowledge first (saves a round trip).  tag is null
        without a consumer (acknowledged on delivery).
    ack(tags) -> deliveries acked     reject(tags) -> items taken back to the head
    depth() -> int    high_water() -> int    stats() -> counters

    Init args: capacity (1000), visibility_timeout (s, 30; null: never),
    watch_interval (s, 0.05): how often consumers' deaths are looked for.
    """

    idempotent_calls = frozenset({"depth", "high_water", "stats"})  # put and get are not: a retry may move an item twice

    def init(self, capacity: int = 1000, visibility_timeout: float | None = 30.0, watch_interval: float = 0.05) -> None:
        if not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be an integer >= 1; got {capacity!r}")
        self.capacity = capacity
        self.visibility = visibility_timeout
        self.items: deque[Any] = deque()
        self.high = 0
        self.next_tag = 1
        # Invariant: a tag is in `unacked` iff it is in by_consumer[its consumer]; the
        # consumer's pid is watched while it owns a tag or waits in `getters` (and
        # until the next tick after that, so a busy consumer is not re-opened per get).
        self.unacked: dict[int, tuple[list[Any], int, float]] = {}  # tag -> (items, consumer, deadline)
        self.by_consumer: dict[int, set[int]] = {}
        self.getters: deque[Getter] = deque()
        self.putters: deque[Putter] = deque()
        self.pids = PidWatch()
        self.counts = {"put": 0, "delivered": 0, "acked": 0, "redelivered": 0, "full_refusals": 0}
        self.start_ticking(watch_interval)

    def terminate(self, reason: object) -> None:
        self.pids.close()

    def statistics(self) -> dict[str, object]:
        """Heartbeat figures (read from the heartbeat thread): what `supervise queues` ranks by."""
        return {**self.counts, "depth": len(self.items), "capacity": self.capacity, "high_water": self.high,
                "waiting_producers": len(self.putters)}

    # -- producing --

    def op_put(self, item: Any, block: bool = True, timeout: float | None = DEFAULT_TIMEOUT) -> object:
        items = self.items
        if self.putters or len(items) >= self.capacity:
            return self._put([item], block, timeout)
        items.append(item)  # room and nobody ahead: `_put`'s first case, for one item
        self.counts["put"] += 1
        if self.getters:
            self._pump()
        depth = len(items)
        if depth > self.high:
            self.high = depth
        return depth

    def op_put_many(self, items: list[Any], block: bool = True, timeout: float | None = DEFAULT_TIMEOUT) -> object:
        if not isinstance(items, (list, tuple)):
            raise BadRequest(f"put_many: items must be a list; got {type(items).__name__}")
        return self._put(items, block, timeout)

    def _put(self, items: Sequence[Any], block: bool, timeout: float | None) -> object:
        free = self.capacity - len(self.items)
        if not self.putters and len(items) <= free:
            self.items.extend(items)
            self.counts["put"] += len(items)
            self._pump()
            return len(self.items)
        if not block or timeout == 0:
            self.counts["full_refusals"] += 1
            raise QueueFull(f"queue {self.id!r} is full: {len(self.items)} of {self.capacity} items ready, "
                            f"no room for {len(items)} (block=False; retry later or block with a timeout)")
        putter = Putter(self.caller(), items, 0, deadline_of(timeout))
        self.putters.append(putter)
        if putter.deadline is not None:
            self.arm_deadline(putter.deadline)
        self._pump()
        return NOREPLY

    # -- consuming --

    def op_get(self, block: bool = True, timeout: float | None = DEFAULT_TIMEOUT, consumer: int | None = None,
               ack: Any = None) -> object:
        if consumer is None and ack is None and self.items:  # acknowledged on delivery: `_get` for one ready item
            self.counts["delivered"] += 1
            item = self.items.popleft()
            if self.putters:
                self._pump()
            return (None, item)
        return self._get(1, block, timeout, consumer, ack, single=True)

    def op_get_many(self, n: int = 100, block: bool = True, timeout: float | None = DEFAULT_TIMEOUT,
                    consumer: int | None = None, ack: Any = None) -> object:
        if not isinstance(n, int) or n < 1:
            raise BadRequest(f"get_many: n must be an integer >= 1; got {n!r}")
        return self._get(n, block, timeout, consumer, ack, single=False)

    def _get(self, n: int, block: bool, timeout: float | None, consumer: int | None, ack: Any, single: bool) -> object:
        if ack is not None:
            self.op_ack(ack)
        if consumer is not None and not self.pids.watch(consumer):
            return None if single else (None, [])  # the consumer is already gone: nobody reads this answer
        if self.items:
            value = self._deliver(n, consumer, single)
            if self.putters:
                self._pump()
            return value
        if not block or timeout == 0:
            return None if single else (None, [])
        getter = Getter(self.caller(), n, consumer, deadline_of(timeout), single)
        self.getters.append(getter)
        if getter.deadline is not None:
            self.arm_deadline(getter.deadline)
        return NOREPLY

    def _deliver(self, n: int, consumer: int | None, single: bool) -> tuple[Any, Any]:
        items = self.items
        if n >= len(items):
            batch = list(items)
            items.clear()
        else:
            popleft = items.popleft
            batch = [popleft() for _ in range(n)]
        self.counts["delivered"] += len(batch)
        tag = None
        if consumer is not None:
            tag = self.next_tag
            self.next_tag = tag + 1
            deadline = time.monotonic() + self.visibility if self.visibility is not None else float("inf")
            self.unacked[tag] = (batch, consumer, deadline)
            owned = self.by_consumer.get(consumer)
            if owned is None:
                owned = self.by_consumer[consumer] = set()
            owned.add(tag)
        return (tag, batch[0]) if single else (tag, batch)

    def op_ack(self, tags: Any) -> int:
        done = 0
        for tag in (tags,) if isinstance(tags, int) else tags:
            entry = self.unacked.pop(tag, None)
            if entry is None:
                continue
            done += 1
            self.counts["acked"] += len(entry[0])
            owned = self.by_consumer[entry[1]]
            owned.discard(tag)
            if not owned:
                del self.by_consumer[entry[1]]  # its pid stays watched until a tick finds it idle
        return done

    def op_reject(self, tags: Any) -> int:
        return self._take_back([tags] if isinstance(tags, int) else list(tags))

    def op_depth(self) -> int:
        return len(self.items)

    def op_high_water(self) -> int:
        return self.high

    def op_stats(self) -> dict[str, Any]:
        return {**self.counts, "depth": len(self.items), "capacity": self.capacity, "high_water": self.high,
                "unacked_deliveries": len(self.unacked), "unacked_items": sum(len(e[0]) for e in self.unacked.values()),
                "waiting_producers": len(self.putters), "waiting_consumers": len(self.getters),
                "consumers": len(self.by_consumer)}

    # -- moving items between waiters --

    def _pump(self) -> None:
        """Serve waiting consumers while there are items and waiting producers while there is room."""
        items, getters, putters = self.items, self.getters, self.putters
        while True:
            while getters and items:
                g = getters.popleft()
                self.reply(g.token, self._deliver(g.n, g.consumer, g.single))
            free = self.capacity - len(items)
            if not putters or free <= 0:
                break
            p = putters[0]
            take = p.items[p.taken:p.taken + free]
            items.extend(take)
            p.taken += len(take)
            self.counts["put"] += len(take)
            if p.taken == len(p.items):
                putters.popleft()
                self.reply(p.token, len(items))
        if len(items) > self.high:
            self.high = len(items)

    def _take_back(self, tags: list[int]) -> int:
        """Return these deliveries' items to the head, in delivery order; the number of items."""
        back: list[Any] = []
        for tag in sorted(tags):
            entry = self.unacked.pop(tag, None)
            if entry is None:
                continue
            back.extend(entry[0])
            owned = self.by_consumer.get(entry[1])
            if owned is not None:
                owned.discard(tag)
                if not owned:
                    del self.by_consumer[entry[1]]
        if back:
            self.items.extendleft(reversed(back))
            self.counts["redelivered"] += len(back)
            self._pump()
        return len(back)

    # -- time --

    def tick(self, now: float) -> None:
        for pid in self.pids.dead():
            self.getters = deque(g for g in self.getters if g.consumer != pid)  # their answers would go nowhere
            self._take_back(list(self.by_consumer.get(pid, ())))
            self.pids.unwatch(pid)
        waiting = {g.consumer for g in self.getters}
        for pid in [p for p in self.pids.watched() if p not in self.by_consumer and p not in waiting]:
            self.pids.unwatch(pid)  # idle consumers: a pidfd each is not free
        if self.visibility is not None and self.unacked:
            expired = []
            for tag, entry in self.unacked.items():  # delivery order = deadline order
                if entry[2] > now:
                    break
                expired.append(tag)
            if expired:
                self._take_back(expired)

    def expire(self, now: float) -> float | None:
        nxt = None
        gone_getters = [g for g in self.getters if g.deadline is not None and g.deadline <= now]
        gone_putters = [p for p in self.putters if p.deadline is not None and p.deadline <= now]
        if gone_getters:
            self.getters = deque(g for g in self.getters if g not in gone_getters)
        if gone_putters:
            self.putters = deque(p for p in self.putters if p not in gone_putters)
        waiting: list[Getter | Putter] = [*self.getters, *self.putters]
        for w in waiting:
            if w.deadline is not None and (nxt is None or w.deadline < nxt):
                nxt = w.deadline
        for g in gone_getters:
            self.reply(g.token, None if g.single else (None, []))
        for p in gone_putters:
            self.counts["full_refusals"] += 1
            self.reply_error(p.token, QueueFull(
                f"queue {self.id!r} stayed full: took {p.taken} of {len(p.items)} items before the timeout"))
        return nxt


# ---------------------------------------------------------------------------
# Client side


class QueueClient:
    """The typed client: tuple messages, this process's pid as the consumer, errors as exceptions.

    Blocking calls wait on the queue for `timeout` and on the wire a little longer,
    so that the queue, not the wire, decides a timeout (an answer nobody reads
    would hold items until the visibility timeout).
    """

    WIRE_MARGIN = 2.0

    def __init__(self, client: Client, queue_id: str = "queue", auto_ack: bool = False) -> None:
        self.client = client
        self.queue_id = queue_id
        self.consumer = None if auto_ack else os.getpid()

    def put(self, item: Any, block: bool = True, timeout: float = DEFAULT_TIMEOUT) -> int:
        return expect(self._call(("put", item, block, timeout), timeout), int, "queue: put")

    def put_many(self, items: list[Any], block: bool = True, timeout: float = DEFAULT_TIMEOUT) -> int:
        return expect(self._call(("put_many", items, block, timeout), timeout), int, "queue: put_many")

    def put_async(self, item: Any, block: bool = True, timeout: float = DEFAULT_TIMEOUT) -> Future[int]:
        """`put` without waiting for its answer: a Future of the depth (or QueueFull)."""
        return typed_future(self.client.call_async(self.queue_id, ("put", item, block, timeout), self._wire(timeout)),
                            _ERRORS, int, "queue: put")

    def put_each(self, items: Sequence[Any], block: bool = True, timeout: float = DEFAULT_TIMEOUT,
                 window: int = 100) -> list[int]:
        """One `put` per item, `window` of them in flight (pipelined): each item is its own request, as with
        `put`, without a round trip each.  The depths; the first refusal (QueueFull) is raised."""
        msgs = [("put", item, block, timeout) for item in items]
        return typed_list(self.client.call_many(self.queue_id, msgs, self._wire(timeout), window=window,
                                                return_exceptions=True), _ERRORS, int, "queue: put")

    def get(self, block: bool = True, timeout: float = DEFAULT_TIMEOUT, ack: Any = None) -> tuple[int | None, Any] | None:
        delivery = self._call(("get", block, timeout, self.consumer, ack), timeout)
        return None if delivery is None else expect(delivery, tuple, "queue: get")

    def get_many(self, n: int = 100, block: bool = True, timeout: float = DEFAULT_TIMEOUT,
                 ack: Any = None) -> tuple[int | None, list[Any]]:
        delivery = self._call(("get_many", n, block, timeout, self.consumer, ack), timeout)
        return expect(delivery, tuple, "queue: get_many")

    def get_async(self, block: bool = True, timeout: float = DEFAULT_TIMEOUT, ack: Any = None) -> Future[Any]:
        """`get` without waiting for its answer: a Future of the delivery ((tag, item), or None)."""
        msg = ("get", block, timeout, self.consumer, ack)
        return typed_future(self.client.call_async(self.queue_id, msg, self._wire(timeout)), _ERRORS, None, "queue: get")

    def get_each(self, n: int, block: bool = True, timeout: float = DEFAULT_TIMEOUT, window: int = 100) -> list[Any]:
        """`n` `get`s, `window` in flight (pipelined): each delivery ((tag, item), or None when none came in time)."""
        msgs = [("get", block, timeout, self.consumer, None)] * n
        return typed_list(self.client.call_many(self.queue_id, msgs, self._wire(timeout), window=window,
                                                return_exceptions=True), _ERRORS, None, "queue: get")

    def ack(self, tags: int | list[int]) -> int:
        return expect(self._call(("ack", tags), 0.0), int, "queue: ack")

    def reject(self, tags: int | list[int]) -> int:
        return expect(self._call(("reject", tags), 0.0), int, "queue: reject")

    def depth(self) -> int:
        return expect(self._call(("depth",), 0.0), int, "queue: depth")

    def high_water(self) -> int:
        return expect(self._call(("high_water",), 0.0), int, "queue: high_water")

    def stats(self) -> dict[str, Any]:
        return expect(self._call(("stats",), 0.0), dict, "queue: stats")

    def _wire(self, waits: float) -> float:
        return max(self.client.timeout, waits + self.WIRE_MARGIN)

    def _call(self, msg: tuple[object, ...], waits: float | None) -> object:
        wire = None if waits is None else self._wire(waits)
        try:
            return self.client.call(self.queue_id, msg, timeout=wire)
        except CallError as exc:
            reraise(exc, _ERRORS)


_ERRORS: dict[str, type[Exception]] = {"QueueFull": QueueFull, "BadRequest": BadRequest}
