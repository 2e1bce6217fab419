"""Workload ``async_calls``: 100 calls at once to an asyncio worker whose handler awaits 10 ms.

Owns three figures, all from one tree (two workers of the same config) in the same run:

1. ``async_100_calls_10ms`` (ours): 100 calls sent together (`AsyncClient`, gathered)
   to ``Pause``, whose ``async def handle_call`` awaits ``asyncio.sleep(0.01)``: the
   time until the 100th reply.  The calls run as concurrent tasks in the worker, so
   this is about 10 ms plus the messaging of 100 calls.
2. ``sync_100_calls_10ms`` (its reference): the same 100 calls to ``SyncPause``, the
   same handler written synchronously (``time.sleep(0.01)``): one at a time, ~1 s.
3. ``asyncio_floor_100x10ms`` (a reference): 100 ``asyncio.sleep(0.01)`` gathered in
   this process, no worker, no message: what the first figure cannot beat.

    $ supervise bench async_calls [--quick]

The ratio of 1 to 2 is what an asyncio worker buys for I/O-bound handlers.
"""

from __future__ import annotations

import asyncio
import time

from supervisor_tree.bench._tree import BenchTree, tree_toml, worker_toml
from supervisor_tree.bench.harness import BenchContext, BenchError, Better, Measurement, workload
from supervisor_tree.bench.measurement import Role
from supervisor_tree.client.aio import AsyncClient
from supervisor_tree.worker.behaviour import Worker

__all__ = ["Pause", "SyncPause", "async_calls"]

CALLS = 100
PAUSE_S = 0.010
CALL_TIMEOUT = 30.0


class Pause(Worker):
    """An asyncio worker: each call awaits PAUSE_S (a database query, an HTTP request...)."""

    async def handle_call(self, msg: object) -> object:
        await asyncio.sleep(PAUSE_S)
        return msg


class SyncPause(Worker):
    """The same handler, written synchronously: each call holds the worker for PAUSE_S."""

    def handle_call(self, msg: object) -> object:
        time.sleep(PAUSE_S)
        return msg


async def _batch(client: AsyncClient, worker: str) -> float:
    """Seconds from sending CALLS calls together to the last reply; every reply checked."""
    t0 = time.perf_counter()
    replies = await asyncio.gather(*(client.call(worker, i, timeout=CALL_TIMEOUT) for i in range(CALLS)))
    elapsed = time.perf_counter() - t0
    if replies != list(range(CALLS)):
        raise BenchError(f"{worker} answered wrongly: {replies[:5]}...")
    return elapsed


async def _floor() -> float:
    t0 = time.perf_counter()
    await asyncio.gather(*(asyncio.sleep(PAUSE_S) for _ in range(CALLS)))
    return time.perf_counter() - t0


async def _rounds(run_dir: str, rounds: int, warmup: int) -> dict[str, list[float]]:
    got: dict[str, list[float]] = {"async": [], "sync": [], "floor": []}
    async with AsyncClient(run_dir, timeout=CALL_TIMEOUT) as client:
        for i in range(warmup + rounds):
            figures = {"async": await _batch(client, "pause"), "sync": await _batch(client, "sync_pause"),
                       "floor": await _floor()}
            if i >= warmup:
                for key, seconds in figures.items():
                    got[key].append(seconds * 1000.0)
    return got


@workload("async_calls", quick=True, description="100 calls at once to an asyncio worker awaiting 10 ms, beside the sync handler")
def async_calls(ctx: BenchContext) -> list[Measurement]:
    config = tree_toml(worker_toml("pause", "supervisor_tree.bench.aio:Pause"),
                       worker_toml("sync_pause", "supervisor_tree.bench.aio:SyncPause"),
                       preload=("supervisor_tree.bench.aio",))
    with BenchTree(config, base=ctx.run_dir) as tree:
        ctx.progress.note(f"async_calls: {ctx.repeats} rounds of {CALLS} calls x {PAUSE_S * 1000:g} ms, async and sync")
        got = asyncio.run(_rounds(str(tree.run_dir), ctx.repeats, ctx.warmup))
    what = f"{CALLS} calls sent together, each handler pausing {PAUSE_S * 1000:g} ms; time to the last reply"
    sync = Measurement.from_values("sync_100_calls_10ms", "ms", got["sync"], better=Better.LOWER, role=Role.REFERENCE,
                                   note=f"{what}; def handle_call: time.sleep (one call at a time)")
    floor = Measurement.from_values("asyncio_floor_100x10ms", "ms", got["floor"], better=Better.LOWER,
                                    role=Role.REFERENCE, note=f"{CALLS} asyncio.sleep({PAUSE_S:g}) gathered in-process")
    ours = Measurement.from_values("async_100_calls_10ms", "ms", got["async"], better=Better.LOWER,
                                   note=f"{what}; async def handle_call: await asyncio.sleep; "
                                        f"the in-process floor is {floor.value:.1f} ms")
    return [ours.compared_to(sync), sync, floor]
