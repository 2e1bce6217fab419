"""The `sustained` workload: a tiny duration on a real node; structure and sanity, never speed."""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from bench_trees import recorded_trees

from supervisor_tree.bench import _tree, sustained
from supervisor_tree.bench.harness import BenchContext, BenchProgress, Better, Histogram, registry
from supervisor_tree.bench.measurement import Measurement, Role
from supervisor_tree.config.load import parse_config


@pytest.fixture
def trees(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[_tree.BenchTree]]:
    yield from recorded_trees(monkeypatch, sustained)


def tiny_context(run_dir: Path, duration: float = 3.0) -> BenchContext:
    return BenchContext(quick=True, repeats=2, warmup=0, duration=duration, progress=BenchProgress(enabled=False),
                        run_dir=run_dir)


@pytest.mark.slow
def test_a_short_run_measures_everything_and_leaves_nothing(trees: list[_tree.BenchTree]) -> None:
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with tempfile.TemporaryDirectory(prefix="stbs-", dir="/tmp") as scratch:
        measurements = sustained.sustained_workload(tiny_context(Path(scratch)))
    left = [p for p in psutil.Process().children(recursive=True)
            if p.pid not in before and p.status() != psutil.STATUS_ZOMBIE]
    assert left == [], f"processes left behind: {left}"
    assert len(trees) == 1
    by_name = {m.name: m for m in measurements}
    for name in ("sustained_items", "sustained_requests", "sustained_request_latency"):
        m = by_name[name]
        assert m.role is Role.OURS
        assert m.value > 0 and all(v > 0 for v in m.values), name
        assert m.reference is not None and m.reference.value > 0, name
        assert m.ratio is not None and m.ratio > 0, name
        assert m.latency is not None and m.latency.count > 0
        assert 0 < m.latency.p50 <= m.latency.p95 <= m.latency.p99 <= m.latency.p999 <= m.latency.max
        json.dumps(m.to_dict())
    items = by_name["sustained_items"]
    assert items.target == sustained.TARGET_MSGS and items.reference is not None
    assert items.reference.name == "push_pull_batch100_64B"
    per_kind = items.extra["per_kind"]
    assert isinstance(per_kind, dict) and set(per_kind) == set(sustained.KINDS)
    assert all(k["items"] > 0 and k["requests"] > 0 for k in per_kind.values())
    assert by_name["sustained_requests"].p99_target_us == sustained.P99_TARGET_US
    for name in ("memory_growth_worst_process", "memory_growth_total"):
        m = by_name[name]
        assert m.unit == "MiB/min" and m.better is Better.LOWER
        assert m.target is None and "not judged" in m.note  # a short run: the gate needs MEMORY_JUDGED_S
        assert math.isfinite(m.value), name
        json.dumps(m.to_dict())
    mem = by_name["memory_growth_worst_process"].extra
    slopes = mem["slopes_mib_per_min"]
    assert isinstance(slopes, dict) and len(slopes) >= 3  # node, fork server, workers
    assert all(math.isfinite(v) for v in slopes.values())
    rss = mem["rss"]
    assert isinstance(rss, dict) and len(rss["t_s"]) >= 4
    assert [m.name for m in measurements if m.role is Role.REFERENCE] == ["push_pull_batch100_64B",
                                                                        "push_pull_roundtrip_64B"]


def test_sustained_is_a_registered_quick_workload() -> None:
    wl = registry()["sustained"]
    assert wl.quick and wl.fn is sustained.sustained_workload


def test_the_duration_follows_the_mode_and_the_option() -> None:
    run_dir = Path("/tmp")
    assert sustained.duration_of(tiny_context(run_dir, 5.0)) == sustained.QUICK_S  # the harness's default
    full = BenchContext(quick=False, repeats=5, warmup=1, duration=30.0, progress=BenchProgress(enabled=False),
                        run_dir=run_dir)
    assert sustained.duration_of(full) == sustained.DEFAULT_S
    assert sustained.duration_of(tiny_context(run_dir, 1800.0)) == 1800.0
    with pytest.raises(Exception, match="duration"):
        sustained.duration_of(tiny_context(run_dir, 0.1))


def test_the_slope_is_a_least_squares_fit_in_mib_per_minute() -> None:
    mib = 1024 * 1024
    points = [(t, 100 * mib + t * mib / 60) for t in range(0, 61, 5)]  # 1 MiB per minute
    assert sustained.fit_slope_mib_per_min(points) == pytest.approx(1.0)
    flat = [(t, 5.0 * mib + (1 if t % 2 else -1)) for t in range(10)]
    assert abs(sustained.fit_slope_mib_per_min(flat)) < 1e-3
    assert math.isnan(sustained.fit_slope_mib_per_min([(1.0, 2.0)]))


def test_the_tree_config_is_core_ops_with_a_sink_per_loader() -> None:
    cfg = parse_config(sustained.TREE_CONFIG, check_imports=False)
    ids = [c.id for c in cfg.tree.children]
    assert set(sustained.SINKS) <= set(ids) and set(sustained.QUEUES) <= set(ids)
    assert {"registry", "sessions", "pool_sup"} <= set(ids)
    assert len(sustained.SINKS) >= sustained.LOADERS and len(sustained.QUEUES) >= sustained.LOADERS


@pytest.mark.parametrize(("duration", "judged"), [(10.0, False), (sustained.MEMORY_JUDGED_S, True)])
def test_the_memory_gate_judges_only_runs_long_enough(duration: float, judged: bool) -> None:
    """A 10 s run's slope is mostly warm-up: printed, not judged; a run of MEMORY_JUDGED_S is judged."""
    report = sustained.LoadReport(0, t_start=0, t_end=int(duration * 1e9), iterations=1)
    for kind in sustained.KINDS:
        report.items[kind], report.requests[kind] = 100, 1
        report.hists[kind].record(100_000)
    sampler = sustained.RssSampler(psutil.Process().pid)  # samples given below, as sample() would take them
    sampler.samples = [(t, {1: 40 * 2**20 + int(t) * 4096, 2: 30 * 2**20}) for t in range(int(duration) + 1)]
    sampler.labels = {1: "node", 2: "worker"}
    ref_items = Measurement.from_values("push_pull_batch100_64B", "msg/s", [1e6], role=Role.REFERENCE)
    rt_hist = Histogram()
    rt_hist.record(50_000)
    ref_rt = Measurement.from_values("push_pull_roundtrip_64B", "req/s", [1e4], role=Role.REFERENCE,
                                     latency=sustained._summary([rt_hist]))
    by_name = {m.name: m for m in sustained._figures(duration, [report], sampler, ref_items, ref_rt)}
    for name in ("memory_growth_worst_process", "memory_growth_total"):
        m = by_name[name]
        assert m.value == pytest.approx(4096 * 60 / 2**20, rel=0.01)  # the node's 4 KiB a second
        assert (m.target == sustained.MEMORY_TARGET) is judged and (m.target is None) is (not judged)
        assert ("not judged" in m.note) is (not judged)
