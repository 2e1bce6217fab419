"""Workloads ``observe`` and ``observe_crash_loop``: what watching a tree costs it, and whether it answers in trouble.

``observe``: a tree of 200 idle puppet workers (each beating every 0.5 s), its node
serving ``[metrics] port``.  In alternating windows of the same run the node's CPU
(psutil, user + system, % of one core) is measured

1. ``observe_node_cpu_idle``: nobody watching (the reference);
2. ``observe_node_cpu_watched``: ``supervise top``'s sampler once a second (status
   without RSS, psutil for 200 pids in the watcher's process) and a Prometheus scrape
   of the node's /metrics once a second (Prometheus' default is every 15 s);

and ``observe_node_cpu_added`` is 2 - 1 per pair of windows (target: under 1 point).

``observe_crash_loop``: the latency of the ``status`` request top, health and the
dashboard send, on a tree of 50 workers, while one of them crashes 20 ms after each
start and is restarted without end (``status_crash_loop``), beside the same request
with the crasher stopped (``status_calm``, the reference).  Target: p99 under 50 ms.

    $ supervise bench observe observe_crash_loop [--quick]
"""

from __future__ import annotations

import socket
import time
import urllib.request

import psutil

from supervisor_tree.bench._tree import BenchTree, tree_toml, worker_toml
from supervisor_tree.bench.harness import (
    BenchContext,
    BenchError,
    Better,
    Histogram,
    Measurement,
    Trial,
    measure_latency,
    workload,
)
from supervisor_tree.bench.measurement import Role
from supervisor_tree.client import Client
from supervisor_tree.observe.snapshot import Sampler
from supervisor_tree.worker.behaviour import Worker

__all__ = ["Crasher", "observe_overhead", "observe_crash_loop"]

WORKERS = 200
CRASH_LOOP_WORKERS = 50
TARGET_ADDED_POINTS = 1.0
TARGET_STATUS_P99_US = 50_000.0


class Crasher(Worker):
    """Crashes `after` seconds after each start (the crash-loop workload's worker)."""

    def init(self, after: float = 0.02) -> None:
        self.send_after(after, "crash")

    def handle_info(self, msg: object) -> None:
        raise RuntimeError("crash loop on purpose (bench observe_crash_loop)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _node_cpu_s(node: psutil.Process) -> float:
    t = node.cpu_times()
    return float(t.user + t.system)


def _window(node: psutil.Process, seconds: float, watch: Sampler | None, port: int) -> float:
    """The node's CPU (% of one core) over `seconds`; with `watch`: a top sample and a scrape each second."""
    c0, t0 = _node_cpu_s(node), time.monotonic()
    end = t0 + seconds
    while (now := time.monotonic()) < end:
        if watch is not None:
            watch.sample()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
                if b"supervise_up 1.0" not in r.read():
                    raise BenchError("the node's /metrics did not report supervise_up 1")
        time.sleep(max(0.0, min(1.0 - (time.monotonic() - now), end - time.monotonic())))  # once a second
    return (_node_cpu_s(node) - c0) / (time.monotonic() - t0) * 100.0


@workload("observe", quick=True, description=f"node CPU with top + /metrics each second, {WORKERS} workers, beside unwatched")
def observe_overhead(ctx: BenchContext) -> list[Measurement]:
    port = _free_port()
    config = tree_toml(*(worker_toml(f"w{i}") for i in range(WORKERS)), name="bench-observe")
    config += f"\n[metrics]\nport = {port}\n"
    window = 4.0 if ctx.quick else 10.0
    with BenchTree(config, base=ctx.run_dir) as tree, Client(tree.run_dir, timeout=10.0) as client:
        assert tree.node_pid is not None
        node = psutil.Process(tree.node_pid)
        sampler = Sampler(client)
        idle: list[float] = []
        watched: list[float] = []
        with ctx.progress.task("observe: node CPU, unwatched and watched windows", ctx.repeats + ctx.warmup) as step:
            for i in range(ctx.warmup + ctx.repeats):
                pair = [("idle", None), ("watched", sampler)]
                if i % 2:
                    pair.reverse()  # alternate which goes first: drift hits both alike
                got = {name: _window(node, window, watch, port) for name, watch in pair}
                if i >= ctx.warmup:
                    idle.append(got["idle"])
                    watched.append(got["watched"])
                step()
        running = sum(1 for w in sampler.sample().workers if w.state == "running")
    if running != WORKERS:
        raise BenchError(f"expected {WORKERS} running workers; the sampler saw {running}")
    unit = "% of a core"
    ref = Measurement.from_values("observe_node_cpu_idle", unit, idle, better=Better.LOWER, role=Role.REFERENCE,
                                  note=f"{WORKERS} idle workers beating every 0.5 s, nobody watching")
    ours = Measurement.from_values("observe_node_cpu_watched", unit, watched, better=Better.LOWER,
                                   note="top's sampler + a /metrics scrape, each once a second").compared_to(ref)
    added = Measurement.from_values("observe_node_cpu_added", "points", [w - i for w, i in zip(watched, idle)],
                                    better=Better.LOWER, target=TARGET_ADDED_POINTS,
                                    note="watched - unwatched, window by window (issue: under 1% CPU)")
    return [ref, ours, added]


def _status_latencies(client: Client, seconds: float) -> Trial:
    hist = Histogram()
    n = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        s = time.perf_counter_ns()
        client.status(rss=False)
        hist.record(time.perf_counter_ns() - s)
        n += 1
        time.sleep(0.01)  # a watcher's pace, not a flood: 100 requests/s at most
    return Trial(n, time.monotonic() - t0, hist)


@workload("observe_crash_loop", quick=True, description="status latency during a crash loop, beside a calm tree")
def observe_crash_loop(ctx: BenchContext) -> list[Measurement]:
    start = "supervisor_tree.bench.observe_overhead:Crasher"
    children = [worker_toml(f"w{i}") for i in range(CRASH_LOOP_WORKERS)] + [worker_toml("crasher", start=start)]
    config = tree_toml(*children, name="bench-crash", preload=("supervisor_tree.workers.puppet", "supervisor_tree.bench.observe_overhead"))
    window = 2.0 if ctx.quick else 5.0
    loop: list[Trial] = []
    calm: list[Trial] = []
    with BenchTree(config, base=ctx.run_dir) as tree, Client(tree.run_dir, timeout=10.0) as client:
        with ctx.progress.task("observe_crash_loop: status while crashing, then calm", 2) as step:
            restarts0 = _restarts(client)
            for _ in range(ctx.repeats):
                loop.append(_status_latencies(client, window))
            crashed = _restarts(client) - restarts0
            step()
            if crashed < ctx.repeats * window:  # at least one restart a second: else it was no crash loop
                raise BenchError(f"the crasher restarted only {crashed} times in {ctx.repeats * window:g}s")
            result = client.terminate_child("crasher")
            if not result.get("ok"):
                raise BenchError(f"terminate_child crasher: {result}")
            for _ in range(ctx.repeats):
                calm.append(_status_latencies(client, window))
            step()
    ref = measure_latency("status_calm", calm, role=Role.REFERENCE, note=f"{CRASH_LOOP_WORKERS} workers, crasher stopped")
    ours = measure_latency("status_crash_loop", loop, p99_target_us=TARGET_STATUS_P99_US,
                           note=f"{crashed} restarts during the windows ({CRASH_LOOP_WORKERS} workers + the crasher)")
    return [ref, ours.compared_to(ref)]


def _restarts(client: Client) -> int:
    """The crasher's generation: one more per restart."""
    tree = client.status(rss=False)["tree"]
    crasher = next(c for c in tree["children"] if c["id"] == "crasher")
    return int(crasher.get("generation") or 0)
