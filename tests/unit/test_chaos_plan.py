"""Chaos as pure code: the seeded schedule and its log, the blast-radius oracle, percentiles and gates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from supervisor_tree.chaos.blast import Observed, TreeModel, compare, predict, predictions
from supervisor_tree.chaos.load import LoadFigures
from supervisor_tree.chaos.report import ChaosReport, FaultOutcome, Gates, percentiles
from supervisor_tree.chaos.schedule import FaultKind, LogError, match_targets, parse_faults, plan, read_log, write_log
from supervisor_tree.chaos.steady import SteadyState

# -- the schedule ------------------------------------------------------------------


def test_the_same_seed_writes_the_same_log_byte_for_byte(tmp_path: Path) -> None:
    kinds, params = parse_faults("kill,stop,slow:80,fail_start:2")
    for name in ("a", "b"):
        write_log(plan(42, 5.0, 10.0, kinds, ("w1", "w2", "w3"), params), tmp_path / name)
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()
    write_log(plan(43, 5.0, 10.0, kinds, ("w1", "w2", "w3"), params), tmp_path / "c")
    assert (tmp_path / "c").read_bytes() != (tmp_path / "a").read_bytes()


def test_a_log_reads_back_as_the_schedule_it_was(tmp_path: Path) -> None:
    kinds, params = parse_faults("kill,drop:0.25")
    schedule = plan(7, 3.0, 5.0, kinds, ("x", "y"), params)
    write_log(schedule, tmp_path / "log")
    again = read_log(tmp_path / "log")
    assert again == schedule
    drops = [d for d in again.decisions if d.fault is FaultKind.DROP]
    assert drops and all(d.params["probability"] == 0.25 for d in drops)


def test_arrivals_follow_the_rate() -> None:
    s = plan(1, 10.0, 60.0, (FaultKind.KILL,), ("w",))
    assert 500 < len(s.decisions) < 700 and all(0 < d.at < 60 for d in s.decisions)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kill,explode", "--faults: unknown fault 'explode'; known: kill, term, stop, exception, slow, drop, "
                         "slow_start, fail_start"),
        ("kill:3", "--faults: kill takes no value; got 'kill:3'"),
        ("drop:1.5", "--faults: 'drop:1.5': probability must be >= 0 and <= 1"),
        ("slow:fast", "--faults: 'slow:fast': 'fast' is not a number (ms)"),
        ("", "--faults: name at least one fault"),
    ],
)  # fmt: skip
def test_bad_faults_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_faults(text)
    assert str(info.value).startswith(message)


def test_targets_are_globs_and_sorted() -> None:
    assert match_targets("net*,queue", ["queue", "network.2", "network.1", "session"]) == ("network.1", "network.2", "queue")


def test_a_file_that_is_not_a_log_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x").write_text('{"hello": 1}\n')
    with pytest.raises(LogError, match="line 1: not a chaos decision log"):
        read_log(tmp_path / "x")
    (tmp_path / "y").write_text('{"log": "supervisor_tree chaos decisions", "version": 1, "seed": 1, "rate": 1, '
                                '"duration": 1, "faults": ["kill"], "targets": ["a"]}\n{"i": 0}\n')
    with pytest.raises(LogError, match="line 2: not a decision"):
        read_log(tmp_path / "y")


# -- the blast-radius oracle ---------------------------------------------------------


def worker(key: str, restart: str = "permanent", gen: int = 1) -> dict[str, Any]:
    return {"id": key, "type": "worker", "restart": restart, "state": "running", "generation": gen}


def sup(path: str, strategy: str, children: list[dict[str, Any]], intensity: int = 3, period: int = 10,
        restarts: tuple[int, ...] = (), restart: str = "permanent") -> dict[str, Any]:
    view = {"path": path, "strategy": strategy, "intensity": intensity, "period": period, "intensity_window": list(restarts),
            "clock": 100, "children": children}
    return {"id": path.rsplit("/", 1)[-1], "type": "supervisor", "restart": restart, "state": "running",
            "generation": 1, "supervisor": view}


def model(*children: dict[str, Any], intensity: int = 5, restarts: tuple[int, ...] = ()) -> TreeModel:
    root = {"path": "root", "strategy": "one_for_one", "intensity": intensity, "period": 10,
            "intensity_window": list(restarts), "clock": 100, "children": list(children)}
    return TreeModel.from_status({"tree": root})


TREE = model(
    worker("solo"),
    sup("root/all", "one_for_all", [worker("a1"), worker("a2"), worker("a3", "temporary")]),
    sup("root/rest", "rest_for_one", [worker("r1"), worker("r2"), worker("r3")]),
    sup("root/pool", "simple_one_for_one", [worker("m-1"), worker("m-2")]),
    worker("maybe", "transient"),
)


@pytest.mark.parametrize(
    ("target", "abnormal", "restarted", "gone"),
    [
        ("solo", True, {"solo"}, set()),
        ("a2", True, {"a1", "a2"}, {"a3"}),  # one_for_all: every sibling; a temporary one is not restarted
        ("r2", True, {"r2", "r3"}, set()),  # rest_for_one: it and those started after it
        ("r1", True, {"r1", "r2", "r3"}, set()),
        ("m-1", True, {"m-1"}, set()),  # simple_one_for_one: the child alone
        ("maybe", True, {"maybe"}, set()),
        ("maybe", False, set(), {"maybe"}),  # transient, exit shutdown (SIGTERM): not restarted
        ("a3", True, set(), {"a3"}),  # temporary: never restarted
    ],
)  # fmt: skip
def test_strategy_and_restart_type_decide_the_radius(target: str, abnormal: bool, restarted: set[str],
                                                     gone: set[str]) -> None:
    p = predict(TREE, target, abnormal=abnormal)
    assert (p.restarted, p.gone, p.escalated, p.tree_dies) == (restarted, gone, [], False)


def test_past_its_intensity_a_supervisor_escalates_and_its_parent_restarts_it_whole() -> None:
    tree = model(worker("x"), sup("root/mid", "one_for_one", [worker("w"), worker("v")], intensity=2,
                                  restarts=(100, 99)))
    p = predict(tree, "w", abnormal=True)
    assert p.escalated == ["root/mid"] and p.restarted == {"w", "v"} and not p.tree_dies
    assert p.charged == {"root/mid": 1, "root": 1}


def test_the_window_forgets_restarts_older_than_the_period() -> None:
    tree = model(sup("root/mid", "one_for_one", [worker("w")], intensity=2, restarts=(95, 89)))
    assert predict(tree, "w", abnormal=True).escalated == []
    assert predict(tree, "w", abnormal=True, delay_s=6).escalated == []
    crowded = model(sup("root/mid", "one_for_one", [worker("w")], intensity=2, restarts=(95, 90)))
    assert predict(crowded, "w", abnormal=True).escalated == ["root/mid"]
    assert predict(crowded, "w", abnormal=True, delay_s=1).escalated == []  # 90 left the window at 101
    assert len(predictions(crowded, "w", abnormal=True, delays=(0, 1))) == 2


def test_failing_starts_are_charged_each_and_climb_the_tree() -> None:
    tree = model(sup("root/mid", "one_for_one", [worker("w")], intensity=2), intensity=10)
    p = predict(tree, "w", abnormal=True, failing_starts=5)
    assert p.escalated == ["root/mid"] and p.charged == {"root/mid": 3, "root": 4} and p.restarted == {"w"}
    fatal = predict(model(sup("root/mid", "one_for_one", [worker("w")], intensity=2), intensity=2), "w",
                    abnormal=True, failing_starts=5)
    assert fatal.escalated == ["root/mid", "root"] and fatal.tree_dies


def test_a_group_restart_that_fails_half_way_starts_the_siblings_before_it() -> None:
    tree = model(sup("root/g", "one_for_all", [worker("g1"), worker("g2"), worker("g3")], intensity=10))
    p = predict(tree, "g2", abnormal=True, failing_starts=1)
    assert p.restarted == {"g1", "g2", "g3"} and p.charged == {"root/g": 2}


def test_compare_names_the_difference() -> None:
    p = predict(TREE, "r2", abnormal=True)
    assert compare([p], Observed(frozenset({"r2", "r3"}), (), False)) is None
    problem = compare([p], Observed(frozenset({"r2", "solo"}), ("root/rest",), False))
    assert problem is not None
    assert problem.startswith("restarted unexpectedly: solo; not restarted: r3; escalations ['root/rest'] (expected [])")
    assert "[predicted: restart r2, r3; observed: restart r2, solo; escalate root/rest]" in problem


def test_headroom_counts_the_window_as_of_the_snapshot() -> None:
    tree = model(sup("root/mid", "one_for_one", [worker("w")], intensity=3, restarts=(100, 95, 80)))
    assert tree.sups["root/mid"].headroom() == 1


# -- the report --------------------------------------------------------------------


def test_percentiles_are_nearest_rank() -> None:
    assert percentiles([float(v) for v in range(1, 101)]) == {"p50": 50.0, "p99": 99.0, "max": 100.0, "n": 100}
    assert percentiles([]) == {"p50": None, "p99": None, "max": None, "n": 0}


def test_gates_and_what_fails_a_run() -> None:
    report = ChaosReport(1, 1.0, 1.0, ["kill"], ["w"], "t", "/run", "log", SteadyState(True, (), 1),
                         steady_after=SteadyState(True, (), 1))
    report.load = LoadFigures(sent=1000, succeeded=998, failed=1, lost=1)
    report.outcomes = [FaultOutcome(0, "kill", "w", 0.1, "injected", recovery_ms=12.0, blast_ok=True)]
    results = Gates(max_lost=0, max_recovery_ms=50, min_success=99.0).judge(report)
    assert [(g.gate, g.ok) for g in results] == [("max-lost", False), ("max-recovery-ms (p99)", True),
                                                 ("min-success (%)", True)]
    report.gates = results
    assert not report.passed
    report.gates = [g for g in results if g.ok]
    assert report.passed
    report.outcomes[0].blast_ok = False
    assert not report.passed
