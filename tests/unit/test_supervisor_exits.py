"""A child exits by itself: strategy x restart type x exit kind (R3, R6).

The expectations are computed from R3's table and R6's text, independently of
strategies.py, then checked against what the machine does.
"""

from __future__ import annotations

import pytest

from supervisor_tree.otp import supervisor as sv
from supervisor_tree.otp.strategies import ExitOutcome, exit_outcome
from supervisor_tree.spec import (
    KILLED,
    NORMAL,
    SHUTDOWN,
    ExitKind,
    ExitReason,
    Restart,
    Strategy,
    error,
    shutdown_with,
)
from tests.unit.driver import FakeRuntime, fmt_reason, tree, worker

REASONS = {
    ExitKind.NORMAL: NORMAL,
    ExitKind.SHUTDOWN: SHUTDOWN,
    ExitKind.SHUTDOWN_WITH: shutdown_with("done"),
    ExitKind.KILLED: KILLED,
    ExitKind.SIGNALLED: ExitReason(ExitKind.SIGNALLED, "SIGSEGV"),
    ExitKind.EXIT_CODE: ExitReason(ExitKind.EXIT_CODE, "3"),
    ExitKind.ERROR: error("boom"),
    ExitKind.HUNG: ExitReason(ExitKind.HUNG, "no heartbeat for 2s"),
    ExitKind.NODE_LOST: ExitReason(ExitKind.NODE_LOST, "Ray node 7120b9b3e004 (vm/127.0.0.1) left the cluster"),
}
NORMAL_CLASS = {ExitKind.NORMAL, ExitKind.SHUTDOWN, ExitKind.SHUTDOWN_WITH}
GROUP_STRATEGIES = [Strategy.ONE_FOR_ONE, Strategy.ONE_FOR_ALL, Strategy.REST_FOR_ONE]


def r3(restart: Restart, kind: ExitKind) -> tuple[bool, bool, bool]:
    """(restarted, reported child_terminated, spec kept), from R3's table."""
    abnormal = kind not in NORMAL_CLASS
    restarted = restart is Restart.PERMANENT or (restart is Restart.TRANSIENT and abnormal)
    reported = restarted or (restart is Restart.TEMPORARY and abnormal)
    kept = restart is not Restart.TEMPORARY
    return restarted, reported, kept


def test_every_exit_kind_has_a_reason() -> None:
    assert set(REASONS) == set(ExitKind)


@pytest.mark.parametrize("kind", list(ExitKind), ids=lambda k: k.value)
@pytest.mark.parametrize("restart", list(Restart), ids=lambda r: r.value)
def test_the_table_matches_r3(restart: Restart, kind: ExitKind) -> None:
    restarted, reported, kept = r3(restart, kind)
    expected = {
        (True, True, True): ExitOutcome.RESTART,
        (False, False, True): ExitOutcome.KEEP,
        (False, False, False): ExitOutcome.FORGET,
        (False, True, False): ExitOutcome.FORGET_REPORTED,
    }[(restarted, reported, kept)]
    assert exit_outcome(restart, kind) is expected


@pytest.mark.parametrize("kind", list(ExitKind), ids=lambda k: k.value)
@pytest.mark.parametrize("restart", list(Restart), ids=lambda r: r.value)
@pytest.mark.parametrize("strategy", GROUP_STRATEGIES, ids=lambda s: s.value)
def test_a_middle_child_exits(strategy: Strategy, restart: Restart, kind: ExitKind) -> None:
    reason = REASONS[kind]
    rt = FakeRuntime(tree(worker("a"), worker("m", restart), worker("z"), strategy=strategy, intensity=5)).start()
    mark = len(rt.trace)
    rt.crash("m", reason)
    restarted, reported, kept = r3(restart, kind)
    why = fmt_reason(reason)
    expected = [f"exit m#1 reason={why}"] + ([f"log[child_terminated] m#1 reason={why}"] if reported else [])
    if restarted:
        expected += {
            Strategy.ONE_FOR_ONE: ["start m#2"],
            Strategy.ONE_FOR_ALL: [
                "exit z#1 reason=shutdown",
                "exit a#1 reason=shutdown",
                "start a#2",
                "start m#2",
                "start z#2",
            ],
            Strategy.REST_FOR_ONE: ["exit z#1 reason=shutdown", "start m#2", "start z#2"],
        }[strategy]
    assert rt.lines(mark) == expected
    state = rt.state()
    assert state.phase is sv.Phase.RUNNING and not state.busy
    assert len(state.restarts) == (1 if restarted else 0)  # exits not restarted consume no intensity
    assert ("restarting" in rt.report_kinds()) == restarted
    if restarted:
        a, z = {
            Strategy.ONE_FOR_ONE: ("a#1", "z#1"),
            Strategy.ONE_FOR_ALL: ("a#2", "z#2"),
            Strategy.REST_FOR_ONE: ("a#1", "z#2"),
        }[strategy]
        assert rt.children() == f"[z=running({z}), m=running(m#2), a=running({a})]"
    elif kept:
        assert rt.children() == "[z=running(z#1), m=not_running, a=running(a#1)]"
    else:
        assert rt.children() == "[z=running(z#1), a=running(a#1)]"


@pytest.mark.parametrize("kind", list(ExitKind), ids=lambda k: k.value)
@pytest.mark.parametrize("restart", list(Restart), ids=lambda r: r.value)
def test_a_simple_one_for_one_instance_exits(restart: Restart, kind: ExitKind) -> None:
    reason = REASONS[kind]
    rt = FakeRuntime(tree(worker("dyn", restart), strategy=Strategy.SIMPLE_ONE_FOR_ONE, intensity=5)).start()
    for name in ("x1", "x2", "x3"):
        rt.call(sv.StartChildCall(extra_args={"name": name}))
    mark = len(rt.trace)
    rt.crash("x2", reason)
    restarted, reported, _ = r3(restart, kind)
    why = fmt_reason(reason)
    expected = [f"exit x2#1 reason={why}"] + ([f"log[child_terminated] x2#1 reason={why}"] if reported else [])
    assert rt.lines(mark) == expected + (["start x2#2"] if restarted else [])
    if restarted:  # the same instance, with its own arguments
        info = [i for i in sv.which_children(rt.state()) if i.key == "dyn-2"]
        assert [(i.status, dict(i.args), i.generation) for i in info] == [(sv.ChildStatus.RUNNING, {"name": "x2"}, 2)]
        assert rt.counts() == "specs=1 active=3 supervisors=0 workers=3"
    else:  # simple_one_for_one keeps no stopped instance, whatever the restart type
        assert rt.children() == "[undefined=running(x1#1), undefined=running(x3#1)]"
        assert rt.counts() == "specs=1 active=2 supervisors=0 workers=2"


@pytest.mark.parametrize("kind", list(ExitKind), ids=lambda k: k.value)
@pytest.mark.parametrize("restart", list(Restart), ids=lambda r: r.value)
@pytest.mark.parametrize("strategy", list(Strategy), ids=lambda s: s.value)
def test_with_intensity_zero_only_a_restart_is_fatal(strategy: Strategy, restart: Restart, kind: ExitKind) -> None:
    """R3/R4 (S06, S08, S12): an exit that needs a restart ends an intensity-0 supervisor; others do not."""
    if strategy is Strategy.SIMPLE_ONE_FOR_ONE:
        rt = FakeRuntime(tree(worker("m", restart), strategy=strategy, intensity=0)).start()
        rt.call(sv.StartChildCall(extra_args={"name": "m"}))
        rt.call(sv.StartChildCall(extra_args={"name": "a"}))
    else:
        rt = FakeRuntime(tree(worker("a"), worker("m", restart), strategy=strategy, intensity=0)).start()
    rt.crash("m", REASONS[kind])
    restarted, _, _ = r3(restart, kind)
    assert (rt.state().phase is sv.Phase.EXITED) == restarted
    if restarted:
        assert rt.lines()[-3:] == [
            "log[shutdown] m#1 reason=reached_max_restart_intensity",
            "exit a#1 reason=shutdown",
            "exit sup#1 reason=shutdown",
        ]
        assert rt.exits["sup"] == SHUTDOWN
