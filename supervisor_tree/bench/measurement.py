"""Measurements: one benchmark figure with its repeats, spread, latency and reference.

Owns the records a workload returns and the arithmetic that turns per-repeat
trials into them (median, spread, merged latency histogram, ratio to a
reference).  It never times anything, starts a process or prints.

    >>> trials = [Trial(ops=1000, seconds=s) for s in (0.010, 0.011, 0.009, 0.010, 0.012)]
    >>> m = measure_throughput("push_pull", trials, unit="msg/s")
    >>> m.value, m.repeats, round(m.spread_pct, 1)
    (100000.0, 5, 27.8)

Direction: ``better`` says whether a higher or a lower value is the good one.
A throughput is HIGHER-better; a latency is LOWER-better, and its ``value`` is
the median of the per-repeat p50s while the regression check looks at p99.
``ratio`` is always ours / reference, so it reads the same way as the value.
"""

from __future__ import annotations

import enum
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar

from supervisor_tree.bench.hist import Histogram

__all__ = [
    "Better",
    "LatencySummary",
    "Measurement",
    "Reference",
    "Role",
    "Status",
    "Trial",
    "measure_latency",
    "measure_throughput",
    "relative_spread_pct",
    "run_repeats",
]

T = TypeVar("T")


class Better(enum.Enum):
    HIGHER = "higher"  # throughputs
    LOWER = "lower"  # latencies, durations


class Role(enum.Enum):
    OURS = "ours"  # a figure of the project's code: the regression check can fail on it
    REFERENCE = "reference"  # a figure of the machine (raw pyzmq): reported, never failed on


class Status(enum.Enum):
    MEETS = "meets"
    BELOW = "below"
    NO_TARGET = "-"


def relative_spread_pct(values: Sequence[float]) -> float:
    """(max - min) / median, in percent: the noise across repeats (0 for one repeat)."""
    if len(values) < 2:
        return 0.0
    mid = statistics.median(values)
    return 0.0 if mid == 0 else (max(values) - min(values)) / abs(mid) * 100.0


def _float(x: object, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise ValueError(f"{what} must be a number; got {x!r}")
    return float(x)


def _opt_float(x: object, what: str) -> float | None:
    return None if x is None else _float(x, what)


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Percentiles from every sample of every repeat (merged histogram), in µs.

    ``p99_per_repeat`` keeps each repeat's own p99 so a regression check can
    tell how noisy the p99 is.
    """

    count: int
    min: float
    p50: float
    p95: float
    p99: float
    p999: float
    max: float
    mean: float
    p99_per_repeat: tuple[float, ...] = ()

    @classmethod
    def from_histograms(cls, per_repeat: Sequence[Histogram]) -> LatencySummary:
        p99s = tuple(round(h.percentile(99) / 1000.0, 3) for h in per_repeat)
        merged = Histogram.merged(per_repeat)
        s = merged.summary()
        return cls(
            count=int(s["count"]),
            min=float(s["min"]),
            p50=float(s["p50"]),
            p95=float(s["p95"]),
            p99=float(s["p99"]),
            p999=float(s["p999"]),
            max=float(s["max"]),
            mean=float(s["mean"]),
            p99_per_repeat=p99s,
        )

    @property
    def p99_spread_pct(self) -> float:
        return relative_spread_pct(self.p99_per_repeat)

    def to_dict(self) -> dict[str, object]:
        return {
            "count": self.count,
            "min": self.min,
            "p50": self.p50,
            "p95": self.p95,
            "p99": self.p99,
            "p999": self.p999,
            "max": self.max,
            "mean": self.mean,
            "p99_per_repeat": list(self.p99_per_repeat),
            "p99_spread_pct": round(self.p99_spread_pct, 2),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> LatencySummary:
        def num(key: str) -> float:
            return _float(d.get(key), f"latency.{key}")

        p99s = d.get("p99_per_repeat", [])
        if not isinstance(p99s, list):
            raise ValueError(f"latency.p99_per_repeat must be a list; got {p99s!r}")
        return cls(
            count=int(num("count")),
            min=num("min"),
            p50=num("p50"),
            p95=num("p95"),
            p99=num("p99"),
            p999=num("p999"),
            max=num("max"),
            mean=num("mean"),
            p99_per_repeat=tuple(_float(x, "latency.p99_per_repeat") for x in p99s),
        )


@dataclass(frozen=True, slots=True)
class Reference:
    """The figure ours is compared with, measured in the same run (e.g. raw pyzmq)."""

    name: str
    value: float
    spread_pct: float = 0.0
    p99_us: float | None = None
    p99_spread_pct: float | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "value": self.value,
            "spread_pct": round(self.spread_pct, 2),
            "p99_us": self.p99_us,
            "p99_spread_pct": None if self.p99_spread_pct is None else round(self.p99_spread_pct, 2),
        }


@dataclass(frozen=True, slots=True)
class Measurement:
    """One figure: the median of `values` (one per repeat), in `unit`.

    `target` applies to `value` in the direction of `better`; `p99_target_us`
    to the latency p99 (the seed's quality gate is p99 < 5 ms).
    """

    name: str
    unit: str
    value: float
    values: tuple[float, ...]
    better: Better = Better.HIGHER
    latency: LatencySummary | None = None
    reference: Reference | None = None
    target: float | None = None
    p99_target_us: float | None = None
    note: str = ""
    role: Role = Role.OURS
    extra: Mapping[str, object] = field(default_factory=dict)

    @classmethod
    def from_values(cls, name: str, unit: str, values: Iterable[float], **kw: object) -> Measurement:
        vals = tuple(float(v) for v in values)
        if not vals:
            raise ValueError(f"measurement {name!r} needs at least one repeat; got none")
        return cls(name=name, unit=unit, value=statistics.median(vals), values=vals, **kw)  # type: ignore[arg-type]

    # -- derived ---------------------------------------------------------------------
    @property
    def repeats(self) -> int:
        return len(self.values)

    @property
    def min(self) -> float:
        return min(self.values)

    @property
    def max(self) -> float:
        return max(self.values)

    @property
    def spread_pct(self) -> float:
        return relative_spread_pct(self.values)

    @property
    def ratio(self) -> float | None:
        """ours / reference (None without a reference)."""
        if self.reference is None or self.reference.value == 0:
            return None
        return self.value / self.reference.value

    @property
    def status(self) -> Status:
        checks: list[bool] = []
        if self.target is not None:
            ok = self.value >= self.target if self.better is Better.HIGHER else self.value <= self.target
            checks.append(ok)
        if self.p99_target_us is not None and self.latency is not None:
            checks.append(self.latency.p99 <= self.p99_target_us)
        if not checks:
            return Status.NO_TARGET
        return Status.MEETS if all(checks) else Status.BELOW

    def compared_to(self, ref: Measurement) -> Measurement:
        """This measurement with `ref` (measured in the same run) as its reference."""
        return replace(
            self,
            reference=Reference(
                name=ref.name,
                value=ref.value,
                spread_pct=ref.spread_pct,
                p99_us=None if ref.latency is None else ref.latency.p99,
                p99_spread_pct=None if ref.latency is None else ref.latency.p99_spread_pct,
            ),
        )

    # -- JSON ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, object]:
        ratio = self.ratio
        return {
            "name": self.name,
            "unit": self.unit,
            "better": self.better.value,
            "value": self.value,
            "values": list(self.values),
            "repeats": self.repeats,
            "min": self.min,
            "max": self.max,
            "spread_pct": round(self.spread_pct, 2),
            "latency_us": None if self.latency is None else self.latency.to_dict(),
            "reference": None if self.reference is None else self.reference.to_dict(),
            "ratio": None if ratio is None else round(ratio, 4),
            "target": self.target,
            "p99_target_us": self.p99_target_us,
            "status": self.status.value,
            "note": self.note,
            "role": self.role.value,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> Measurement:
        """Inverse of to_dict (derived fields such as ratio and spread are recomputed)."""
        values = d.get("values")
        if not isinstance(values, list) or not values:
            raise ValueError(f"measurement {d.get('name')!r}: values must be a non-empty list")
        name = str(d["name"])
        lat = d.get("latency_us")
        ref = d.get("reference")
        reference = None
        if isinstance(ref, Mapping):
            reference = Reference(
                name=str(ref["name"]),
                value=_float(ref.get("value"), f"{name}: reference.value"),
                spread_pct=_float(ref.get("spread_pct", 0.0), f"{name}: reference.spread_pct"),
                p99_us=_opt_float(ref.get("p99_us"), f"{name}: reference.p99_us"),
                p99_spread_pct=_opt_float(ref.get("p99_spread_pct"), f"{name}: reference.p99_spread_pct"),
            )
        extra = d.get("extra")
        return cls(
            name=name,
            unit=str(d["unit"]),
            value=_float(d.get("value"), f"{name}: value"),
            values=tuple(_float(v, f"{name}: values") for v in values),
            better=Better(d.get("better", "higher")),
            latency=LatencySummary.from_dict(lat) if isinstance(lat, Mapping) else None,
            reference=reference,
            target=_opt_float(d.get("target"), f"{name}: target"),
            p99_target_us=_opt_float(d.get("p99_target_us"), f"{name}: p99_target_us"),
            note=str(d.get("note") or ""),
            role=Role(d.get("role", "ours")),
            extra=dict(extra) if isinstance(extra, Mapping) else {},
        )


@dataclass(frozen=True, slots=True)
class Trial:
    """One repeat: `ops` operations completed in `seconds` (wall clock), and their latencies."""

    ops: int
    seconds: float
    latencies: Histogram | None = None

    @property
    def rate(self) -> float:
        return self.ops / self.seconds if self.seconds > 0 else 0.0


def measure_throughput(name: str, trials: Sequence[Trial], unit: str = "ops/s", **kw: object) -> Measurement:
    """Median ops/s over the trials; latencies merged from every trial that has some."""
    hists = [t.latencies for t in trials if t.latencies is not None]
    latency = LatencySummary.from_histograms(hists) if hists else None
    return Measurement.from_values(name, unit, (t.rate for t in trials), latency=latency, **kw)


def measure_latency(name: str, trials: Sequence[Trial], **kw: object) -> Measurement:
    """Median of the per-repeat p50s (µs), LOWER-better, with the merged percentiles."""
    hists = [t.latencies for t in trials]
    if not hists or any(h is None for h in hists):
        raise ValueError(f"measure_latency({name!r}) needs a histogram in every trial")
    p50s = [h.percentile(50) / 1000.0 for h in hists if h is not None]
    latency = LatencySummary.from_histograms([h for h in hists if h is not None])
    return Measurement.from_values(name, "µs", p50s, better=Better.LOWER, latency=latency, **kw)


def run_repeats(
    fn: Callable[[], T],
    repeats: int = 5,
    warmup: int = 1,
    progress: object | None = None,
    label: str = "repeats",
) -> list[T]:
    """Call `fn` warmup + repeats times; return the `repeats` results after the warm-up.

    `progress` is a ``BenchProgress`` (or anything with its ``task`` method); one
    step per call.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0; got repeats={repeats}, warmup={warmup}")
    task = getattr(progress, "task", None)
    if task is None:
        for _ in range(warmup):
            fn()
        return [fn() for _ in range(repeats)]
    results: list[T] = []
    with task(label, total=warmup + repeats) as advance:
        for _ in range(warmup):
            fn()
            advance()
        for _ in range(repeats):
            results.append(fn())
            advance()
    return results
