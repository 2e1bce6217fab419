"""Where a worker's memory goes: tracemalloc, switched on and read on demand over the control socket.

Owns the worker side of `supervise memwatch --snapshot WORKER`: "start" begins tracing
(if it was off) and keeps a baseline snapshot; "report" takes a second snapshot and
returns the allocation sites that grew most since the baseline, then stops tracing if
"start" switched it on.  Runs in the worker's main thread (control ops do); tracing
costs the worker while it is on, so it is on only between the two requests.

    tracemalloc_op(action="start", frames=1)     # -> {"tracing": True, "started_here": True}
    tracemalloc_op(action="report", top=10)      # -> {"sites": [{"site": "leak.py:31", "size_diff": ...}, ...]}
"""

from __future__ import annotations

import tracemalloc

__all__ = ["tracemalloc_op"]

_baseline: tracemalloc.Snapshot | None = None
_started_here = False


def tracemalloc_op(**kwargs: object) -> dict[str, object]:
    """One request of the control op "tracemalloc": action start | report | stop; top; frames."""
    global _baseline, _started_here
    action = kwargs.get("action", "report")
    top, frames = _count(kwargs, "top", 10), _count(kwargs, "frames", 1)
    if action == "start":
        if not tracemalloc.is_tracing():
            tracemalloc.start(frames)
            _started_here = True
        _baseline = tracemalloc.take_snapshot()
        return {"tracing": True, "started_here": _started_here}
    if action == "stop":
        return _stop()
    if action != "report":
        raise ValueError(f"tracemalloc: unknown action {action!r}; expected start, report or stop")
    if _baseline is None or not tracemalloc.is_tracing():
        raise RuntimeError("tracemalloc: no baseline; send action=start first (memwatch --snapshot does)")
    snap = tracemalloc.take_snapshot()
    stats = snap.compare_to(_baseline, "lineno")
    current, peak = tracemalloc.get_traced_memory()
    sites = [
        {"site": f"{s.traceback[0].filename}:{s.traceback[0].lineno}", "size_diff": s.size_diff, "size": s.size,
         "count_diff": s.count_diff, "count": s.count}
        for s in stats[:top]
    ]
    _stop()
    return {"sites": sites, "traced": current, "peak": peak}


def _stop() -> dict[str, object]:
    global _baseline, _started_here
    if _started_here and tracemalloc.is_tracing():
        tracemalloc.stop()
    was, _baseline, _started_here = _started_here, None, False
    return {"tracing": tracemalloc.is_tracing(), "stopped_here": was}


def _count(kwargs: dict[str, object], key: str, default: int) -> int:
    value = kwargs.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"tracemalloc: {key} must be an integer >= 1; got {value!r}")
    return value
