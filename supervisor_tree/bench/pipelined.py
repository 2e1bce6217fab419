"""Workloads ``pipelined_calls`` and ``pipelined_components``: many calls in flight from one client.

Every figure beside a raw reference measured in the same run, rounds of ours and of the
reference alternating (the machine's load shifts within seconds); a raw reference forks,
so each round of ours opens its clients and closes them (their contexts too) before the
next reference round.

``pipelined_calls`` (one tree, the puppet ``p`` echoing 64 B):

1. ``call_many_x100``: `Client.call_many`, 100 calls in flight, vs raw DEALER/ROUTER with
   100 requests in flight (``dealer_router_x100_64B``).  Targets: 0.7x, 100K calls/s.
2. ``call_async_x100``: `Client.call_async`, a new Future sent as the oldest of 100 is read.
3. ``aio_call_many_x100``: `supervisor_tree.aio.Client.call_many`, 100 in flight, vs (1).
4. ``aio_call_latency`` vs ``sync_call_latency``: one call at a time, p50, the two clients.

``pipelined_components`` (queue, session, pool of 10; 64-byte payloads), each vs the same
raw DEALER/ROUTER (a request and its reply are what each operation is) with the seed's
figure as the target:

5. ``queue_put_get_pipelined``: `QueueClient.put_each` of 1,000 items then `get_each` of
   1,000, 100 in flight; items/s (each item is a put and a get).
6. ``session_ops_pipelined``: `SessionClient.each`, ops one per request (create, get,
   update, touch, delete), 100 in flight.
7. ``pool_tasks_pipelined``: `PoolClient.map("echo", ...)`, one run per task, 100 in flight.

    $ supervise bench pipelined_calls [--quick]
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from supervisor_tree.aio import Client as AioClient
from supervisor_tree.bench import raw
from supervisor_tree.bench._tree import BenchTree, tree_toml, worker_toml
from supervisor_tree.bench.harness import (
    BenchContext,
    BenchError,
    Histogram,
    Measurement,
    Trial,
    measure_latency,
    measure_throughput,
    workload,
)
from supervisor_tree.bench.measurement import Role
from supervisor_tree.client import Client
from supervisor_tree.workers.pool import PoolClient
from supervisor_tree.workers.pool_tree import pool_toml
from supervisor_tree.workers.queue import QueueClient
from supervisor_tree.workers.session import SessionClient

__all__ = ["pipelined_calls", "pipelined_components"]

PAYLOAD = 64
INFLIGHT = 100
TIMEOUT = 30.0
MIN_RATIO, MIN_RATE = 0.7, 100_000.0  # issue 9's targets for call_many
SEED = {"queue": 971_000.0, "session": 242_000.0, "pool": 149_000.0}  # the seed's figures (DESIGN.md)
_now = time.perf_counter_ns


def _alternate(ctx: BenchContext, label: str, ours: Callable[[], dict[str, Trial]],
               ref: Callable[[], Measurement]) -> tuple[dict[str, list[Trial]], list[float]]:
    """ctx.warmup rounds of ours, then ctx.repeats rounds of (reference, ours), the order flipped every other round."""
    got: dict[str, list[Trial]] = {}
    refs: list[float] = []
    with ctx.progress.task(label, total=ctx.warmup + ctx.repeats) as advance:
        for _ in range(ctx.warmup):
            ours()
            advance()
        for i in range(ctx.repeats):
            if i % 2 == 0:
                refs.append(ref().value)
            for name, trial in ours().items():
                got.setdefault(name, []).append(trial)
            if i % 2 == 1:
                refs.append(ref().value)
            advance()
    return got, refs


def _reference(ctx: BenchContext, n: int, values: list[float], rounds: str) -> Measurement:
    note = f"raw pyzmq DEALER -> ROUTER echo, {INFLIGHT} requests in flight, {n:,} per round, {PAYLOAD} B; {rounds}"
    return Measurement.from_values(f"dealer_router_x{INFLIGHT}_{PAYLOAD}B", "req/s", values, note=note,
                                   role=Role.REFERENCE)


# -- pipelined_calls ----------------------------------------------------------------------
def _call_many(client: Client, msgs: list[object]) -> Trial:
    t0 = _now()
    if client.call_many("p", msgs, window=INFLIGHT) != [m["value"] for m in msgs]:  # type: ignore[index]
        raise BenchError("call_many: the echoes are not what was sent")
    return Trial(len(msgs), (_now() - t0) / 1e9)


def _call_async(client: Client, msgs: list[object]) -> Trial:
    window: deque[Any] = deque()
    t0 = _now()
    got = 0
    for m in msgs:
        if len(window) >= INFLIGHT:
            window.popleft().result(TIMEOUT)
            got += 1
        window.append(client.call_async("p", m))
    while window:
        window.popleft().result(TIMEOUT)
        got += 1
    return Trial(got, (_now() - t0) / 1e9)


def _one_at_a_time(call: Callable[[object], object], msg: object, n: int) -> Trial:
    samples = []
    t_start = _now()
    for _ in range(n):
        t = _now()
        call(msg)
        samples.append(_now() - t)
    h = Histogram()
    h.record_many(samples)
    return Trial(n, (_now() - t_start) / 1e9, h)


async def _aio_round(run_dir: str, msgs: list[object], n_lat: int) -> dict[str, Trial]:
    async with AioClient(run_dir, timeout=TIMEOUT) as c:
        await c.call_many("p", msgs[:1000], window=INFLIGHT)  # warm: the name, the connection
        t0 = _now()
        if await c.call_many("p", msgs, window=INFLIGHT) != [m["value"] for m in msgs]:  # type: ignore[index]
            raise BenchError("aio call_many: the echoes are not what was sent")
        many = Trial(len(msgs), (_now() - t0) / 1e9)
        samples = []
        t_start = _now()
        for _ in range(n_lat):
            t = _now()
            await c.call("p", msgs[0])
            samples.append(_now() - t)
        h = Histogram()
        h.record_many(samples)
        return {"aio_many": many, "aio_one": Trial(n_lat, (_now() - t_start) / 1e9, h)}


@workload("pipelined_calls", quick=True, description="many calls in flight from one client (sync, futures, asyncio) vs raw DEALER/ROUTER")
def pipelined_calls(ctx: BenchContext) -> list[Measurement]:
    n, n_lat = ctx.count(full=50_000, quick=10_000), ctx.count(full=5_000, quick=1_000)
    body = os.urandom(PAYLOAD)
    msgs: list[object] = [{"cmd": "echo", "value": body} for _ in range(n)]
    with BenchTree(tree_toml(worker_toml("p")), base=ctx.run_dir) as tree:

        def ours() -> dict[str, Trial]:
            with Client(tree.run_dir, timeout=TIMEOUT) as c:
                c.call_many("p", msgs[:1000], window=INFLIGHT)  # warm: the name, the connection
                out = {"many": _call_many(c, msgs), "async": _call_async(c, msgs),
                       "sync_one": _one_at_a_time(lambda m: c.call("p", m), msgs[0], n_lat)}
            out.update(asyncio.run(_aio_round(str(tree.run_dir), msgs, n_lat)))
            return out

        got, refs = _alternate(ctx, f"pipelined calls x{n:,}", ours,
                               lambda: raw.raw_dealer_router(n, INFLIGHT, PAYLOAD, repeats=1, warmup=1, dir=ctx.run_dir))
    ref = _reference(ctx, n, refs, f"{ctx.repeats} rounds alternating with ours")
    what = f"{n:,} echoes of {PAYLOAD} B to one worker, {INFLIGHT} in flight"
    many = measure_throughput("call_many_x100", got["many"], unit="calls/s", target=max(MIN_RATE, MIN_RATIO * ref.value),
                              note=f"Client.call_many: {what}; target: {MIN_RATIO}x the raw reference and {MIN_RATE:,.0f}/s")
    fut = measure_throughput("call_async_x100", got["async"], unit="calls/s",
                             note=f"Client.call_async: {what} (Futures settled by the client's reader thread)")
    aio_many = measure_throughput("aio_call_many_x100", got["aio_many"], unit="calls/s",
                                  note=f"supervisor_tree.aio.Client.call_many: {what}; beside the sync call_many")
    one = f"one call at a time, {n_lat:,} per round"
    sync_lat = measure_latency("sync_call_latency", got["sync_one"], note=f"Client.call: {one}", role=Role.REFERENCE)
    aio_lat = measure_latency("aio_call_latency", got["aio_one"], note=f"supervisor_tree.aio.Client.call (asyncio's "
                                                                       f"default loop): {one}; beside the sync client")
    return [many.compared_to(ref), fut.compared_to(ref), ref, aio_many.compared_to(many), aio_lat.compared_to(sync_lat),
            sync_lat]


# -- pipelined_components -------------------------------------------------------------------
def _components_config() -> str:
    queue = 'id = "queue"\nstart = "supervisor_tree.workers.queue:Queue"\nargs = { capacity = 10000 }\n'
    sessions = 'id = "sessions"\nstart = "supervisor_tree.workers.session:Session"\n'
    preload = ("supervisor_tree.workers.queue", "supervisor_tree.workers.session", "supervisor_tree.workers.pool",
               "supervisor_tree.workers.pool_member")
    return tree_toml(queue, sessions, preload=preload) + "\n" + pool_toml(
        "pool", size=10, max_overflow=5, intensity=None, member_intensity=None, period=None,
        member_shutdown=None, manager_shutdown=None)


def _queue(c: Client, n: int, bodies: list[bytes]) -> Trial:
    q = QueueClient(c, "queue", auto_ack=True)
    t0 = _now()
    moved = 0
    while moved < n:
        k = min(1000, n - moved)
        q.put_each([(moved + i, bodies[i % len(bodies)]) for i in range(k)], window=INFLIGHT, timeout=TIMEOUT)
        got = q.get_each(k, window=INFLIGHT, timeout=TIMEOUT)
        if len(got) != k or got[0] is None or got[0][1][0] != moved:
            raise BenchError(f"queue: {k} items put, the gets answered {got[:2]!r}...")
        moved += k
    return Trial(moved, (_now() - t0) / 1e9)


def _sessions(c: Client, n: int, bodies: list[bytes]) -> Trial:
    s = SessionClient(c, "sessions")
    t0 = _now()
    done = 0
    while done < n:
        k = min(200, max(1, (n - done) // 5))
        ids = s.each([("create", {"b": bodies[i % len(bodies)], "i": i}) for i in range(k)], window=INFLIGHT)
        s.each([("get", sid) for sid in ids] + [("update", sid, {"seen": 1}) for sid in ids]
               + [("touch", sid) for sid in ids] + [("delete", sid) for sid in ids], window=INFLIGHT)
        done += 5 * k
    return Trial(done, (_now() - t0) / 1e9)


def _pool(c: Client, n: int, bodies: list[bytes]) -> Trial:
    p = PoolClient(c, "pool")
    t0 = _now()
    values = p.map("echo", [((i, bodies[i % len(bodies)]),) for i in range(n)], window=INFLIGHT)
    if len(values) != n or values[-1][0] != n - 1:
        raise BenchError("pool: the echoes are not what was sent")
    return Trial(n, (_now() - t0) / 1e9)


@workload("pipelined_components", quick=True, description="queue, session and pool through the pipelined typed clients vs raw DEALER/ROUTER")
def pipelined_components(ctx: BenchContext) -> list[Measurement]:
    n = ctx.count(full=20_000, quick=4_000)
    bodies = [os.urandom(PAYLOAD) for _ in range(100)]
    figures: list[tuple[str, Callable[[Client, int, list[bytes]], Trial], str, str, str]] = [
        ("queue_put_get_pipelined", _queue, "items/s", "queue", "QueueClient.put_each then get_each, 1,000 per step; "
                                                                "an item is a put and a get"),
        ("session_ops_pipelined", _sessions, "ops/s", "session", "SessionClient.each: create, get, update, touch, "
                                                                 "delete, one op per request"),
        ("pool_tasks_pipelined", _pool, "tasks/s", "pool", "PoolClient.map('echo'), one run per task, pool of 10"),
    ]
    with BenchTree(_components_config(), base=ctx.run_dir) as tree:

        def ours() -> dict[str, Trial]:
            with Client(tree.run_dir, timeout=TIMEOUT) as c:
                return {name: fn(c, n, bodies) for name, fn, *_ in figures}

        got, refs = _alternate(ctx, f"pipelined components x{n:,}", ours,
                               lambda: raw.raw_dealer_router(n, INFLIGHT, PAYLOAD, repeats=1, warmup=1, dir=ctx.run_dir))
    ref = _reference(ctx, n, refs, f"{ctx.repeats} rounds alternating with ours")
    out = [measure_throughput(name, got[name], unit=unit, target=SEED[seed],
                              note=f"{how}; {n:,} per round, {INFLIGHT} in flight; target: the seed's figure").compared_to(ref)
           for name, _, unit, seed, how in figures]
    return [*out, ref]
