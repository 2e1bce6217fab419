"""The raw pyzmq references: tiny counts, real processes; structure and sanity, never speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from supervisor_tree.bench import raw
from supervisor_tree.bench.harness import BenchError, Better, Measurement, registry
from supervisor_tree.bench.measurement import Role

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_leftovers(tmp_path: Path) -> Iterator[Path]:
    """The scratch dir the references use; afterwards no child process and no file may remain."""
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    yield tmp_path
    left = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    assert not left, f"processes left behind: {left}"
    assert list(tmp_path.iterdir()) == [], "ipc directory left behind"


def check_throughput(m: Measurement, name: str, unit: str, repeats: int = 3) -> None:
    assert m.name == name
    assert m.unit == unit
    assert m.better is Better.HIGHER
    assert m.role is Role.REFERENCE
    assert m.repeats == repeats and len(m.values) == repeats
    assert all(v > 0 for v in m.values)
    assert m.min <= m.value <= m.max
    assert m.spread_pct >= 0
    assert "pickle" in m.note
    json.dumps(m.to_dict())  # JSON-ready


def check_latency(m: Measurement, count: int) -> None:
    lat = m.latency
    assert lat is not None
    assert lat.count == count
    assert 0 < lat.min <= lat.p50 <= lat.p95 <= lat.p99 <= lat.p999 <= lat.max
    assert len(lat.p99_per_repeat) == m.repeats


def test_push_pull_one_pickle_per_message(no_leftovers: Path) -> None:
    m = raw.raw_push_pull(2_000, 64, repeats=3, warmup=1, dir=no_leftovers)
    check_throughput(m, "push_pull_64B", "msg/s")
    assert m.latency is None


def test_push_pull_batched_counts_items_not_frames(no_leftovers: Path) -> None:
    m = raw.raw_push_pull(2_050, 64, batch=100, repeats=3, warmup=0, dir=no_leftovers)  # a short last frame
    check_throughput(m, "push_pull_batch100_64B", "msg/s")


def test_req_rep_round_trips(no_leftovers: Path) -> None:
    m = raw.raw_req_rep(2_000, 64, repeats=3, warmup=1, dir=no_leftovers)
    check_throughput(m, "req_rep_64B", "req/s")
    check_latency(m, 3 * 2_000)


def test_push_pull_roundtrip_is_the_call_pattern(no_leftovers: Path) -> None:
    m = raw.raw_push_pull_roundtrip(2_000, 64, repeats=3, warmup=1, dir=no_leftovers)
    check_throughput(m, "push_pull_roundtrip_64B", "req/s")
    check_latency(m, 3 * 2_000)


def test_dealer_router_with_requests_in_flight(no_leftovers: Path) -> None:
    m = raw.raw_dealer_router(2_000, inflight=50, repeats=3, warmup=1, dir=no_leftovers)
    check_throughput(m, "dealer_router_x50_64B", "req/s")
    check_latency(m, 3 * 2_000)


def test_dealer_router_with_more_in_flight_than_requests(no_leftovers: Path) -> None:
    m = raw.raw_dealer_router(10, inflight=100, repeats=3, warmup=0, dir=no_leftovers)
    assert m.latency is not None and m.latency.count == 30


def test_fork_ready_latency(no_leftovers: Path) -> None:
    m = raw.fork_ready_latency(5, repeats=3, warmup=1, dir=no_leftovers)
    assert m.name == "fork_ready"
    assert m.unit == "µs"
    assert m.better is Better.LOWER
    assert m.role is Role.REFERENCE
    assert all(v > 0 for v in m.values)
    check_latency(m, 3 * 5)


def crash_at_once(dir: str, *args: object) -> None:
    os._exit(3)


@pytest.mark.parametrize(
    "peer, bench",
    [
        ("_sink_peer", lambda d: raw.raw_push_pull(1_000, repeats=1, warmup=0, timeout=1.0, dir=d)),
        ("_rep_peer", lambda d: raw.raw_req_rep(100, repeats=1, warmup=0, timeout=1.0, dir=d)),
        ("_zygote_peer", lambda d: raw.fork_ready_latency(2, repeats=1, warmup=0, timeout=1.0, dir=d)),
    ],
)
def test_a_dead_peer_is_an_error_not_a_hang(
    monkeypatch: pytest.MonkeyPatch, no_leftovers: Path, peer: str, bench: Callable[[Path], object]
) -> None:
    monkeypatch.setattr(raw, peer, crash_at_once)
    with pytest.raises(BenchError, match="no answer from the peer"):
        bench(no_leftovers)


@pytest.mark.parametrize("n", [0, -5, raw.MAX_COUNT + 1])
def test_counts_are_bounded(n: int) -> None:
    with pytest.raises(ValueError, match="n must be within"):
        raw.raw_push_pull(n)


def test_raw_is_a_registered_quick_workload() -> None:
    wl = registry()["raw"]
    assert wl.quick
    assert "pyzmq" in wl.description


@pytest.mark.slow
def test_bench_raw_from_the_command_line(tmp_path: Path) -> None:
    out = tmp_path / "results"
    r = subprocess.run(
        [sys.executable, "-m", "supervisor_tree.bench", "raw", "--quick", "--json-dir", str(out)],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    for name in ("push_pull_64B", "req_rep_64B", "dealer_router_x100_64B", "push_pull_roundtrip_64B", "fork_ready"):
        assert name in r.stdout
    files = list(out.glob("*.json"))
    assert len(files) == 1
    data = json.loads(files[0].read_text())
    assert data["schema"] == "supervisor_tree.bench/1"
    assert data["quick"] is True
    assert {"cpu_model", "cores_logical", "memory_total_bytes", "kernel"} <= set(data["machine"])
    assert {"python", "pyzmq", "libzmq", "supervisor_tree"} <= set(data["versions"])
    assert len(data["workloads"]["raw"]["measurements"]) == 6
