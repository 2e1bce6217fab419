"""scripts/check_regression.py on synthetic result files, run as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from supervisor_tree.bench.harness import (
    Better,
    LatencySummary,
    Measurement,
    Result,
    WorkloadResult,
    save_json,
)
from supervisor_tree.bench.measurement import Role

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "check_regression.py"


def around(value: float, spread_pct: float) -> list[float]:
    """Five repeats with median `value` and (max - min) / median = spread_pct."""
    half = value * spread_pct / 200
    return [value - half, value - half / 2, value, value + half / 2, value + half]


def latency(p99: float, spread_pct: float = 2.0) -> LatencySummary:
    return LatencySummary(
        count=10_000,
        min=p99 / 3,
        p50=p99 / 2,
        p95=p99 * 0.8,
        p99=p99,
        p999=p99 * 1.5,
        max=p99 * 2,
        mean=p99 / 2,
        p99_per_repeat=tuple(around(p99, spread_pct)),
    )


def call(
    value: float = 20_000.0,
    spread: float = 2.0,
    p99: float | None = 100.0,
    ref: Measurement | None = None,
    role: Role = Role.OURS,
) -> Measurement:
    m = Measurement.from_values(
        "call_64B", "req/s", around(value, spread), latency=None if p99 is None else latency(p99), role=role
    )
    return m.compared_to(ref) if ref is not None else m


def raw_ref(value: float = 25_000.0, p99: float = 80.0) -> Measurement:
    return Measurement.from_values(
        "req_rep_64B", "req/s", around(value, 2.0), latency=latency(p99), role=Role.REFERENCE
    )


def write(tmp: Path, name: str, *measurements: Measurement, error: str | None = None) -> Path:
    result = Result(
        workloads={"call": WorkloadResult(tuple(measurements), "calls", error)},
        machine={"cpu_model": "test"},
        versions={"python": "3"},
        commit="0" * 40,
        started_at="2026-01-01T00:00:00Z",
        duration_s=1.0,
    )
    path = save_json(result, tmp / name)
    return path


def check(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)], check=False, capture_output=True, text=True, timeout=60
    )


def test_same_figures_pass(tmp_path: Path) -> None:
    a = write(tmp_path, "a", call())
    b = write(tmp_path, "b", call())
    r = check(a, b)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no regression" in r.stdout


def test_throughput_drop_beyond_threshold_fails(tmp_path: Path) -> None:
    a = write(tmp_path, "a", call(value=20_000))
    b = write(tmp_path, "b", call(value=15_000))  # -25%, noise 2%
    r = check(a, b)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "REGRESSION" in r.stdout or "worse by" in r.stdout
    assert "throughput" in r.stdout


def test_small_drop_within_threshold_passes(tmp_path: Path) -> None:
    a = write(tmp_path, "a", call(value=20_000))
    b = write(tmp_path, "b", call(value=19_000))  # -5% < 10% + 2%
    assert check(a, b).returncode == 0


def test_p99_rise_fails(tmp_path: Path) -> None:
    a = write(tmp_path, "a", call(p99=100.0))
    b = write(tmp_path, "b", call(p99=130.0))
    r = check(a, b)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "p99" in r.stdout


def test_lower_is_better_value_without_percentiles_fails_when_it_rises(tmp_path: Path) -> None:
    def restart(ms: float) -> Measurement:
        return Measurement.from_values("restart", "ms", around(ms, 2.0), better=Better.LOWER)

    assert check(write(tmp_path, "a", restart(1.0)), write(tmp_path, "b", restart(1.5))).returncode == 2
    assert check(write(tmp_path, "c", restart(1.0)), write(tmp_path, "d", restart(0.5))).returncode == 0


def test_noise_across_repeats_widens_the_tolerance(tmp_path: Path) -> None:
    a = write(tmp_path, "a", call(value=20_000, spread=2.0))
    b = write(tmp_path, "b", call(value=15_000, spread=40.0))  # -25% < 10% + 40%
    r = check(a, b)
    assert r.returncode == 0, r.stdout + r.stderr


def test_threshold_option(tmp_path: Path) -> None:
    a = write(tmp_path, "a", call(value=20_000))
    b = write(tmp_path, "b", call(value=15_000))
    assert check(a, b, "--threshold", "0.5").returncode == 0
    assert check(a, b, "--threshold", "0.05").returncode == 2


def test_ratio_to_reference_decides_when_both_runs_have_one(tmp_path: Path) -> None:
    # The machine got 25% slower: ours and raw pyzmq both dropped; the ratio did not.
    a = write(tmp_path, "a", call(value=20_000, p99=100, ref=raw_ref(25_000, 80)))
    b = write(tmp_path, "b", call(value=15_000, p99=133, ref=raw_ref(18_750, 106.4)))
    r = check(a, b)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ratio" in r.stdout

    # Same absolute figure, but raw pyzmq got faster in that run: ours fell behind it.
    c = write(tmp_path, "c", call(value=20_000, ref=raw_ref(25_000)))
    d = write(tmp_path, "d", call(value=20_000, ref=raw_ref(35_000)))
    assert check(c, d).returncode == 2


def test_absolute_decides_when_a_run_lacks_the_reference(tmp_path: Path) -> None:
    a = write(tmp_path, "a", call(value=20_000, ref=raw_ref(25_000)))
    b = write(tmp_path, "b", call(value=15_000))
    r = check(a, b)
    assert r.returncode == 2
    assert "absolute" in r.stdout


def test_references_are_reported_never_failed_on(tmp_path: Path) -> None:
    a = write(tmp_path, "a", raw_ref(25_000, 80))
    b = write(tmp_path, "b", raw_ref(10_000, 300))
    r = check(a, b)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "machine" in r.stdout


def test_a_workload_that_failed_in_the_current_run_fails(tmp_path: Path) -> None:
    a = write(tmp_path, "a", call())
    b = write(tmp_path, "b", error="BenchError: peer died")
    r = check(a, b)
    assert r.returncode == 2
    assert "peer died" in r.stdout


def test_metrics_in_one_run_only_are_listed(tmp_path: Path) -> None:
    a = write(tmp_path, "a", call())
    b = write(tmp_path, "b", call(), raw_ref())
    r = check(a, b)
    assert r.returncode == 0
    assert "new in current run" in r.stdout


def one_line_error(r: subprocess.CompletedProcess[str], *words: str) -> None:
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for w in words:
        assert w in lines[0]


def test_missing_file_is_bad_input(tmp_path: Path) -> None:
    a = write(tmp_path, "a", call())
    one_line_error(check(a, tmp_path / "nope.json"), "nope.json", "no such file")


@pytest.mark.parametrize(
    "content, words",
    [
        ("{not json", ("not JSON",)),
        (json.dumps({"results": []}), ("not a supervisor_tree bench result",)),
        (json.dumps([1, 2]), ("not a supervisor_tree bench result",)),
        (
            json.dumps({"schema": "supervisor_tree.bench/1", "workloads": {"x": {"measurements": [{"name": "m"}]}}}),
            ("value",),
        ),
    ],
)
def test_foreign_or_broken_json_is_bad_input(tmp_path: Path, content: str, words: Sequence[str]) -> None:
    a = write(tmp_path, "a", call())
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    one_line_error(check(a, bad), "bad.json", *words)


def test_bad_usage_is_bad_input(tmp_path: Path) -> None:
    a = write(tmp_path, "a", call())
    one_line_error(check(a), "current")
    one_line_error(check(a, a, "--threshold", "-1"), "threshold")
