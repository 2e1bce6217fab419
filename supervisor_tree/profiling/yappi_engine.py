"""The yappi engine: runs INSIDE a worker, started and stopped over its control channel.

Owns yappi's lifetime in this process and turning its function statistics into
collapsed stacks, pstats and callgrind files.  The worker's control socket imports
this module lazily (so yappi is loaded only in workers that get profiled) and calls:

    >>> start(clock="wall")                                 # doctest: +SKIP
    {'pid': 4136, 'clock': 'wall', 'builtins': False, 'started_at': '...'}
    >>> stop(["collapsed", "pstats"], "/tmp/p")             # doctest: +SKIP
    {'collapsed': 'handle (app.py:8);hot_spin (app.py:2) 792100\\n...', 'pstats': '/tmp/p.pstats', ...}

The worker keeps serving while it profiles: yappi hooks every thread's calls
(``profile_threads=True``) and nothing here blocks.  It only sees calls made after
``start``: a function already running then (a worker's main loop, or one stuck in a
``while True``) shows only through the calls it makes; py-spy sees those.

Collapsed stacks are an approximation, because yappi keeps a call *graph* (per
function: total and own time, and per caller->callee edge: time spent in the callee
from that caller), not call stacks.  Per thread, each function's time not explained
by a recorded caller starts a root; the tree is expanded from the roots, giving a
callee the caller's budget in proportion to the edge's share of the callee's total
time (as gprof does), so a function called from two places splits its subtree as its
total splits, which is exact unless it behaves differently per caller.  An edge into
a function already on the path (recursion) is not expanded: its time stays with the
caller.  Branches under ``MIN_SHARE`` of the thread's time stay in their parent;
below ``DEPTH_CAP`` frames, or past ``MAX_NODES`` expansions, the rest is self time.
Weights are microseconds of the chosen clock.  The profiler's own functions (yappi
and this module, called from the control op) are cut out with their time.
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass

import yappi

from supervisor_tree.profiling.collapsed import Clock, clean_frame, format_weight, now_iso
from supervisor_tree.profiling.errors import ProfilerError

DEPTH_CAP = 256
MAX_NODES = 200_000
MIN_SHARE = 1e-5
FORMATS = ("collapsed", "pstats", "callgrind")


@dataclass(frozen=True, slots=True)
class _Session:
    clock: Clock
    builtins: bool
    started_at: str
    t0: float  # time.monotonic() at start


_session: _Session | None = None  # the one profiling session of this process


def start(clock: str = "wall", builtins: bool = False) -> dict[str, object]:
    """Start yappi on every thread; fails if a session is already running."""
    global _session
    try:
        chosen = Clock(clock)
    except ValueError:
        raise ProfilerError(f"yappi clock must be 'wall' or 'cpu'; got {clock!r}") from None
    if yappi.is_running():
        since = f" for {time.monotonic() - _session.t0:.1f} s" if _session else ""
        raise ProfilerError(
            f"yappi is already running in pid {os.getpid()}{since}; "
            "a capture is in progress (or yappi was started by other code): stop it first"
        )
    yappi.clear_stats()
    yappi.set_clock_type(chosen.value)
    session = _Session(chosen, builtins, now_iso(), time.monotonic())
    # Nothing but the session bookkeeping after this line: every call is recorded.
    yappi.start(builtins=builtins, profile_threads=True)
    _session = session
    return {"pid": os.getpid(), "clock": chosen.value, "builtins": builtins,
            "started_at": session.started_at}


def stop(formats: Sequence[str] = ("collapsed",),
         output_prefix: str | None = None) -> dict[str, object]:
    """Stop yappi, return what was asked for, and free yappi's statistics.

    Returns ``collapsed`` (stack lines without a meta header), ``pstats`` and
    ``callgrind`` (paths of files written at ``output_prefix`` + ".pstats" /
    ".callgrind", or in the temp dir), plus ``pid``, ``clock``, ``started_at``,
    ``duration_s``, ``threads`` and ``calls``.  ``formats=[]`` just stops.
    """
    global _session
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ProfilerError(f"yappi can write {', '.join(FORMATS)}; got {', '.join(unknown)}")
    if _session is None or not yappi.is_running():
        raise ProfilerError(
            f"yappi is not running in pid {os.getpid()}: no profile_start reached this "
            "process, or the worker restarted since"
        )
    yappi.stop()
    session, _session = _session, None
    try:
        return _results(session, formats, output_prefix)
    finally:
        yappi.clear_stats()


def _results(session: _Session, formats: Sequence[str], prefix: str | None) -> dict[str, object]:
    stats = yappi.get_func_stats(filter_callback=lambda s: not _excluded(s))
    threads = yappi.get_thread_stats()
    result: dict[str, object] = {
        "pid": os.getpid(), "clock": session.clock.value, "started_at": session.started_at,
        "duration_s": round(time.monotonic() - session.t0, 3),
        "threads": len(threads), "calls": sum(s.ncall for s in stats),
    }
    if "collapsed" in formats:
        result["collapsed"] = collapsed_text([t.id for t in threads])
    for fmt, yappi_type in (("pstats", "pstat"), ("callgrind", "callgrind")):
        if fmt in formats:
            path = _output_path(prefix, fmt)
            stats.save(path, type=yappi_type)
            result[fmt] = path
    return result


def _output_path(prefix: str | None, fmt: str) -> str:
    if prefix is not None:
        return f"{prefix}.{fmt}"
    fd, path = tempfile.mkstemp(prefix=f"supervisor_tree-yappi-{os.getpid()}-", suffix=f".{fmt}")
    os.close(fd)
    return path


def collapsed_text(thread_ids: Sequence[int]) -> str:
    """Collapsed stacks (weights in µs) of the given yappi thread contexts, merged."""
    stacks: dict[str, float] = {}
    for ctx_id in thread_ids:
        # filter= and not ctx_id=: get_func_stats drops a ctx_id of 0 (falsy).
        _expand_thread(yappi.get_func_stats(filter={"ctx_id": ctx_id}), stacks)
    lines = [(stack, round(seconds * 1e6)) for stack, seconds in stacks.items()]
    lines.sort(key=lambda item: (-item[1], item[0]))
    return "".join(f"{stack} {format_weight(us)}\n" for stack, us in lines if us > 0)


def _expand_thread(stats: yappi.YFuncStats, out: dict[str, float]) -> None:
    funcs = {s.index: s for s in stats}
    called: dict[int, float] = {}
    for s in funcs.values():
        for edge in s.children:
            if edge.index != s.index:
                called[edge.index] = called.get(edge.index, 0.0) + edge.ttot
    roots = [(s.index, max(0.0, s.ttot - called.get(s.index, 0.0)))
             for s in funcs.values() if not _excluded(s)]
    floor = MIN_SHARE * sum(budget for _, budget in roots)
    walk = _Walk(funcs, out, floor)
    for index, budget in roots:
        if budget > floor:
            walk.expand(index, budget, (), frozenset((index,)))


class _Walk:
    """One thread's expansion: the call graph, the output, and the node budget."""

    def __init__(self, funcs: dict[int, yappi.YFuncStat], out: dict[str, float], floor: float):
        self.funcs, self.out, self.floor, self.nodes = funcs, out, floor, 0
        self.labels = {index: _label(stat) for index, stat in funcs.items()}

    def expand(self, index: int, budget: float, path: tuple[str, ...],
               on_path: frozenset[int]) -> None:
        stat = self.funcs[index]
        path = path + (self.labels[index],)
        spent = 0.0
        if stat.ttot > 0 and len(path) < DEPTH_CAP and self.nodes < MAX_NODES:
            scale = budget / stat.ttot
            for edge in stat.children:
                if edge.index in on_path or edge.index not in self.funcs:
                    continue  # recursion (or a filtered callee): the time stays here
                share = min(edge.ttot * scale, budget - spent)
                if _excluded(self.funcs[edge.index]):
                    spent += max(0.0, share)  # the profiler's own time: cut out
                elif share > self.floor:
                    self.nodes += 1
                    self.expand(edge.index, share, path, on_path | {edge.index})
                    spent += share
        own = budget - spent
        if own > 0:
            key = ";".join(path)
            self.out[key] = self.out.get(key, 0.0) + own


def _label(stat: yappi.YFuncStat) -> str:
    if stat.builtin:
        return clean_frame(f"{stat.module}.{stat.name}")
    return clean_frame(f"{stat.name} ({_short_path(stat.module)}:{stat.lineno})")


def _short_path(path: str) -> str:
    """A file name relative to the longest sys.path entry holding it, as py-spy shows it."""
    if not os.path.isabs(path):
        return path  # "<string>", "<frozen ...>": nothing to shorten
    for prefix in sorted((os.path.abspath(p) for p in sys.path if p), key=len, reverse=True):
        if path.startswith(prefix + os.sep):
            return path[len(prefix) + 1:]
    return path


_OWN_FILES = frozenset(
    os.path.realpath(f) for f in (__file__, getattr(yappi, "__file__", "") or "") if f
)


def _excluded(stat: yappi.YFuncStat) -> bool:
    """The profiler's own frames: yappi's module and C extension, and this module."""
    return _own_module(stat.module, bool(stat.builtin))


@functools.lru_cache(maxsize=4096)
def _own_module(module: str, builtin: bool) -> bool:
    if module in ("_yappi", "yappi"):
        return True
    return not builtin and os.path.realpath(module) in _OWN_FILES
