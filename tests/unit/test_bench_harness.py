"""The harness: registry, run, records, JSON files, table, progress, facts."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from supervisor_tree.bench import harness
from supervisor_tree.bench.facts import git_commit
from supervisor_tree.bench.harness import (
    BadResultFile,
    BenchContext,
    BenchProgress,
    Better,
    Histogram,
    Measurement,
    Result,
    Status,
    Trial,
    UnknownWorkload,
    load_result,
    measure_latency,
    measure_throughput,
    print_table,
    run,
    run_repeats,
    save_json,
    workload,
)


@pytest.fixture
def fake_workloads() -> Iterator[list[BenchContext]]:
    """Two workloads registered for the test only; yields the contexts they were given."""
    seen: list[BenchContext] = []

    @workload("t_fast", quick=True, description="fast one")
    def fast(ctx: BenchContext) -> list[Measurement]:
        seen.append(ctx)
        assert ctx.run_dir.is_dir()
        trials = ctx.repeat(lambda: Trial(ops=ctx.count(full=1000, quick=10), seconds=0.01), "t_fast")
        ours = measure_throughput("calls", trials, unit="req/s")
        ref = measure_throughput("raw", [Trial(2000, 0.01)] * ctx.repeats, unit="req/s")
        return [ours.compared_to(ref)]

    @workload("t_broken", quick=False)
    def broken(ctx: BenchContext) -> list[Measurement]:
        """Always fails."""
        raise RuntimeError("peer died")

    yield seen
    for name in ("t_fast", "t_broken"):
        harness._REGISTRY.pop(name, None)


def quiet() -> BenchProgress:
    return BenchProgress(enabled=False)


def test_run_records_measurements_and_facts(fake_workloads: list[BenchContext]) -> None:
    result = run(["t_fast"], quick=True, progress=quiet())
    (ctx,) = fake_workloads
    assert ctx.quick and ctx.repeats == 5 and ctx.warmup == 1
    assert not ctx.run_dir.exists()  # scratch removed afterwards
    (m,) = result.workloads["t_fast"].measurements
    assert m.value == pytest.approx(1000.0)  # 10 ops / 0.01 s
    assert m.repeats == 5
    assert m.ratio == pytest.approx(0.005)
    assert result.quick and result.repeats == 5
    assert {"cpu_model", "cores_logical", "memory_total_bytes", "kernel"} <= set(result.machine)
    assert {"python", "pyzmq", "libzmq", "supervisor_tree"} <= set(result.versions)
    assert result.started_at.endswith("Z")


def test_a_failing_workload_is_recorded_and_the_run_goes_on(fake_workloads: list[BenchContext]) -> None:
    result = run(["t_broken", "t_fast"], progress=quiet())
    assert result.failed == ["t_broken"]
    assert result.workloads["t_broken"].error == "RuntimeError: peer died"
    assert result.workloads["t_broken"].description == "Always fails."
    assert result.workloads["t_fast"].measurements


def test_quick_run_without_names_selects_quick_workloads(fake_workloads: list[BenchContext]) -> None:
    names = [w.name for w in harness.select(None, quick=True)]
    assert "t_fast" in names and "t_broken" not in names
    assert "t_broken" in [w.name for w in harness.select(None, quick=False)]


def test_unknown_workload_names_the_close_one(fake_workloads: list[BenchContext]) -> None:
    with pytest.raises(UnknownWorkload, match='did you mean "t_fast"'):
        run(["t_fats"], progress=quiet())


def test_registering_two_functions_under_one_name_is_an_error(fake_workloads: list[BenchContext]) -> None:
    with pytest.raises(ValueError, match="twice"):
        workload("t_fast")(lambda ctx: [])


def test_run_repeats_discards_warmup() -> None:
    calls = iter(range(100))
    assert run_repeats(lambda: next(calls), repeats=5, warmup=2) == [2, 3, 4, 5, 6]
    with pytest.raises(ValueError):
        run_repeats(lambda: 0, repeats=0)


def test_measurement_median_spread_and_status() -> None:
    m = Measurement.from_values("x", "req/s", [90, 100, 110, 95, 105], target=95.0)
    assert m.value == 100 and m.min == 90 and m.max == 110
    assert m.spread_pct == pytest.approx(20.0)
    assert m.status is Status.MEETS
    assert Measurement.from_values("x", "req/s", [90], target=95.0).status is Status.BELOW
    slow = Measurement.from_values("r", "ms", [2.0], better=Better.LOWER, target=1.0)
    assert slow.status is Status.BELOW
    assert Measurement.from_values("x", "req/s", [1]).status is Status.NO_TARGET


def test_latency_measurement_from_histograms() -> None:
    trials = []
    for base in (100_000, 110_000, 90_000, 100_000, 105_000):
        h = Histogram()
        h.record_many([base] * 98 + [base * 3, base * 4])
        trials.append(Trial(100, 0.1, h))
    m = measure_latency("rtt", trials, p99_target_us=500.0)
    assert m.unit == "µs" and m.better is Better.LOWER
    assert m.value == pytest.approx(100.0, rel=0.001)  # median of per-repeat p50s
    assert m.latency is not None and m.latency.count == 500
    assert len(m.latency.p99_per_repeat) == 5
    assert m.status is Status.MEETS


def make_result() -> Result:
    h = Histogram()
    h.record_many(range(50_000, 150_000, 7))
    ours = measure_throughput("call", [Trial(1000, 0.05, h)] * 5, unit="req/s", p99_target_us=5000.0)
    ref = measure_throughput("req_rep", [Trial(1000, 0.04, h)] * 5, unit="req/s")
    return Result(
        workloads={"call": harness.WorkloadResult((ours.compared_to(ref),), "calls", None, 1.5)},
        machine={"cpu_model": "x"},
        versions={"python": "3.11"},
        commit="abc123",
        started_at="2026-01-02T03:04:05Z",
        duration_s=2.0,
        quick=True,
    )


def test_json_round_trip_and_one_file_per_run(tmp_path: Path) -> None:
    result = make_result()
    p1 = save_json(result, tmp_path / "out")
    p2 = save_json(result, tmp_path / "out")
    assert p1 != p2 and p1.exists() and p2.exists()
    assert [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")] == []
    assert load_result(p1) == result
    data = json.loads(p1.read_text())
    assert data["schema"] == "supervisor_tree.bench/1"
    m = data["workloads"]["call"]["measurements"][0]
    assert m["ratio"] == pytest.approx(0.8)
    assert m["reference"]["name"] == "req_rep"
    assert set(m["latency_us"]) >= {"count", "min", "p50", "p95", "p99", "p999", "max", "mean"}


def test_load_result_rejects_foreign_files(tmp_path: Path) -> None:
    other = tmp_path / "other.json"
    other.write_text('{"hello": 1}')
    with pytest.raises(BadResultFile, match="other.json: not a supervisor_tree bench result"):
        load_result(other)
    with pytest.raises(BadResultFile, match="no such file"):
        load_result(tmp_path / "missing.json")


def test_table_shows_every_column() -> None:
    buf = io.StringIO()
    print_table(make_result(), Console(file=buf, width=200))
    text = buf.getvalue()
    for word in ("workload", "metric", "ours", "reference", "ratio", "p50 / p99", "target", "status"):
        assert word in text
    assert "0.80x" in text and "req_rep" in text and "meets" in text


def test_progress_without_a_terminal_prints_lines() -> None:
    buf = io.StringIO()
    with BenchProgress(Console(file=buf, width=100)) as progress:
        run_repeats(lambda: None, repeats=5, warmup=1, progress=progress, label="push_pull")
    assert "push_pull: 6/6" in buf.getvalue()


def test_git_commit_reads_files_and_tolerates_no_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SUPERVISOR_TREE_COMMIT", raising=False)
    monkeypatch.delenv("GITHUB_SHA", raising=False)
    repo = tmp_path / "repo"
    (repo / ".git" / "refs" / "heads").mkdir(parents=True)
    (repo / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (repo / ".git" / "packed-refs").write_text("# pack-refs\n" + "a" * 40 + " refs/heads/main\n")
    assert git_commit(repo / "sub") == "a" * 40
    (repo / ".git" / "refs" / "heads" / "main").write_text("b" * 40 + "\n")
    assert git_commit(repo) == "b" * 40
    lone = tmp_path / "lone"
    lone.mkdir()
    assert git_commit(lone) is None or git_commit(lone) != "b" * 40  # no .git up to / (or an unrelated one)
    monkeypatch.setenv("SUPERVISOR_TREE_COMMIT", "c" * 40)
    assert git_commit(lone) == "c" * 40
