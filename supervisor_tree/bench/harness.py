"""The benchmark harness: a registry of workloads, the context they run in, and `run`.

Owns which workloads exist and how a run is carried out (one scratch directory
per workload, a progress display, the facts recorded beside the figures).  It
re-exports the records and helpers a workload needs, so a workload module
imports from here only.  It measures nothing itself: workloads do.

    from supervisor_tree.bench.harness import BenchContext, Measurement, workload

    @workload("call_round_trip", quick=True, description="call() to a worker and back")
    def call_round_trip(ctx: BenchContext) -> list[Measurement]:
        n = ctx.count(full=20_000, quick=2_000)
        ...
        return [ours.compared_to(reference)]

    result = run(["call_round_trip"], quick=True)
    print_table(result); save_json(result)

Rules every workload follows (DESIGN.md, "Numbers that matter"): real
processes and sockets; a request counts when its reply has been read;
throughput is wall-clock ops / elapsed with warm-up and ``ctx.repeats`` repeats
(median and spread); percentiles from every sample; each figure carries a
reference measured in the same run; counts and durations are bounded.
"""

from __future__ import annotations

import difflib
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from supervisor_tree.bench.facts import git_commit, machine_facts, versions
from supervisor_tree.bench.hist import Histogram
from supervisor_tree.bench.measurement import (
    Better,
    LatencySummary,
    Measurement,
    Reference,
    Status,
    Trial,
    measure_latency,
    measure_throughput,
    relative_spread_pct,
    run_repeats,
)
from supervisor_tree.bench.progress import BenchProgress
from supervisor_tree.bench.result import SCHEMA, BadResultFile, Result, WorkloadResult, load_result, save_json
from supervisor_tree.bench.table import print_table

__all__ = [
    "SCHEMA",
    "BadResultFile",
    "BenchContext",
    "BenchError",
    "BenchProgress",
    "Better",
    "Histogram",
    "LatencySummary",
    "Measurement",
    "Reference",
    "Result",
    "Status",
    "Trial",
    "UnknownWorkload",
    "Workload",
    "WorkloadResult",
    "git_commit",
    "load_result",
    "machine_facts",
    "measure_latency",
    "measure_throughput",
    "print_table",
    "registry",
    "relative_spread_pct",
    "run",
    "run_repeats",
    "save_json",
    "select",
    "versions",
    "workload",
]

MIN_REPEATS = 5  # the project's rule: a median and a spread need at least 5 repeats


class BenchError(RuntimeError):
    """A benchmark could not produce its figure (a peer died, a deadline passed)."""


class UnknownWorkload(BenchError):
    pass


@dataclass(frozen=True, slots=True)
class BenchContext:
    """What a workload is given.

    `duration` is the wall-clock budget (s) of a sustained workload; `run_dir`
    a private scratch directory (ipc endpoints, files), removed after the
    workload returns.
    """

    quick: bool
    repeats: int
    warmup: int
    duration: float
    progress: BenchProgress
    run_dir: Path

    def count(self, full: int, quick: int) -> int:
        """The operation count to use: `quick` in a quick run, else `full`."""
        return quick if self.quick else full

    def repeat(self, fn: Callable[[], Trial], label: str) -> list[Trial]:
        """`run_repeats` with this context's repeats, warm-up and progress."""
        return run_repeats(fn, repeats=self.repeats, warmup=self.warmup, progress=self.progress, label=label)


WorkloadFn = Callable[[BenchContext], list[Measurement]]


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    fn: WorkloadFn
    quick: bool  # part of a quick run (`--quick` with no names)
    description: str


_REGISTRY: dict[str, Workload] = {}


def workload(name: str, *, quick: bool = True, description: str = "") -> Callable[[WorkloadFn], WorkloadFn]:
    """Register `fn(ctx) -> list[Measurement]` as the workload `name`."""

    def register(fn: WorkloadFn) -> WorkloadFn:
        if name in _REGISTRY and _REGISTRY[name].fn is not fn:
            raise ValueError(f"workload {name!r} is registered twice ({_REGISTRY[name].fn.__module__})")
        _REGISTRY[name] = Workload(name, fn, quick, description or (fn.__doc__ or "").strip().split("\n")[0])
        return fn

    return register


def registry() -> dict[str, Workload]:
    """Every registered workload by name.

    The harness imports no workload: a workload module registers itself when it is
    imported, and `supervisor_tree.bench` (the package) imports the built-in ones
    (`workloads.py`), so any use of the package sees them all.
    """
    return dict(_REGISTRY)


def select(names: Sequence[str] | None, quick: bool) -> list[Workload]:
    """The workloads `names` in order; none given: all (a quick run: those marked quick)."""
    known = registry()
    if not names:
        return [w for w in known.values() if w.quick or not quick]
    chosen = []
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f'; did you mean "{close[0]}"?' if close else ""
            raise UnknownWorkload(f'no benchmark workload "{name}" (known: {", ".join(sorted(known))}){hint}')
        chosen.append(known[name])
    return chosen


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def run(
    names: Sequence[str] | None = None,
    quick: bool = False,
    *,
    repeats: int = MIN_REPEATS,
    warmup: int = 1,
    duration: float | None = None,
    progress: BenchProgress | None = None,
) -> Result:
    """Run the workloads `names` (see `select`) and return the whole run.

    A workload that raises is recorded with its error and the run goes on.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0; got repeats={repeats}, warmup={warmup}")
    chosen = select(names, quick)
    progress = progress if progress is not None else BenchProgress()
    started_at = _now_iso()
    t0 = time.monotonic()
    machine = machine_facts()
    results: dict[str, WorkloadResult] = {}
    with progress:
        for wl in chosen:
            scratch = Path(tempfile.mkdtemp(prefix=f"st-bench-{wl.name}-"))
            ctx = BenchContext(
                quick=quick,
                repeats=repeats,
                warmup=warmup,
                duration=duration if duration is not None else (5.0 if quick else 30.0),
                progress=progress,
                run_dir=scratch,
            )
            w0 = time.monotonic()
            try:
                measurements = tuple(wl.fn(ctx))
                results[wl.name] = WorkloadResult(measurements, wl.description, None, time.monotonic() - w0)
            except Exception as e:  # noqa: BLE001 - a failed workload is a result too; the others still run
                error = f"{type(e).__name__}: {e}"
                progress.note(f"workload {wl.name} failed: {error}")
                results[wl.name] = WorkloadResult((), wl.description, error, time.monotonic() - w0)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
    return Result(
        workloads=results,
        machine=machine,
        versions=versions(),
        commit=git_commit(),
        started_at=started_at,
        duration_s=time.monotonic() - t0,
        quick=quick,
        repeats=repeats,
        extra={"loadavg_end": machine_facts()["loadavg"]},  # beside machine.loadavg: was the box busy?
    )
