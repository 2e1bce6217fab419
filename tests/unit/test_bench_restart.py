"""The `restart` workload: tiny counts, real nodes; structure and sanity, never speed."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from bench_trees import recorded_trees

from supervisor_tree.bench import _tree, restart
from supervisor_tree.bench.harness import (
    BenchContext,
    BenchError,
    BenchProgress,
    Better,
    Measurement,
    registry,
)
from supervisor_tree.bench.hist import Histogram
from supervisor_tree.bench.measurement import Role, Trial, measure_latency
from supervisor_tree.bench.restart_steps import STEPS
from supervisor_tree.config.load import parse_config

OURS = (
    "restart",
    "restart_one_for_all_10",
    "call_latency",
    "call_latency_vs_push_pull",
    "call_throughput",
    "call_throughput_vs_push_pull",
    "cast",
)


@pytest.fixture
def trees(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[_tree.BenchTree]]:
    yield from recorded_trees(monkeypatch, restart)


def tiny_context(run_dir: Path) -> BenchContext:
    return BenchContext(quick=True, repeats=2, warmup=0, duration=1.0, progress=BenchProgress(enabled=False),
                        run_dir=run_dir)


@pytest.mark.slow
def test_the_workload_measures_everything_beside_a_reference(trees: list[_tree.BenchTree]) -> None:
    with tempfile.TemporaryDirectory(prefix="stbt-", dir="/tmp") as scratch:
        counts = restart.Counts(kills=4, group_kills=2, calls=200, casts=1_000)
        measurements = restart.restart_workload(tiny_context(Path(scratch)), counts)
        assert list(Path(scratch).iterdir()) == [], "the workload left files in its scratch directory"
    by_name = {m.name: m for m in measurements}
    assert set(OURS) <= set(by_name)
    assert len(trees) == 3  # one node per measurement set: restart, one_for_all group, calls and casts
    for name in OURS:
        m = by_name[name]
        assert m.role is Role.OURS
        assert m.repeats == 2 and all(v > 0 for v in m.values), name
        assert m.reference is not None and m.reference.value > 0, name
        assert m.ratio is not None and m.ratio > 0, name
        json.dumps(m.to_dict())
    single, group = by_name["restart"], by_name["restart_one_for_all_10"]
    for m, kills in ((single, 4), (group, 2)):
        assert m.unit == "µs" and m.better is Better.LOWER
        assert m.latency is not None and m.latency.count == kills
        assert 0 < m.latency.min <= m.latency.p50 <= m.latency.p99 <= m.latency.max
        assert m.reference is not None and m.reference.name == "fork_ready"
        assert "standbys" in str(m.extra["standby"])
    assert single.target == restart.RESTART_TARGET_US and single.p99_target_us == restart.RESTART_P99_TARGET_US
    assert group.target == restart.GROUP_TARGET_US
    # where the restart's time went: one row per step, from the marks of the bench, the node and the worker
    steps = [m for m in measurements if m.name.startswith("restart: ")]
    assert [m.name.removeprefix("restart: ") for m in steps] == [name for name, _, _ in STEPS]
    for m in steps:
        assert m.unit == "µs" and m.better is Better.LOWER and m.latency is not None and m.latency.count == 4, m.name
    assert sum(m.latency.p50 for m in steps if m.latency) <= 2 * single.latency.max  # parts of the whole
    otp = next(m for m in measurements if m.name.startswith("otp_restart"))
    assert otp.role is Role.REFERENCE and otp.value == restart.OTP_RESTART_US
    call = by_name["call_latency"]
    assert call.latency is not None and call.latency.count == 2 * 200
    assert call.reference is not None and call.reference.name == "req_rep_64B_p50"
    assert call.target == pytest.approx(restart.CALL_P50_MAX_RATIO * call.reference.value)
    assert by_name["call_throughput"].unit == "req/s"
    cast = by_name["cast"]
    assert cast.unit == "msg/s" and cast.reference is not None and cast.reference.name == "push_pull_64B"
    assert cast.target == pytest.approx(restart.CAST_MIN_RATIO * cast.reference.value)


def test_restart_is_a_registered_quick_workload() -> None:
    wl = registry()["restart"]
    assert wl.quick
    assert wl.fn is restart.restart_workload


def test_counts_follow_the_mode() -> None:
    quick = restart.Counts.of(tiny_context(Path("/tmp")))
    assert quick.kills >= 50 and quick.group_kills >= 20


def test_generated_configs_are_valid_trees() -> None:
    single = parse_config(_tree.tree_toml(_tree.worker_toml("p")), check_imports=False)
    assert [c.id for c in single.tree.children] == ["p"]
    assert single.tree.intensity >= 100_000
    ids = [f"g{i}" for i in range(10)]
    grouped = parse_config(_tree.tree_toml(groups={"grp": [_tree.worker_toml(w) for w in ids]}), check_imports=False)
    (grp,) = grouped.tree.children
    assert grp.supervisor is not None and grp.supervisor.strategy.value == "one_for_all"
    assert [c.id for c in grp.supervisor.children] == ids


def test_the_group_tree_gets_a_standby_per_worker_and_one_more() -> None:
    """The node keeps as many pre-forked standbys as one restart starts workers, and one for a
    restart right after it (node/plan.py standby_for)."""
    from supervisor_tree.node.plan import STANDBY_MIN, standby_for

    single = parse_config(_tree.tree_toml(_tree.worker_toml("p")), check_imports=False)
    group = parse_config(_tree.tree_toml(groups={"grp": [_tree.worker_toml(f"g{i}") for i in range(10)]}),
                         check_imports=False)
    assert standby_for(single.tree) == STANDBY_MIN
    assert standby_for(group.tree) == 11


def test_a_node_that_cannot_start_leaves_nothing(trees: list[_tree.BenchTree]) -> None:
    broken = _tree.tree_toml(_tree.worker_toml("p", start="no_such_module_xyz:Nothing"))
    tree = restart.BenchTree(broken)
    with pytest.raises(BenchError, match="did not start"):
        with tree:
            pass


def test_rounds_of_a_reference_combine_into_one_figure() -> None:
    def one_round(samples_us: list[int]) -> Measurement:
        h = Histogram()
        h.record_many([s * 1000 for s in samples_us])
        return measure_latency("fork_ready", [Trial(len(samples_us), 0.01, h)], note="n", role=Role.REFERENCE)

    rounds = [one_round([100, 200, 300]), one_round([400, 500, 600]), one_round([10, 20, 30])]
    m = restart._combine(rounds, "alternating")
    assert m.role is Role.REFERENCE and m.repeats == 3
    assert m.values == pytest.approx((200, 500, 20), rel=1e-3)  # each round's p50, as the harness's repeats
    assert m.value == pytest.approx(200, rel=1e-3)
    assert m.latency is not None and m.latency.count == 9
    assert m.latency.min == pytest.approx(10, rel=1e-3) and m.latency.max == pytest.approx(600, rel=1e-3)
    assert len(m.latency.p99_per_repeat) == 3
    assert "alternating" in m.note
