"""The latency histogram against exact percentiles of sorted data."""

from __future__ import annotations

import math
import random

import pytest

from supervisor_tree.bench.hist import HIGHEST_NS, Histogram, _bucket_low_and_width, _index

PERCENTILES = (0, 1, 10, 25, 50, 75, 90, 95, 99, 99.9, 99.99, 100)


def exact(sorted_values: list[int], p: float) -> int:
    """HdrHistogram's definition: the smallest value with >= ceil(p% of n) samples at or below it."""
    rank = max(1, math.ceil(p * len(sorted_values) / 100.0 - 1e-9))
    return sorted_values[rank - 1]


def distributions() -> dict[str, list[int]]:
    rng = random.Random(20260101)
    return {
        "uniform 1µs..10ms": [rng.randrange(1_000, 10_000_000) for _ in range(50_000)],
        "lognormal round trips": [int(rng.lognormvariate(11.2, 0.4)) for _ in range(50_000)],
        "pareto tail": [min(HIGHEST_NS, int(50_000 * rng.paretovariate(1.2))) for _ in range(50_000)],
        "seconds": [rng.randrange(1_000_000_000, HIGHEST_NS) for _ in range(20_000)],
        "few samples": [rng.randrange(1_000, 5_000_000) for _ in range(7)],
    }


@pytest.mark.parametrize("name", list(distributions()))
def test_percentiles_are_within_0_1_percent_of_exact(name: str) -> None:
    data = distributions()[name]
    h = Histogram()
    h.record_many(data)
    s = sorted(data)
    for p in PERCENTILES:
        want = exact(s, p)
        got = h.percentile(p)
        assert abs(got - want) <= want * 0.001, (name, p, got, want)


def test_small_values_are_exact() -> None:
    data = list(range(2048)) * 3
    h = Histogram()
    h.record_many(data)
    s = sorted(data)
    for p in PERCENTILES:
        assert h.percentile(p) == exact(s, p)


def test_summary_fields_in_microseconds_and_exact_min_max_mean() -> None:
    data = [70_000, 71_000, 97_000, 2_000_000]
    h = Histogram()
    h.record_many(data)
    s = h.summary()
    assert list(s) == ["count", "min", "p50", "p95", "p99", "p999", "max", "mean"]
    assert s["count"] == 4
    assert s["min"] == 70.0 and s["max"] == 2000.0
    assert s["mean"] == pytest.approx(sum(data) / len(data) / 1000, abs=0.001)
    assert s["p50"] == pytest.approx(71.0, rel=0.001)


def test_empty_histogram_reports_zeros() -> None:
    h = Histogram()
    assert h.count == 0
    assert h.percentile(99) == 0
    assert h.summary() == {
        "count": 0,
        "min": 0.0,
        "p50": 0.0,
        "p95": 0.0,
        "p99": 0.0,
        "p999": 0.0,
        "max": 0.0,
        "mean": 0.0,
    }


def test_record_and_record_many_agree() -> None:
    rng = random.Random(7)
    data = [rng.randrange(1_000, 50_000_000) for _ in range(5_000)]
    one, many = Histogram(), Histogram()
    for v in data:
        one.record(v)
    many.record_many(iter(data))  # any iterable
    assert one.summary() == many.summary()


def test_merge_equals_recording_everything_in_one() -> None:
    rng = random.Random(11)
    parts = [[rng.randrange(1_000, 20_000_000) for _ in range(3_000)] for _ in range(4)]
    hists = []
    for part in parts:
        h = Histogram()
        h.record_many(part)
        hists.append(h)
    everything = Histogram()
    everything.record_many(v for part in parts for v in part)

    merged = Histogram()
    for h in hists:
        merged.merge(h)
    assert merged.summary() == everything.summary()
    assert Histogram.merged(hists).summary() == everything.summary()
    assert hists[0].count == 3_000  # merging leaves the sources alone


def test_merge_with_empty_on_either_side() -> None:
    h = Histogram()
    h.record_many([5_000, 6_000])
    before = h.summary()
    assert h.merge(Histogram()).summary() == before
    assert Histogram().merge(h).summary() == before


def test_values_above_60_s_are_clamped_and_counted() -> None:
    h = Histogram()
    h.record_many([1_000, HIGHEST_NS * 2])
    assert h.saturated == 1
    assert h.percentile(100) == HIGHEST_NS


@pytest.mark.parametrize("bad", [-1, 1.5, "3"])
def test_bad_samples_are_rejected_by_name(bad: object) -> None:
    h = Histogram()
    h.record_many([1_000, bad, 3_000])  # type: ignore[list-item]
    with pytest.raises((ValueError, TypeError)):
        h.summary()


def test_percentile_outside_0_100_is_an_error() -> None:
    h = Histogram()
    h.record(1_000)
    with pytest.raises(ValueError, match="within"):
        h.percentile(101)


def test_bucket_layout_covers_each_value_within_1_in_1024() -> None:
    rng = random.Random(3)
    values = [*range(5000), *(rng.randrange(1, HIGHEST_NS) for _ in range(20_000)), HIGHEST_NS]
    for v in values:
        low, width = _bucket_low_and_width(_index(v))
        assert low <= v < low + width
        assert width == 1 or width / low <= 1 / 1024
