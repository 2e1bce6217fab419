"""The seed's `core_ops_100k`: registry, queue, pool and session operations through a real node.

Owns starting a node with the built-in components (plus the Sink and Producer
workers below), driving each component from this process as a user's program
would, and the raw pyzmq references for the same message sizes, measured first
in the same run (they fork: this process holds no ZeroMQ context until they end).

    python -m supervisor_tree.bench core_ops_100k [--quick]

Figures (names say what is batched; 64-byte payloads as in the references):

* registry_send_by_name: Names.send(name, (i, payload)), one cast per message;
  counted when the target's count, read by a call after the last send, says so.
  The API is unbatched; the channel coalesces the casts that queue up (wire/coalesce.py).
  `_batch100`: one cast carries a list of 100 messages.
* queue_items_batch100: a Producer worker put_many's 100 items per call into the
  queue (capacity 1000); this process get_many's 100 per call, acking the
  previous batch in the same call.  An item counts when this process has read it.
  `queue_items_batch1000`: 1000 per call each side (capacity 10,000);
  `queue_items_per_call`: put and get one item per call.
* pool_tasks_batch100: PoolClient.run_many("echo", 100 tasks) on a pool of 10;
  `pool_tasks_per_call`: PoolClient.run, one task per call.
* session_ops_batch100: one `batch` call of 100 ops (20 each of create, get,
  update, touch, delete); `session_ops_per_call`: one op per call.

Batched figures are compared with push_pull_batch100_64B (items moved one way in
pickled lists of 100), one-per-message casts with push_pull_64B, per-call figures
with push_pull_roundtrip_64B (the project's call pattern, one at a time).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from supervisor_tree import Worker
from supervisor_tree.bench.harness import (
    BenchContext,
    BenchError,
    Measurement,
    Trial,
    measure_throughput,
    workload,
)
from supervisor_tree.bench.raw import raw_push_pull, raw_push_pull_roundtrip
from supervisor_tree.workers.pool_tree import pool_toml

__all__ = ["Sink", "Producer", "core_ops"]

PAYLOAD = 64
BATCH = 100
TARGETS = {"registry": 553_000.0, "queue": 971_000.0, "pool": 149_000.0, "session": 242_000.0}  # the seed's figures
_now = time.perf_counter_ns


# ---------------------------------------------------------------------------
# Workers the benchmark's tree runs


class Sink(Worker):
    """Counts the messages it is cast (a list counts as its length); registers `name` in init."""

    def init(self, name: str | None = None) -> None:
        self.n = 0
        if name:
            from supervisor_tree.workers.registry import register_self

            register_self(self, name)

    def handle_cast(self, msg: object) -> None:
        self.n += len(msg) if type(msg) is list else 1

    def handle_call(self, msg: object) -> object:
        if msg == "reset":
            self.n = 0
        return self.n


class Producer(Worker):
    """On a cast ("produce", queue, n, batch): puts n items (i, payload), `batch` per call (1: put)."""

    def handle_cast(self, msg: Any) -> None:
        from supervisor_tree.workers.queue import QueueClient

        _, queue_id, n, batch = msg
        q = QueueClient(self.client, queue_id)
        bodies = [os.urandom(PAYLOAD) for _ in range(batch)]
        if batch == 1:
            body = bodies[0]
            for i in range(n):
                q.put((i, body), timeout=30.0)
            return
        for start in range(0, n, batch):
            q.put_many([(start + k, b) for k, b in enumerate(bodies[: min(batch, n - start)])], timeout=30.0)


CONFIG = """[node]
name = "core-ops"
preload = ["supervisor_tree.workers.registry", "supervisor_tree.workers.queue", "supervisor_tree.workers.session", "supervisor_tree.workers.pool", "supervisor_tree.workers.pool_member",
           "supervisor_tree.bench.core_ops"]

[tree]
strategy = "one_for_one"
intensity = 5
period = 10

[[tree.children]]
id = "registry"
start = "supervisor_tree.workers.registry:Registry"

[[tree.children]]
id = "sink"
start = "supervisor_tree.bench.core_ops:Sink"
args = { name = "sink" }

[[tree.children]]
id = "queue"
start = "supervisor_tree.workers.queue:Queue"
args = { capacity = 1000 }

[[tree.children]]
id = "queue_big"
start = "supervisor_tree.workers.queue:Queue"
args = { capacity = 10000 }

[[tree.children]]
id = "producer"
start = "supervisor_tree.bench.core_ops:Producer"

[[tree.children]]
id = "sessions"
start = "supervisor_tree.workers.session:Session"

""" + pool_toml(
    "pool", size=10, max_overflow=5, intensity=None, member_intensity=None, period=None,
    member_shutdown=None, manager_shutdown=None,
)


class _Node:
    """A node started with the CLI (`supervise start --detach`) in a short private run dir."""

    def __init__(self, scratch: Path) -> None:
        self.config = scratch / "core_ops.toml"
        self.config.write_text(CONFIG)
        self.run_dir = Path(tempfile.mkdtemp(prefix="st-ops-", dir="/tmp"))

    def _cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "supervisor_tree.cli", *args, "--run-dir", str(self.run_dir)]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    def __enter__(self) -> _Node:
        started = self._cli("start", str(self.config), "--detach")
        if started.returncode != 0:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            raise BenchError(f"the benchmark tree did not start: {started.stderr.strip()[-500:]}")
        return self

    def __exit__(self, *exc: object) -> None:
        self._cli("stop")
        shutil.rmtree(self.run_dir, ignore_errors=True)


# ---------------------------------------------------------------------------
# The workload


@workload("core_ops_100k", quick=True, description="registry, queue, pool, session ops through a real node")
def core_ops(ctx: BenchContext) -> list[Measurement]:
    n = ctx.count(full=100_000, quick=10_000)
    per_call = ctx.count(full=10_000, quick=1_000)
    kw: dict[str, Any] = {"repeats": ctx.repeats, "warmup": ctx.warmup, "progress": ctx.progress, "dir": ctx.run_dir}
    refs = {
        "one": raw_push_pull(n, PAYLOAD, **kw),
        "batch": raw_push_pull(n, PAYLOAD, batch=BATCH, **kw),
        "rt": raw_push_pull_roundtrip(per_call, PAYLOAD, **kw),
    }
    from supervisor_tree.client import Client

    out: list[Measurement] = []
    with _Node(ctx.run_dir) as node, Client(node.run_dir, timeout=30.0) as client:
        for name, fn, count, unit, ref, component in _figures(n, per_call):
            trials = ctx.repeat(lambda: fn(client, count), f"core_ops {name}")  # noqa: B023 - called within the iteration
            m = measure_throughput(name, trials, unit=unit, target=TARGETS[component],
                                   note=f"{count:,} ops per repeat; {fn.__doc__}")
            out.append(m.compared_to(refs[ref]))
    return out


Figure = tuple[str, Callable[[Any, int], Trial], int, str, str, str]


def _figures(n: int, per_call: int) -> list[Figure]:
    return [
        ("registry_send_by_name", registry_send, n, "msg/s", "one", "registry"),
        ("registry_send_by_name_batch100", registry_send_batch, n, "msg/s", "batch", "registry"),
        ("queue_items_batch100", queue_batch, n, "items/s", "batch", "queue"),
        ("queue_items_batch1000", queue_batch1000, n, "items/s", "batch", "queue"),
        ("queue_items_per_call", queue_per_call, per_call, "items/s", "rt", "queue"),
        ("pool_tasks_batch100", pool_batch, n, "tasks/s", "batch", "pool"),
        ("pool_tasks_per_call", pool_per_call, per_call, "tasks/s", "rt", "pool"),
        ("session_ops_batch100", session_batch, n, "ops/s", "batch", "session"),
        ("session_ops_per_call", session_per_call, per_call, "ops/s", "rt", "session"),
    ]


def _bodies() -> list[bytes]:
    return [os.urandom(PAYLOAD) for _ in range(BATCH)]


def registry_send(client: Any, n: int) -> Trial:
    """casts by name, one message each"""
    from supervisor_tree.workers.registry import Names

    names = Names(client)
    names.send("sink", "warm")  # the one lookup; then every send hits the cache
    client.call("sink", "reset")
    body = os.urandom(PAYLOAD)
    send = names.send
    t0 = _now()
    for i in range(n):
        send("sink", (i, body))
    got = client.call("sink", "count")
    elapsed = _now() - t0
    _check("registry_send_by_name", got, n)
    return Trial(n, elapsed / 1e9)


def registry_send_batch(client: Any, n: int) -> Trial:
    """casts by name, a list of 100 messages each"""
    from supervisor_tree.workers.registry import Names

    names = Names(client)
    names.send("sink", [])
    client.call("sink", "reset")
    bodies = _bodies()
    t0 = _now()
    for start in range(0, n, BATCH):
        names.send("sink", [(start + k, b) for k, b in enumerate(bodies[: min(BATCH, n - start)])])
    got = client.call("sink", "count")
    elapsed = _now() - t0
    _check("registry_send_by_name_batch100", got, n)
    return Trial(n, elapsed / 1e9)


def _consume(client: Any, n: int, batch: int, queue: str = "queue") -> Trial:
    from supervisor_tree.workers.queue import QueueClient

    q = QueueClient(client, queue)
    t0 = _now()
    client.cast("producer", ("produce", queue, n, batch))
    got, tag = 0, None
    while got < n:
        if batch == 1:
            delivery = q.get(timeout=30.0, ack=tag)
            if delivery is None:
                raise BenchError(f"queue: no item within 30 s after {got} of {n}")
            tag = delivery[0]
            got += 1
        else:
            tag, items = q.get_many(batch, timeout=30.0, ack=tag)
            if not items:
                raise BenchError(f"queue: no item within 30 s after {got} of {n}")
            got += len(items)
    elapsed = _now() - t0
    if tag is not None:
        q.ack(tag)
    _check("queue", got, n)
    return Trial(got, elapsed / 1e9)


def queue_batch(client: Any, n: int) -> Trial:
    """a Producer worker put_many(100) -> queue -> get_many(100) here, acks piggybacked"""
    return _consume(client, n, BATCH)


def queue_batch1000(client: Any, n: int) -> Trial:
    """as batch100 with 1000 items per call each side, capacity 10,000"""
    return _consume(client, n, 1000, "queue_big")


def queue_per_call(client: Any, n: int) -> Trial:
    """a Producer worker put -> queue -> get here, one item per call each side"""
    return _consume(client, n, 1)


def pool_batch(client: Any, n: int) -> Trial:
    """run_many('echo', 100 tasks) per call, pool size 10"""
    from supervisor_tree.workers.pool import PoolClient

    pool = PoolClient(client, "pool")
    bodies = _bodies()
    t0 = _now()
    done = 0
    for start in range(0, n, BATCH):
        args = [((start + k, b),) for k, b in enumerate(bodies[: min(BATCH, n - start)])]
        done += len(pool.run_many("echo", args))
    elapsed = _now() - t0
    _check("pool_tasks_batch100", done, n)
    return Trial(done, elapsed / 1e9)


def pool_per_call(client: Any, n: int) -> Trial:
    """run('echo', task) per call, pool size 10"""
    from supervisor_tree.workers.pool import PoolClient

    pool = PoolClient(client, "pool")
    body = os.urandom(PAYLOAD)
    t0 = _now()
    for i in range(n):
        pool.run("echo", (i, body))
    return Trial(n, (_now() - t0) / 1e9)


def _session_ops(ids: list[str], body: bytes, i: int) -> list[tuple[Any, ...]]:
    k = BATCH // 5
    ops: list[tuple[Any, ...]] = [("create", {"b": body, "i": i + j}) for j in range(k)]
    if ids:
        ops += [("get", s) for s in ids] + [("update", s, {"seen": i}) for s in ids]
        ops += [("touch", s) for s in ids] + [("delete", s) for s in ids]
    return ops


def session_batch(client: Any, n: int) -> Trial:
    """batch(100 ops: 20 create, get, update, touch, delete) per call"""
    from supervisor_tree.workers.session import SessionClient

    s = SessionClient(client, "sessions")
    body = os.urandom(PAYLOAD)
    ids: list[str] = []
    done = 0
    t0 = _now()
    while done < n:
        ops = _session_ops(ids, body, done)
        results = s.batch(ops)
        ids = results[: BATCH // 5]
        done += len(ops)
    elapsed = _now() - t0
    for sid in ids:
        s.delete(sid)
    return Trial(done, elapsed / 1e9)


def session_per_call(client: Any, n: int) -> Trial:
    """one op per call, the same mix"""
    from supervisor_tree.workers.session import SessionClient

    s = SessionClient(client, "sessions")
    body = os.urandom(PAYLOAD)
    done = 0
    t0 = _now()
    while done < n:
        sid = s.create({"b": body, "i": done})
        s.get(sid)
        s.update(sid, {"seen": done})
        s.touch(sid)
        s.delete(sid)
        done += 5
    return Trial(done, (_now() - t0) / 1e9)


def _check(what: str, got: object, n: int) -> None:
    if got != n:
        raise BenchError(f"{what}: {got} of {n} operations arrived")
