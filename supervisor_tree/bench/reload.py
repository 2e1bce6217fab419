"""Workload ``reload``: a config reload's rolling restart beside the same restarts through OTP's dynamic API.

Owns one figure: a reload that changes the args of 10 workers (10 steps: each
stopped, started with its new spec and up before the next one stops), from the
request to its answer, against the same stops and starts asked one by one with
`terminate_child` + `restart_child` (the reference, measured in the same run,
rounds alternating).  The ratio is what the reload adds: reading and checking the
TOML in the node, the diff against the running tree, the plan, the events.  The
client's own check of the config (the CLI imports what it names) is not timed:
the request says `checked`, as the CLI's does.

    $ supervise bench reload [--quick]
"""

from __future__ import annotations

import itertools
import time

from supervisor_tree.bench._tree import BenchTree, tree_toml, worker_toml
from supervisor_tree.bench.harness import (
    BenchContext,
    BenchError,
    Histogram,
    Measurement,
    Trial,
    measure_latency,
    workload,
)
from supervisor_tree.bench.measurement import Role
from supervisor_tree.client import Client

__all__ = ["reload_workload"]

GROUP = 10
_now = time.perf_counter_ns


def _config(ids: list[str], version: int) -> str:
    return tree_toml(*(worker_toml(w) + f"args = {{ v = {version} }}\n" for w in ids), name="bench-reload")


@workload("reload", quick=True, description="a reload's rolling restart of 10 workers vs terminate+restart_child of each")
def reload_workload(ctx: BenchContext) -> list[Measurement]:
    rounds = ctx.count(full=20, quick=4)  # per repeat
    ids = [f"w{i}" for i in range(GROUP)]
    versions = itertools.count(1)
    with BenchTree(_config(ids, 0), base=ctx.run_dir) as tree, Client(tree.run_dir, timeout=60.0) as client:

        def ours() -> Trial:
            samples = []
            start = _now()
            for _ in range(rounds):
                tree.config.write_text(_config(ids, next(versions)))
                t0 = _now()
                value = client.reload(str(tree.config), checked=True, timeout=60.0)
                samples.append(_now() - t0)
                applied = (value.get("outcome") or {}).get("applied") or []
                if not value.get("ok") or len(applied) != GROUP:
                    raise BenchError(f"the benchmark reload did not apply its {GROUP} steps: {value}")
            return _trial(rounds, start, samples)

        def reference() -> Trial:
            samples = []
            start = _now()
            for _ in range(rounds):
                t0 = _now()
                for w in ids:
                    if not client.terminate_child(w).get("ok") or not client.restart_child(w).get("ok"):
                        raise BenchError(f"terminate_child / restart_child of {w!r} failed")
                samples.append(_now() - t0)
            return _trial(rounds, start, samples)

        mine: list[Trial] = []
        refs: list[Trial] = []
        with ctx.progress.task(f"reload x{rounds}", total=ctx.warmup + ctx.repeats) as advance:
            for _ in range(ctx.warmup):
                ours()
                reference()
                advance()
            for i in range(ctx.repeats):  # alternating, the order flipped every other round
                for fn, into in ((reference, refs), (ours, mine)) if i % 2 == 0 else ((ours, mine), (reference, refs)):
                    into.append(fn())
                advance()
    ref = measure_latency("terminate_restart_10", refs, role=Role.REFERENCE,
                          note=f"terminate_child + restart_child of each of {GROUP} workers, one after the other")  # fmt: skip
    result = measure_latency("reload_rolling_10", mine,
                             note=f"supervise reload changing the args of {GROUP} workers: request -> answer")  # fmt: skip
    return [result.compared_to(ref), ref]


def _trial(ops: int, start: int, samples: list[int]) -> Trial:
    h = Histogram()
    h.record_many(samples)
    return Trial(ops, (_now() - start) / 1e9, h)
