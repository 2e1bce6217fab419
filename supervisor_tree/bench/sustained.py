"""Workload ``sustained``: a mixed load on a real node for a while, with latency and memory growth.

Owns the seed's "sustained load" figure and its quality gates (p99 < 5 ms,
memory growth < 1 MiB/min, 372K msg/s): load processes drive the registry,
queue, session and pool components of core_ops' tree for `duration` seconds
while this process samples the RSS of every process of the node once a second.

    $ supervise bench sustained [--quick] [--duration 1800]

Duration: 60 s by default (quick: 10 s); ``--duration S`` sets it.  (The harness
hands a workload 30 s / 5 s when no --duration is given; those two values are
read as "not given" and become 60 s / 10 s.)

How it runs:

* The load processes (LOADERS) are forked first, before this process holds any
  ZeroMQ context (it never holds one during the run: the raw references below
  make and end theirs); they wait for a "go" with the node's run directory and
  the end time (CLOCK_MONOTONIC, shared by all processes).
* The raw pyzmq references are measured next, with the same 64 B payloads and
  batches of 100: push_pull_batch100_64B (items/s) for the items figure, and
  push_pull_roundtrip_64B (requests/s, and its latency) for the request figures.
* The node: core_ops.CONFIG plus a second sink, started with BenchTree.  Each
  loader has its own sink and queue; registry, session and pool are shared.
* One iteration of a loader (64 B payloads, distinct objects):
  - registry: 5 casts by name of a list of 100 messages to its sink, then a call
    to the sink for its count (must equal everything sent): 500 items, 1 request;
  - queue: put_many(100), then get_many(100) acking the previous batch: 100
    items (those read), 2 requests;
  - session: one batch of 50 gets + 50 updates on 50 sessions of its own, then
    one get and one update per call: 102 ops, 3 requests;
  - pool: run_many("echo", 100 tasks): 100 items, 1 request.
  A request counts (and its latency is recorded) when its reply has been read;
  the registry group's latency runs from its first cast to the count's reply.
* Throughput is over the whole run (first "go" to the last loader's last reply).
* Memory: the node and every descendant (psutil), once a second; a least-squares
  slope (MiB/min) per process and for their sum, over the samples after the
  warm-up (the first 20 % of the run).  Samples go into the measurement's extra.

Nothing is left behind: loaders die with this process (PR_SET_PDEATHSIG), are
killed in a ``finally``, and BenchTree stops the node (SIGKILL as a backstop).
"""

from __future__ import annotations

import ctypes
import math
import os
import signal
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import multiprocess

from supervisor_tree.bench._tree import BenchTree
from supervisor_tree.bench.core_ops import CONFIG as CORE_OPS_CONFIG
from supervisor_tree.bench.harness import (
    BenchContext,
    BenchError,
    Better,
    Histogram,
    LatencySummary,
    Measurement,
    workload,
)
from supervisor_tree.bench.measurement import Role
from supervisor_tree.bench.memory import MIB, RssSampler, fit_slope_mib_per_min
from supervisor_tree.bench.raw import raw_push_pull, raw_push_pull_roundtrip

__all__ = ["LOADERS", "TREE_CONFIG", "fit_slope_mib_per_min", "sustained_workload"]

LOADERS = 2
PAYLOAD = 64
BATCH = 100
REGISTRY_CASTS = 5  # casts of BATCH messages per registry group
SESSIONS = 50  # per loader
WARMUP_FRACTION = 0.2  # of the run, excluded from the memory slopes
SAMPLE_EVERY = 1.0  # s between RSS samples
DEFAULT_S, QUICK_S = 60.0, 10.0
HARNESS_DEFAULTS = {False: 30.0, True: 5.0}  # what the harness passes when no --duration was given
MAX_DURATION = 4 * 3600.0
CALL_TIMEOUT = 30.0
TARGET_MSGS = 372_000.0  # the seed: "Sustained Load: 372K msg/s (60M ops/30min)"
P99_TARGET_US = 5000.0
MEMORY_TARGET = 1.0  # MiB/min
MEMORY_JUDGED_S = 60.0  # a run this long or longer is judged against MEMORY_TARGET: a shorter one is mostly warm-up
KINDS = ("registry", "queue", "session", "pool")
_now = time.perf_counter_ns  # CLOCK_MONOTONIC: comparable across processes

TREE_CONFIG = CORE_OPS_CONFIG + """
[[tree.children]]
id = "sink_1"
start = "supervisor_tree.bench.core_ops:Sink"
args = { name = "sink_1" }
"""
SINKS = ("sink", "sink_1")
QUEUES = ("queue", "queue_big")
NAMED_WORKERS = ("registry", *SINKS, *QUEUES, "producer", "sessions", "pool")


def duration_of(ctx: BenchContext) -> float:
    d = ctx.duration
    if d == HARNESS_DEFAULTS[ctx.quick]:
        d = QUICK_S if ctx.quick else DEFAULT_S
    if not 1.0 <= d <= MAX_DURATION:
        raise BenchError(f"sustained: duration must be within 1..{MAX_DURATION:g} s; got {d:g}")
    return d


# ---------------------------------------------------------------------------
# A load process


@dataclass
class LoadReport:
    """What one loader measured: per kind items, requests and latencies; its start and end (ns)."""

    index: int
    items: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    requests: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    hists: dict[str, Histogram] = field(default_factory=lambda: {k: Histogram() for k in KINDS})
    t_start: int = 0
    t_end: int = 0
    iterations: int = 0


def _loader_main(conn: Any, index: int, parent: int) -> None:
    """Forked before any ZeroMQ context of the parent: wait for ("go", run_dir, end_ns) and load."""
    code = 0
    try:
        try:
            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
        if os.getppid() != parent:
            os._exit(1)
        if not conn.poll(MAX_DURATION):
            os._exit(1)
        order = conn.recv()
        if order is None:
            os._exit(0)
        _, run_dir, end_ns = order
        try:
            conn.send(("report", _load(index, run_dir, end_ns)))
        except BaseException:  # noqa: BLE001 - cleanup, then re-raised or reported
            conn.send(("error", traceback.format_exc()))
            code = 1
    except BaseException:  # noqa: BLE001 - cleanup, then re-raised or reported
        code = 1
    finally:
        os._exit(code)


def _load(index: int, run_dir: str, end_ns: int) -> LoadReport:
    from supervisor_tree.client import Client
    from supervisor_tree.workers.pool import PoolClient
    from supervisor_tree.workers.queue import QueueClient
    from supervisor_tree.workers.registry import Names
    from supervisor_tree.workers.session import SessionClient

    rep = LoadReport(index)
    sink, queue_id = SINKS[index % len(SINKS)], QUEUES[index % len(QUEUES)]
    bodies = [os.urandom(PAYLOAD) for _ in range(BATCH)]
    with Client(run_dir, timeout=CALL_TIMEOUT) as client:
        names = Names(client)
        names.send(sink, [])  # the one lookup; later sends hit the cache
        client.call(sink, "reset")
        q = QueueClient(client, queue_id)
        sessions = SessionClient(client, "sessions")
        pool = PoolClient(client, "pool")
        ids = sessions.batch([("create", {"b": bodies[k], "i": k}) for k in range(SESSIONS)])
        reads = [("get", s) for s in ids]
        h = rep.hists
        sent = 0
        tag: Any = None
        i = 0
        rep.t_start = _now()
        while _now() < end_ns:
            # registry: casts by name, then the sink's count as the reply
            t = _now()
            for _ in range(REGISTRY_CASTS):
                names.send(sink, [(sent + k, b) for k, b in enumerate(bodies)])
                sent += BATCH
            got = client.call(sink, "count")
            h["registry"].record(_now() - t)
            if got != sent:
                raise BenchError(f"loader {index}: the sink counted {got} messages of {sent}")
            rep.items["registry"] += REGISTRY_CASTS * BATCH
            rep.requests["registry"] += 1
            # queue: put_many, get_many with the previous batch's ack
            t = _now()
            q.put_many([(i, b) for b in bodies], timeout=CALL_TIMEOUT)
            t1 = _now()
            tag, items = q.get_many(BATCH, timeout=CALL_TIMEOUT, ack=tag)
            t2 = _now()
            h["queue"].record_many((t1 - t, t2 - t1))
            if not items:
                raise BenchError(f"loader {index}: the queue gave no item within {CALL_TIMEOUT} s")
            rep.items["queue"] += len(items)
            rep.requests["queue"] += 2
            # session: a batch of gets and updates, then one of each per call
            ops = reads + [("update", s, {"seen": i}) for s in ids]
            t = _now()
            sessions.batch(ops)
            t1 = _now()
            sid = ids[i % SESSIONS]
            sessions.get(sid)
            t2 = _now()
            sessions.update(sid, {"seen": i})
            t3 = _now()
            h["session"].record_many((t1 - t, t2 - t1, t3 - t2))
            rep.items["session"] += len(ops) + 2
            rep.requests["session"] += 3
            # pool: run_many of echo tasks
            t = _now()
            done = pool.run_many("echo", [((i, b),) for b in bodies], timeout=CALL_TIMEOUT)
            h["pool"].record(_now() - t)
            if len(done) != BATCH:
                raise BenchError(f"loader {index}: run_many returned {len(done)} results of {BATCH}")
            rep.items["pool"] += BATCH
            rep.requests["pool"] += 1
            i += 1
        rep.t_end = _now()
        rep.iterations = i
        if tag is not None:
            q.ack(tag)
        sessions.batch([("delete", s) for s in ids])
    for hist in rep.hists.values():
        hist.percentile(50)  # bucket the pending samples: a small pickle
    return rep


class Loaders:
    """LOADERS forked load processes; a context manager that leaves none behind."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.procs: list[Any] = []
        self.conns: list[Any] = []

    def __enter__(self) -> Loaders:
        mp = multiprocess.get_context("fork")
        try:
            for i in range(self.n):
                ours, theirs = mp.Pipe()
                proc = mp.Process(target=_loader_main, args=(theirs, i, os.getpid()), daemon=True)
                proc.start()
                theirs.close()
                self.procs.append(proc)
                self.conns.append(ours)
        except BaseException:
            self.__exit__()
            raise
        return self

    def go(self, run_dir: str, end_ns: int) -> None:
        for c in self.conns:
            c.send(("go", run_dir, end_ns))

    def poll_errors(self) -> None:
        """Raise if a loader reported an error or died before reporting."""
        for i, (c, p) in enumerate(zip(self.conns, self.procs)):
            if c.poll(0):
                kind, payload = c.recv()
                if kind == "error":
                    raise BenchError(f"sustained: load process {i} failed:\n{payload}")
                self._early = getattr(self, "_early", {})
                self._early[i] = payload
            elif not p.is_alive() and i not in getattr(self, "_early", {}):
                raise BenchError(f"sustained: load process {i} exited (code {p.exitcode}) without a report")

    def reports(self, timeout: float) -> list[LoadReport]:
        early: dict[int, LoadReport] = getattr(self, "_early", {})
        out = []
        deadline = time.monotonic() + timeout
        for i, c in enumerate(self.conns):
            if i in early:
                out.append(early[i])
                continue
            if not c.poll(max(0.0, deadline - time.monotonic())):
                raise BenchError(f"sustained: load process {i} did not report within {timeout:g} s of the end")
            kind, payload = c.recv()
            if kind == "error":
                raise BenchError(f"sustained: load process {i} failed:\n{payload}")
            out.append(payload)
        return out

    def __exit__(self, *exc: object) -> None:
        for c in self.conns:
            try:
                c.send(None)  # a loader still waiting for "go" leaves
            except (OSError, ValueError):
                pass
        for p in self.procs:
            p.join(5.0)
            if p.is_alive():
                p.kill()
                p.join(5.0)
        for c in self.conns:
            c.close()


# ---------------------------------------------------------------------------
# The workload


def _summary(hists: list[Histogram]) -> LatencySummary:
    return LatencySummary.from_histograms(hists)


@workload("sustained", quick=True,
          description="mixed registry/queue/session/pool load for a duration: throughput, p99, memory slope")
def sustained_workload(ctx: BenchContext) -> list[Measurement]:
    duration = duration_of(ctx)
    with Loaders(LOADERS) as loaders:  # forked first: no ZeroMQ context here yet
        kw: dict[str, Any] = {"repeats": ctx.repeats, "warmup": ctx.warmup, "progress": ctx.progress,
                              "dir": ctx.run_dir}
        ref_items = raw_push_pull(ctx.count(full=1_000_000, quick=200_000), PAYLOAD, batch=BATCH, **kw)
        ref_rt = raw_push_pull_roundtrip(ctx.count(full=10_000, quick=2_000), PAYLOAD, **kw)
        with BenchTree(TREE_CONFIG, base=ctx.run_dir) as tree:
            if tree.node_pid is None:
                raise BenchError("sustained: the node's pid is unknown")
            sampler = RssSampler(tree.node_pid)
            t_go = time.monotonic()
            end_ns = _now() + int(duration * 1e9)
            loaders.go(str(tree.run_dir), end_ns)
            sampler.sample()
            steps = max(1, math.ceil(duration / SAMPLE_EVERY))
            with ctx.progress.task(f"sustained {duration:g} s, {LOADERS} load processes", total=steps) as advance:
                for k in range(1, steps + 1):
                    time.sleep(max(0.0, t_go + k * SAMPLE_EVERY - time.monotonic()))
                    sampler.sample()
                    loaders.poll_errors()
                    advance()
            reports = loaders.reports(timeout=2 * CALL_TIMEOUT + 30.0)
            sampler.sample()
            sampler.name_workers(str(tree.run_dir), NAMED_WORKERS)
    return _figures(duration, reports, sampler, ref_items, ref_rt)


def _figures(duration: float, reports: list[LoadReport], sampler: RssSampler,
             ref_items: Measurement, ref_rt: Measurement) -> list[Measurement]:
    elapsed = (max(r.t_end for r in reports) - min(r.t_start for r in reports)) / 1e9
    if elapsed <= 0:
        raise BenchError("sustained: the run took no time")
    items = sum(sum(r.items.values()) for r in reports)
    requests = sum(sum(r.requests.values()) for r in reports)
    latency = _summary([Histogram.merged(r.hists.values()) for r in reports])  # p99 per load process
    per_kind = {}
    for kind in KINDS:
        kh = Histogram.merged(r.hists[kind] for r in reports)
        n_items = sum(r.items[kind] for r in reports)
        per_kind[kind] = {"items": n_items, "requests": sum(r.requests[kind] for r in reports),
                          "items_per_s": round(n_items / elapsed, 1), "latency_us": kh.summary()}
    mix = (f"{len(reports)} load processes, {elapsed:.1f} s; per iteration: registry {REGISTRY_CASTS}x{BATCH} casts "
           f"+ count call, queue put_many/get_many({BATCH}), session batch({2 * SESSIONS}) + get + update, "
           f"pool run_many({BATCH}); {PAYLOAD} B payloads")
    extra = {"per_kind": per_kind, "items": items, "requests": requests, "elapsed_s": round(elapsed, 3),
             "iterations": [r.iterations for r in reports], "duration_s": duration}
    m_items = Measurement.from_values(
        "sustained_items", "msg/s", [items / elapsed], latency=latency, target=TARGET_MSGS,
        note=f"items moved (messages, queue items, session ops, pool tasks) / whole run; {mix}", extra=extra,
    ).compared_to(ref_items)
    m_req = Measurement.from_values(
        "sustained_requests", "req/s", [requests / elapsed], latency=latency, p99_target_us=P99_TARGET_US,
        note="requests whose reply was read / whole run; latency of every request",
    ).compared_to(ref_rt)
    ref_lat = Measurement.from_values(f"{ref_rt.name}_p50", "µs", [ref_rt.latency.p50 if ref_rt.latency else 0.0],
                                      better=Better.LOWER, latency=ref_rt.latency, role=Role.REFERENCE)
    m_lat = Measurement.from_values(
        "sustained_request_latency", "µs", [latency.p50], better=Better.LOWER, latency=latency,
        p99_target_us=P99_TARGET_US, note=f"p50 (value), p95 {latency.p95} µs, p99 {latency.p99} µs, "
                                          f"p99.9 {latency.p999} µs over {latency.count:,} requests",
    ).compared_to(ref_lat)
    warmup_s = WARMUP_FRACTION * duration
    slopes, total, used = sampler.slopes(warmup_s)
    if not slopes or not math.isfinite(total):
        raise BenchError(f"sustained: too few RSS samples after the warm-up ({used}) for a slope")
    worst_label = max(slopes, key=lambda k: slopes[k] if math.isfinite(slopes[k]) else -math.inf)
    mem_extra = {"slopes_mib_per_min": {k: round(v, 4) for k, v in sorted(slopes.items())},
                 "total_mib_per_min": round(total, 4), "worst": worst_label, "warmup_s": round(warmup_s, 2),
                 "samples_used": used, "rss": sampler.to_extra()}
    last = sampler.samples[-1][1] if sampler.samples else {}
    judged = duration >= MEMORY_JUDGED_S
    unjudged = "" if judged else (f"; not judged against the {MEMORY_TARGET:g} MiB/min gate: a {duration:g} s run is "
                                  f"mostly warm-up (runs of {MEMORY_JUDGED_S:g} s or more are)")
    m_worst = Measurement.from_values(
        "memory_growth_worst_process", "MiB/min", [slopes[worst_label]], better=Better.LOWER,
        target=MEMORY_TARGET if judged else None, extra=mem_extra,
        note=f"least-squares RSS slope after {warmup_s:g} s warm-up, worst of {len(slopes)} processes: "
             f"{worst_label}{unjudged}",
    )
    m_total = Measurement.from_values(
        "memory_growth_total", "MiB/min", [total], better=Better.LOWER, target=MEMORY_TARGET if judged else None,
        note=f"sum of {len(last)} processes' RSS ({sum(last.values()) / MIB:.1f} MiB at the end), {used} samples"
             f"{unjudged}",
    )
    return [m_items, m_req, m_lat, m_worst, m_total, ref_items, ref_rt]
