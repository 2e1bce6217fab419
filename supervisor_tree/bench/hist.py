"""A log-linear latency histogram (HDR-style) in integer nanoseconds.

Owns the bucketing, merging and percentile arithmetic of latency samples; it
never measures time itself and never prints.  Three significant digits: a
value is reported within 1/2048 (0.05 %) of the recorded one, from 1 ns up to
60 s (values below 2048 ns are kept exactly; larger ones are clamped to 60 s
and counted in ``saturated``).

    >>> h = Histogram()
    >>> h.record_many([70_000, 71_000, 97_000])      # ns
    >>> h.percentile(50)                              # ns
    71008
    >>> h.summary()["p50"]                            # µs
    71.008

Recording is cheap because it is deferred: ``record`` and ``record_many`` only
append to a pending list (C speed); the pending samples are counted with
``collections.Counter`` (C speed) and bucketed once per distinct value when a
figure is asked for, or when 1M samples are pending.  In a hot loop, append
the raw ``perf_counter_ns`` differences to a list of your own and hand it to
``record_many`` after the loop.

Bucket layout (HdrHistogram's, with 2048 sub-buckets): a value ``v`` with
``shift = max(0, v.bit_length() - 11)`` lands in bucket
``(shift << 10) + (v >> shift)``; that bucket spans ``2**shift`` ns starting at
``(v >> shift) << shift``, and ``v >> shift`` is at least 1024 whenever
``shift > 0``, hence the 1/1024 bucket width and the 1/2048 midpoint error.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable

__all__ = ["HIGHEST_NS", "LOWEST_DISCERNIBLE_NS", "Histogram"]

LOWEST_DISCERNIBLE_NS = 1
HIGHEST_NS = 60 * 1_000_000_000  # 60 s
_SUB_BITS = 11  # 2**11 = 2048 sub-buckets: 3 significant decimal digits
_HALF_BITS = _SUB_BITS - 1
_FLUSH_AT = 1 << 20  # pending samples bounded to about 8 MiB of list slots


def _index(v: int) -> int:
    shift = v.bit_length() - _SUB_BITS
    if shift <= 0:
        return v
    return (shift << _HALF_BITS) + (v >> shift)


def _bucket_low_and_width(index: int) -> tuple[int, int]:
    if index < (1 << _SUB_BITS):
        return index, 1
    shift = (index >> _HALF_BITS) - 1
    sub = index - (shift << _HALF_BITS)
    return sub << shift, 1 << shift


class Histogram:
    """Latency samples in integer nanoseconds, bucketed to 3 significant digits.

    ``percentile`` returns nanoseconds (int); ``summary`` returns microseconds
    (floats).  ``min``, ``max`` and ``mean`` are exact; percentiles are the
    midpoint of the bucket holding the sample of that rank, clamped to
    [min, max].  Rank follows HdrHistogram: the value at percentile p is the
    smallest recorded value with at least ``ceil(p/100 * count)`` samples at or
    below it.
    """

    __slots__ = ("_count", "_counts", "_max", "_min", "_pending", "_saturated", "_sum")

    def __init__(self) -> None:
        self._counts: dict[int, int] = {}  # bucket index -> samples
        self._pending: list[int] = []
        self._count = 0
        self._sum = 0
        self._min = 0
        self._max = 0
        self._saturated = 0

    # -- recording -----------------------------------------------------------------
    def record(self, ns: int) -> None:
        """Record one sample (ns >= 0).  Validated when the pending samples are bucketed."""
        pending = self._pending
        pending.append(ns)
        if len(pending) >= _FLUSH_AT:
            self._flush()

    def record_many(self, samples: Iterable[int]) -> None:
        """Record many samples at once (the fast path: one C-level extend)."""
        self._pending.extend(samples)
        if len(self._pending) >= _FLUSH_AT:
            self._flush()

    def merge(self, other: Histogram) -> Histogram:
        """Add every sample of `other` to this histogram; returns self."""
        other._flush()
        self._flush()
        if not other._count:
            return self
        counts = self._counts
        for index, n in other._counts.items():
            counts[index] = counts.get(index, 0) + n
        self._min = other._min if not self._count else min(self._min, other._min)
        self._max = max(self._max, other._max)
        self._count += other._count
        self._sum += other._sum
        self._saturated += other._saturated
        return self

    @classmethod
    def merged(cls, histograms: Iterable[Histogram]) -> Histogram:
        total = cls()
        for h in histograms:
            total.merge(h)
        return total

    def _flush(self) -> None:
        pending = self._pending
        if not pending:
            return
        self._pending = []
        low, high = min(pending), max(pending)
        if not isinstance(low, int) or not isinstance(high, int) or low < 0:
            bad = next(v for v in pending if not isinstance(v, int) or v < 0)
            raise ValueError(f"histogram samples are integer nanoseconds >= 0; got {bad!r}")
        if high > HIGHEST_NS:
            self._saturated += sum(1 for v in pending if v > HIGHEST_NS)
            pending = [min(v, HIGHEST_NS) for v in pending]
            high = HIGHEST_NS
        self._min = low if not self._count else min(self._min, low)
        self._max = max(self._max, high)
        self._count += len(pending)
        self._sum += sum(pending)
        counts = self._counts
        get = counts.get
        try:
            for v, n in Counter(pending).items():
                shift = v.bit_length() - _SUB_BITS
                i = v if shift <= 0 else (shift << _HALF_BITS) + (v >> shift)
                counts[i] = get(i, 0) + n
        except AttributeError:  # a float (or other non-int) between an int min and max
            bad = next(v for v in pending if not isinstance(v, int))
            raise ValueError(f"histogram samples are integer nanoseconds >= 0; got {bad!r}") from None

    # -- reading -------------------------------------------------------------------
    @property
    def count(self) -> int:
        return self._count + len(self._pending)

    @property
    def saturated(self) -> int:
        """Samples above HIGHEST_NS (60 s), recorded as HIGHEST_NS."""
        self._flush()
        return self._saturated

    def percentile(self, p: float) -> int:
        """The value (ns) at percentile `p` in [0, 100]; 0 when empty."""
        return self.percentiles([p])[0]

    def percentiles(self, ps: Iterable[float]) -> list[int]:
        """Several percentiles (ns) in one walk over the buckets, in the order given."""
        wanted = list(ps)
        for p in wanted:
            if not 0.0 <= p <= 100.0:
                raise ValueError(f"percentile must be within [0, 100]; got {p!r}")
        self._flush()
        if not self._count:
            return [0 for _ in wanted]
        # The 1e-9 keeps 99.9/100 * 1000 (= 999.0000000000001 in floats) at rank 999.
        ranks = [max(1, math.ceil(p * self._count / 100.0 - 1e-9)) for p in wanted]
        order = sorted(range(len(wanted)), key=ranks.__getitem__)
        out = [0] * len(wanted)
        k = 0
        seen = 0
        for index in sorted(self._counts):
            seen += self._counts[index]
            while k < len(order) and ranks[order[k]] <= seen:
                out[order[k]] = self._value_of(index)
                k += 1
            if k == len(order):
                break
        return out

    def _value_of(self, index: int) -> int:
        low, width = _bucket_low_and_width(index)
        return min(max(low + width // 2, self._min), self._max)

    def summary(self) -> dict[str, float | int]:
        """count, min, p50, p95, p99, p999, max, mean; every figure but count in µs."""
        p50, p95, p99, p999 = self.percentiles([50, 95, 99, 99.9])
        self._flush()
        mean = self._sum / self._count if self._count else 0.0
        us = 1000.0
        return {
            "count": self._count,
            "min": round(self._min / us, 3),
            "p50": round(p50 / us, 3),
            "p95": round(p95 / us, 3),
            "p99": round(p99 / us, 3),
            "p999": round(p999 / us, 3),
            "max": round(self._max / us, 3),
            "mean": round(mean / us, 3),
        }

    def __repr__(self) -> str:
        s = self.summary()
        return f"Histogram(count={s['count']}, p50={s['p50']} µs, p99={s['p99']} µs, max={s['max']} µs)"
