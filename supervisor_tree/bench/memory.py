"""Memory over time: RSS of a node and every process under it, and the least-squares slope of a series.

    sampler = RssSampler(node_pid)
    sampler.sample()                       # once a second, say
    fit_slope_mib_per_min([(t, rss_bytes), ...])   # MiB/min; nan below 2 distinct times

The sustained workload's memory gate (the seed's < 1 MiB/min) is measured with these.
"""

from __future__ import annotations

import math
import time

import psutil

from supervisor_tree.bench._tree import role_of

__all__ = ["MIB", "RssSampler", "fit_slope_mib_per_min"]

MIB = 1024 * 1024


def fit_slope_mib_per_min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, bytes) points, in MiB/min; nan below 2 distinct times."""
    n = len(points)
    if n < 2:
        return math.nan
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    if var == 0:
        return math.nan
    cov = sum((t - mt) * (v - mv) for t, v in points)
    return cov / var * 60.0 / MIB


class RssSampler:
    """RSS of the node and all its descendants, one sample per call."""

    def __init__(self, node_pid: int) -> None:
        self.node = psutil.Process(node_pid)
        self.t0 = time.monotonic()
        self.samples: list[tuple[float, dict[int, int]]] = []
        self.labels: dict[int, str] = {}

    def _label(self, p: psutil.Process) -> str:
        if p.pid == self.node.pid:
            return "node"
        role = role_of(p)
        return {"fork-server": "fork_server", "standby": "standby", None: "?"}.get(role, "worker")

    def name_workers(self, run_dir: str, ids: tuple[str, ...]) -> None:
        """Label the processes of the workers `ids` by their id (asked of the node; best effort).
        Called after the load processes have ended: this process may hold a ZeroMQ context then."""
        from supervisor_tree.client import Client

        try:
            with Client(run_dir, timeout=5.0) as c:
                for wid in ids:
                    try:
                        self.labels[int(c.resolve(wid, timeout=5.0).pid)] = wid
                    except Exception:  # noqa: BLE001 - a worker gone or restarted: it keeps its generic label
                        continue
        except Exception:  # noqa: BLE001 - cleanup, then re-raised or reported
            return

    def sample(self) -> None:
        rss: dict[int, int] = {}
        try:
            procs = [self.node, *self.node.children(recursive=True)]
        except psutil.Error:
            procs = []
        for p in procs:
            try:
                rss[p.pid] = int(p.memory_info().rss)
            except psutil.Error:
                continue
            if p.pid not in self.labels:
                self.labels[p.pid] = self._label(p)
        self.samples.append((time.monotonic() - self.t0, rss))

    def slopes(self, warmup_s: float) -> tuple[dict[str, float], float, int]:
        """(slope per process label, slope of the sum, samples used) after `warmup_s`."""
        kept = [(t, r) for t, r in self.samples if t >= warmup_s]
        per: dict[int, list[tuple[float, float]]] = {}
        for t, r in kept:
            for pid, v in r.items():
                per.setdefault(pid, []).append((t, float(v)))
        slopes = {f"{pid} {self.labels.get(pid, '?')}": fit_slope_mib_per_min(pts)
                  for pid, pts in per.items() if len(pts) >= 3}
        total = fit_slope_mib_per_min([(t, float(sum(r.values()))) for t, r in kept])
        return slopes, total, len(kept)

    def to_extra(self) -> dict[str, object]:
        return {
            "t_s": [round(t, 2) for t, _ in self.samples],
            "rss_mib": {f"{pid} {label}": [round(r.get(pid, 0) / MIB, 3) for _, r in self.samples]
                        for pid, label in self.labels.items()},
        }
