"""`supervise memwatch`: RSS per worker over time, a least-squares slope each, growth over a gate flagged.

Owns the series (one per incarnation: a restart starts a new series, so a crash that
frees memory is not read as a fall), the slopes (MiB/min, least squares over the whole
series), the tree's slope (the sum of its workers' current slopes) and the CSV
(the seed's "time, MiB per worker", one row per worker per sample).  Prints nothing.

    watch = Watch()
    for _ in range(12):
        watch.add(sampler.sample()); time.sleep(5)
    per_worker, tree = slopes_of(watch.current())
    [s.worker for s, slope in per_worker if slope and slope > 1.0]   # flagged

The seed's gate: memory growth < 1 MiB/min.  A slope needs `MIN_SAMPLES` samples
over at least `MIN_SPAN_S` seconds; before that it is None (not yet known).  A slope
over the gate is flagged only once the growth it stands for (slope x span) reaches
`NOISE_MIB`: RSS moves by whole pages, and over a few seconds a page or two reads as
MiB/min.  So a short window catches fast leaks only; slow ones need minutes.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

from supervisor_tree.observe.snapshot import Snapshot

__all__ = ["Series", "Watch", "slope_mib_per_min", "slopes_of", "over_gate", "CsvSink", "allocation_sites",
           "MIN_SAMPLES", "MIN_SPAN_S", "NOISE_MIB"]

MIB = 2**20
MIN_SAMPLES = 4
MIN_SPAN_S = 2.0
NOISE_MIB = 0.25


def slope_mib_per_min(points: Sequence[tuple[float, int]]) -> float | None:
    """Least-squares slope of (seconds, bytes) points, in MiB per minute; None if too few."""
    n = len(points)
    if n < MIN_SAMPLES or points[-1][0] - points[0][0] < MIN_SPAN_S:
        return None
    mean_t = sum(t for t, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return None
    cov = sum((t - mean_t) * (y - mean_y) for t, y in points)
    return cov / var * 60.0 / MIB


@dataclass(slots=True)
class Series:
    """The RSS of one incarnation: (monotonic seconds, bytes) samples."""

    worker: str
    generation: int
    pid: int
    points: list[tuple[float, int]] = field(default_factory=list)
    max_points: int = 10_000

    def add(self, t: float, rss: int) -> None:
        self.points.append((t, rss))
        if len(self.points) > self.max_points:  # a long watch keeps every other old sample
            self.points = self.points[: self.max_points // 2 : 2] + self.points[self.max_points // 2 :]

    @property
    def slope(self) -> float | None:
        return slope_mib_per_min(self.points)

    @property
    def span_s(self) -> float:
        return self.points[-1][0] - self.points[0][0] if self.points else 0.0

    @property
    def last_mib(self) -> float | None:
        return self.points[-1][1] / MIB if self.points else None


class Watch:
    """Every series seen, by (worker, generation); `current()` holds the newest incarnation of each."""

    def __init__(self) -> None:
        self.series: dict[tuple[str, int], Series] = {}
        self._newest: dict[str, tuple[str, int]] = {}

    def add(self, snap: Snapshot, now: float | None = None) -> list[tuple[Series, int]]:
        """Record a snapshot's RSS figures; returns the (series, bytes) added."""
        t = time.monotonic() if now is None else now
        added = []
        for w in snap.workers:
            if w.rss is None or w.pid is None or w.generation is None:
                continue
            key = (w.id, w.generation)
            s = self.series.get(key)
            if s is None:
                s = self.series[key] = Series(w.id, w.generation, w.pid)
                self._newest[w.id] = key
            s.add(t, w.rss)
            added.append((s, w.rss))
        return added

    def current(self) -> list[Series]:
        return [self.series[k] for k in self._newest.values()]

    def restarts(self, worker: str) -> int:
        return sum(1 for w, _ in self.series if w == worker) - 1


def slopes_of(series: Iterable[Series]) -> tuple[list[tuple[Series, float | None]], float | None]:
    """Each series' slope, and the tree's (the sum of those known; None if none is)."""
    per = [(s, s.slope) for s in series]
    known = [v for _, v in per if v is not None]
    return per, (sum(known) if known else None)


def over_gate(slope: float | None, span_s: float, gate: float) -> bool:
    """A slope past the gate that stands for more growth than page noise (`NOISE_MIB`)."""
    return slope is not None and slope > gate and slope * span_s / 60.0 >= NOISE_MIB


class CsvSink:
    """time, elapsed_s, worker, generation, pid, rss_mib: one row per worker per sample."""

    HEADER = ("time", "elapsed_s", "worker", "generation", "pid", "rss_mib")

    def __init__(self, f: TextIO) -> None:
        self._f = f
        self._w = csv.writer(f)
        self._w.writerow(self.HEADER)
        self._t0: float | None = None

    def write(self, at: float, rows: Iterable[tuple[Series, int]]) -> None:
        if self._t0 is None:
            self._t0 = at
        stamp = time.strftime("%H:%M:%S", time.localtime(at))
        for s, rss in rows:
            self._w.writerow((stamp, f"{at - self._t0:.1f}", s.worker, s.generation, s.pid, f"{rss / MIB:.3f}"))
        self._f.flush()


class SnapshotClient(Protocol):
    def control_worker(self, worker_id: str, op: str, kwargs: dict[str, object], timeout: float = 10.0) -> Any: ...


def allocation_sites(client: SnapshotClient, worker: str, duration: float = 10.0, top: int = 10) -> dict[str, Any]:
    """tracemalloc in `worker` for `duration` s: the allocation sites that grew most, largest first."""
    client.control_worker(worker, "tracemalloc", {"action": "start", "frames": 1})
    try:
        time.sleep(duration)  # the window the growth is measured over
        return dict(client.control_worker(worker, "tracemalloc", {"action": "report", "top": top}, timeout=60.0))
    except BaseException:
        try:
            client.control_worker(worker, "tracemalloc", {"action": "stop"})
        except Exception:  # noqa: BLE001 - it may have died: nothing to switch off then
            pass
        raise
