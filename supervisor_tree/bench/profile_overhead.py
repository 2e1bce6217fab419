"""Workload ``profile``: what profiling costs a busy worker, measured, not assumed.

Owns three figures of one worker of a real tree doing Python work per call
(``Busy``: a small dict payload, twenty function calls each running a loop), called
back to back by one client for a fixed window:

1. ``profile_none``: no profiler (the reference);
2. ``profile_py_spy_100hz``: ``py-spy record --rate 100`` attached, as
   ``supervise profile`` runs it (``pyspy.record``: it pauses the worker per sample);
3. ``profile_yappi``: yappi on in the worker (``profile_start`` over the control
   channel, cpu clock, every thread), as ``supervise profile --engine yappi`` does;
4. ``profile_yappi_wall``: the same on the wall clock (``--clock wall``).  yappi
   reads its clock at every call and return, builtins included even when it does
   not record them; the thread CPU clock is a system call, the wall clock is not.

The ratio of 2, 3 and 4 to 1 is the throughput kept under each profiler (1.00x: no
cost).  The modes alternate within each round, their order rotating every
round, so drift in the machine's load hits all alike; every mode gets ``ATTACH_S``
of untimed calls first (py-spy ``PYSPY_ATTACH_S``: it attaches meanwhile, and its
start-up, a one-off, takes CPU from a small machine), and a capture that
took too few samples (py-spy never attached) or recorded no calls fails the run.

    $ supervise bench profile [--quick]
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from supervisor_tree.bench._tree import BenchTree, tree_toml, worker_toml
from supervisor_tree.bench.harness import (
    BenchContext,
    BenchError,
    Histogram,
    Measurement,
    Trial,
    measure_throughput,
    workload,
)
from supervisor_tree.bench.measurement import Role
from supervisor_tree.client import Client
from supervisor_tree.worker.behaviour import Worker

__all__ = ["Busy", "profile_overhead"]

WORKER = "busy"
START = "supervisor_tree.bench.profile_overhead:Busy"
RATE_HZ = 100
ATTACH_S = 0.3  # untimed calls before each window: caches warm
PYSPY_ATTACH_S = 1.0  # py-spy's start (finding the interpreter, reading symbols) takes CPU: left out
TAIL_S = 0.2  # py-spy runs this much past the window, so it covers all of it
MIN_SAMPLE_SHARE = 0.3  # of RATE_HZ x window: fewer samples means py-spy was not attached
CALL_TIMEOUT = 10.0
MODES = ("none", "py-spy", "yappi", "yappi-wall")
PAYLOAD = {"order": 1234, "items": [3, 1, 4, 1, 5, 9, 2, 6], "coupon": "SPRING"}


# -- the worker (runs in the tree's worker process) ------------------------------------
def _line(k: int, items: list[int]) -> int:
    total = 0
    for i in range(100):
        total += (items[(i + k) % len(items)] * 2654435761 + i) % 1000003
    return total


def _handle(msg: dict[str, object]) -> int:
    items = list(msg["items"])  # type: ignore[call-overload]
    total = len(str(msg.get("coupon", "")))
    for k in range(20):
        total += _line(k, items)
    return total


class Busy(Worker):
    """A puppet-like worker whose every call does ~0.1 ms of plain Python work."""

    def handle_call(self, msg: object) -> object:
        if isinstance(msg, dict):
            return _handle(msg)
        raise ValueError(f"busy: expected the benchmark's dict payload, got {msg!r}")


# -- rounds ----------------------------------------------------------------------------
def _calls(client: Client, seconds: float, timed: bool) -> Trial:
    """Calls back to back for `seconds`; a Trial with every call's latency."""
    call = client.call
    now = time.perf_counter_ns
    samples: list[int] = []
    append = samples.append
    t_start = now()
    end = t_start + int(seconds * 1e9)
    n = 0
    while True:
        t = now()
        if t >= end:
            break
        call(WORKER, PAYLOAD, timeout=CALL_TIMEOUT)
        append(now() - t)
        n += 1
    elapsed = now() - t_start
    if not timed:
        return Trial(n, elapsed / 1e9)
    h = Histogram()
    h.record_many(samples)
    return Trial(n, elapsed / 1e9, h)


def _round_none(client: Client, pid: int, seconds: float) -> tuple[Trial, int]:
    _calls(client, ATTACH_S, timed=False)
    return _calls(client, seconds, timed=True), 0


def _round_pyspy(client: Client, pid: int, seconds: float) -> tuple[Trial, int]:
    from supervisor_tree.profiling.options import CaptureOptions
    from supervisor_tree.profiling.pyspy import record

    outcome: dict[str, object] = {}

    def sample() -> None:
        try:
            options = CaptureOptions(duration_s=PYSPY_ATTACH_S + seconds + TAIL_S, rate_hz=RATE_HZ)
            outcome["profile"] = record(pid, options)
        except Exception as exc:  # noqa: BLE001 - reported below, from the benchmark's thread
            outcome["error"] = exc

    sampler = threading.Thread(target=sample, name="bench-py-spy", daemon=True)
    sampler.start()
    try:
        _calls(client, PYSPY_ATTACH_S, timed=False)
        trial = _calls(client, seconds, timed=True)
    finally:
        sampler.join()
    if "error" in outcome:
        raise BenchError(f"py-spy on the busy worker failed: {outcome['error']}")
    samples = int(outcome["profile"].meta.samples)  # type: ignore[attr-defined]
    if samples < MIN_SAMPLE_SHARE * RATE_HZ * seconds:
        raise BenchError(f"py-spy took {samples} samples in a {seconds:g} s window at {RATE_HZ} Hz: "
                         "it was not attached for the window")
    return trial, samples


def _round_yappi(client: Client, pid: int, seconds: float, clock: str = "cpu") -> tuple[Trial, int]:
    started = client.control_worker(WORKER, "profile_start", {"clock": clock, "builtins": False}, CALL_TIMEOUT)
    if started.get("pid") != pid:
        raise BenchError(f"yappi started in pid {started.get('pid')}, not the busy worker's {pid}")
    try:
        _calls(client, ATTACH_S, timed=False)
        trial = _calls(client, seconds, timed=True)
    finally:
        stopped = client.control_worker(WORKER, "profile_stop", {"formats": []}, 60.0)
    calls = int(stopped.get("calls") or 0)
    if calls <= trial.ops:
        raise BenchError(f"yappi recorded {calls} calls over {trial.ops} handled requests: it was not on")
    return trial, calls


_ROUNDS: dict[str, Callable[[Client, int, float], tuple[Trial, int]]] = {
    "none": _round_none, "py-spy": _round_pyspy, "yappi": _round_yappi,
    "yappi-wall": lambda client, pid, seconds: _round_yappi(client, pid, seconds, clock="wall"),
}


@workload("profile", quick=True, description="a busy worker's call throughput: no profiler vs py-spy, yappi")
def profile_overhead(ctx: BenchContext) -> list[Measurement]:
    seconds = 0.5 if ctx.quick else 2.0
    trials: dict[str, list[Trial]] = {m: [] for m in MODES}
    counts: dict[str, list[int]] = {m: [] for m in MODES}
    config = tree_toml(worker_toml(WORKER, start=START), name="bench-profile",
                       preload=("supervisor_tree.bench.profile_overhead",))
    with BenchTree(config, base=ctx.run_dir) as tree, Client(tree.run_dir, timeout=CALL_TIMEOUT) as client:
        pid = int(client.resolve(WORKER).pid)
        _calls(client, ATTACH_S, timed=False)  # connected and warm before the first round
        with ctx.progress.task(f"profile overhead ({seconds:g} s windows)", total=ctx.warmup + ctx.repeats) as advance:
            for i in range(ctx.warmup + ctx.repeats):
                k = i % len(MODES)
                order = MODES[k:] + MODES[:k]  # rotate: each mode goes first, second, ..., last
                for mode in order:
                    trial, count = _ROUNDS[mode](client, pid, seconds)
                    if i >= ctx.warmup:
                        trials[mode].append(trial)
                        counts[mode].append(count)
                advance()
        if int(client.resolve(WORKER).pid) != pid:
            raise BenchError("the busy worker restarted during the benchmark; its figures are void")
    work = "Busy.handle_call: 20 function calls x 100-iteration loops"
    none = measure_throughput("profile_none", trials["none"], unit="calls/s", role=Role.REFERENCE,
                              note=f"{work}; no profiler; {seconds:g} s windows")
    pyspy = measure_throughput(
        "profile_py_spy_100hz", trials["py-spy"], unit="calls/s",
        note=f"py-spy record --rate {RATE_HZ} attached (pauses the worker per sample); "
             f"median {sorted(counts['py-spy'])[len(counts['py-spy']) // 2]} samples per window",
        extra={"samples": counts["py-spy"]})
    yappi = measure_throughput(
        "profile_yappi", trials["yappi"], unit="calls/s",
        note="yappi on (cpu clock, every thread, builtins off) via the worker's control channel",
        extra={"yappi_calls": counts["yappi"]})
    yappi_wall = measure_throughput(
        "profile_yappi_wall", trials["yappi-wall"], unit="calls/s",
        note="yappi on, wall clock (--clock wall); otherwise as profile_yappi",
        extra={"yappi_calls": counts["yappi-wall"]})
    return [none, pyspy.compared_to(none), yappi.compared_to(none), yappi_wall.compared_to(none)]
