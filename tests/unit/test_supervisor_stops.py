"""Stopping children (R9, R10, R11): the actions per shutdown value, what counts as a
clean stop, timers, nested supervisors, and exits that were already queued."""

from __future__ import annotations

import pytest

from supervisor_tree.otp import supervisor as sv
from supervisor_tree.otp.state import AwaitStop
from supervisor_tree.spec import (
    BRUTAL_KILL,
    KILLED,
    NORMAL,
    SHUTDOWN,
    ChildSpec,
    ChildType,
    ExitKind,
    ExitReason,
    Restart,
    Strategy,
    error,
    shutdown_with,
)
from tests.unit.driver import NEVER_EXITS, FakeRuntime, Traps, nested, tree, worker
from tests.unit.test_supervisor_exits import REASONS

SHUTDOWNS: dict[str, int | str] = {"timeout": 250, "brutal_kill": "brutal_kill", "infinity": "infinity"}


def r9_clean(restart: Restart, shutdown: str, kind: ExitKind) -> bool:
    """R9, from its text: shutdown is clean; killed under brutal_kill; normal and
    {shutdown,_} for transient and temporary children."""
    if kind is ExitKind.SHUTDOWN:
        return True
    if kind is ExitKind.KILLED:
        return shutdown == "brutal_kill"
    return restart is not Restart.PERMANENT and kind in (ExitKind.NORMAL, ExitKind.SHUTDOWN_WITH)


def terminate(rt: FakeRuntime, key: str, ref: int = 1) -> tuple[sv.SupervisorState, list[sv.Action]]:
    return sv.decide(rt.state(), sv.ApiRequest(ref, sv.TerminateChildCall(key)), rt.now)


@pytest.mark.parametrize("kind", list(ExitKind), ids=lambda k: k.value)
@pytest.mark.parametrize("shutdown", list(SHUTDOWNS), ids=str)
@pytest.mark.parametrize("restart", list(Restart), ids=lambda r: r.value)
def test_clean_and_unclean_stops(restart: Restart, shutdown: str, kind: ExitKind) -> None:
    rt = FakeRuntime(tree(worker("a"), worker("m", restart, SHUTDOWNS[shutdown]))).start()
    pid = rt.pid_of("m")
    state, actions = terminate(rt, "m")
    assert [type(a).__name__ for a in actions] == {
        "timeout": ["AskStop", "SetTimer"],
        "brutal_kill": ["Kill"],
        "infinity": ["AskStop"],
    }[shutdown]
    assert state.busy and sv.which_children(state)[0].status is sv.ChildStatus.STOPPING
    reason = REASONS[kind]
    state, actions = sv.decide(state, sv.ChildExited("m", pid, reason), rt.now)
    reports = [(a.kind, a.reason) for a in actions if isinstance(a, sv.Report)]
    expected = [(sv.ReportKind.EXITED, reason)]
    if not r9_clean(restart, shutdown, kind):
        expected.append((sv.ReportKind.SHUTDOWN_ERROR, reason))
    assert reports == expected
    assert actions[-1] == sv.Reply(1, sv.Ok())
    assert (shutdown == "timeout") == (sv.CancelTimer(("shutdown", "m", 1)) in actions)
    statuses = {i.key: i.status for i in sv.which_children(state)}
    if restart is Restart.TEMPORARY:
        assert "m" not in statuses
    else:
        assert statuses["m"] is sv.ChildStatus.NOT_RUNNING
    assert state.restarts == () and state.phase is sv.Phase.RUNNING  # no restart, no auto shutdown


def test_a_timeout_stop_kills_when_the_timer_fires_and_reports_it() -> None:
    rt = FakeRuntime(tree(worker("a"), worker("m", shutdown=250))).start()
    pid = rt.pid_of("m")
    state, actions = terminate(rt, "m")
    assert actions == [sv.AskStop("m", pid), sv.SetTimer(("shutdown", "m", 1), 0.25)]
    state, actions = sv.decide(state, sv.TimerFired(("shutdown", "m", 1)), 5.0)
    assert actions == [sv.Kill("m", pid)]
    assert state.plan is not None and state.plan.waiting == AwaitStop("m", pid, None)
    state, actions = sv.decide(state, sv.ChildExited("m", pid, KILLED), 5.0)
    assert actions == [
        sv.Report(sv.ReportKind.EXITED, "m", pid, 1, KILLED),
        sv.Report(sv.ReportKind.SHUTDOWN_ERROR, "m", pid, 1, KILLED),
        sv.Reply(1, sv.Ok()),
    ]
    assert sv.decide(state, sv.TimerFired(("shutdown", "m", 1)), 6.0) == (state, [])  # stale


def test_stops_are_one_at_a_time_newest_first_and_delays_add_up() -> None:
    """R9, S21: the next stop begins only when the previous child is dead."""
    rt = FakeRuntime(tree(worker("a"), worker("b"), worker("c")))
    rt.on_stop.update(c=Traps(after=0.4), b=Traps(after=0.3))
    rt.start()
    rt.stop()
    assert rt.state().phase is sv.Phase.STOPPING
    asked = [a.key for _, a in rt.actions if isinstance(a, sv.AskStop)]
    assert asked == ["c"]
    rt.advance(0.4)
    assert [a.key for _, a in rt.actions if isinstance(a, sv.AskStop)] == ["c", "b"]
    rt.settle()
    assert [t for t in rt.timed(0.0) if "exit" in t] == [
        "[+400ms] exit c#1 reason=shutdown",
        "[+700ms] exit b#1 reason=shutdown",
        "[+700ms] exit a#1 reason=shutdown",
        "[+700ms] exit sup#1 reason=shutdown",
    ]


def test_an_infinity_stop_waits_and_defers_everything_else() -> None:
    rt = FakeRuntime(tree(worker("a"), worker("b", shutdown="infinity")))
    rt.on_stop["b"] = NEVER_EXITS
    rt.start()
    rt.stop()
    rt.crash("a", error("crash"))
    rt.send("sup", sv.ApiRequest(9, sv.RestartChildCall("a")))
    rt.advance(3600.0)
    state = rt.state()
    assert state.phase is sv.Phase.STOPPING and 9 not in rt.replies
    assert [type(e).__name__ for e in state.deferred] == ["ChildExited", "ApiRequest"]
    rt.die(rt.pid_of("b"), SHUTDOWN)  # it finally stops
    rt.run()
    # a's exit was queued: it answers a's stop at once (no AskStop to a dead process) ...
    assert not any(isinstance(a, sv.AskStop) and a.key == "a" for _, a in rt.actions)
    assert rt.lines()[-4:] == [
        "exit b#1 reason=shutdown",
        "exit a#1 reason=crash",
        "log[shutdown_error] a#1 reason=crash",  # ... and, not clean, it is reported
        "exit sup#1 reason=shutdown",
    ]
    assert rt.replies[9] == sv.ApiError("noproc", detail=SHUTDOWN)  # the call queued behind the stop


def test_an_exit_already_queued_answers_a_group_stop_and_is_not_handled_twice() -> None:
    """OTP's unlink_flush: a sibling that died while the machine was busy is not asked to stop."""
    rt = FakeRuntime(tree(worker("a"), worker("b"), worker("c", shutdown=1000), strategy=Strategy.ONE_FOR_ALL))
    rt.on_stop["c"] = NEVER_EXITS
    rt.start()
    rt.crash("b", error("crash"))  # group restart: stopping c, which hangs
    rt.crash("a", error("boom"))  # deferred
    rt.settle()
    assert rt.lines()[4:] == [
        "exit b#1 reason=crash",
        "log[child_terminated] b#1 reason=crash",
        "signal c#1 reason=shutdown",
        "exit c#1 reason=killed",
        "log[shutdown_error] c#1 reason=killed",
        "exit a#1 reason=boom",
        "log[shutdown_error] a#1 reason=boom",
        "start a#2",
        "start b#2",
        "start c#2",
    ]
    assert len(rt.state().restarts) == 1
    assert rt.children() == "[c=running(c#2), b=running(b#2), a=running(a#2)]"


def test_stopping_a_nested_supervisor_stops_its_subtree_first() -> None:
    mid = tree(worker("w1"), worker("w2"))
    rt = FakeRuntime(tree(worker("x"), nested("mid", mid))).start()
    rt.stop()
    assert rt.lines()[-5:] == [
        "exit w2#1 reason=shutdown",
        "exit w1#1 reason=shutdown",
        "exit mid#1 reason=shutdown",
        "exit x#1 reason=shutdown",
        "exit sup#1 reason=shutdown",
    ]


def test_brutal_kill_of_a_nested_supervisor_kills_the_subtree_at_once() -> None:
    mid = tree(worker("w1"), worker("w2"))
    spec = tree(worker("x"), ChildSpec(id="mid", type=ChildType.SUPERVISOR, supervisor=mid, shutdown=BRUTAL_KILL))
    rt = FakeRuntime(spec).start()
    rt.call(sv.TerminateChildCall("mid"))
    assert rt.lines()[-3:] == ["exit w1#1 reason=killed", "exit w2#1 reason=killed", "exit mid#1 reason=killed"]
    assert rt.children() == "[mid=not_running[sup], x=running(x#1)]"


@pytest.mark.parametrize("restart", list(Restart), ids=lambda r: r.value)
def test_a_simple_one_for_one_stop_of_nothing_exits_at_once(restart: Restart) -> None:
    rt = FakeRuntime(tree(worker("dyn", restart), strategy=Strategy.SIMPLE_ONE_FOR_ONE)).start()
    state, actions = sv.decide(rt.state(), sv.StopRequested(shutdown_with("bye")), 1.0)
    assert actions == [sv.Exit(shutdown_with("bye"))] and state.phase is sv.Phase.EXITED


def test_simple_one_for_one_brutal_kill_stops_all_with_no_timer() -> None:
    rt = FakeRuntime(tree(worker("dyn", shutdown="brutal_kill"), strategy=Strategy.SIMPLE_ONE_FOR_ONE)).start()
    for name in ("x1", "x2"):
        rt.call(sv.StartChildCall(extra_args={"name": name}))
    mark = len(rt.actions)
    rt.stop()
    kinds = [type(a).__name__ for _, a in rt.actions[mark:]]
    assert kinds[:2] == ["Kill", "Kill"] and "SetTimer" not in kinds and "AskStop" not in kinds
    assert rt.lines()[-3:] == ["exit x2#1 reason=killed", "exit x1#1 reason=killed", "exit sup#1 reason=shutdown"]


def test_simple_one_for_one_terminate_child_reports_a_count() -> None:
    rt = FakeRuntime(tree(worker("dyn"), strategy=Strategy.SIMPLE_ONE_FOR_ONE)).start()
    rt.on_stop["x1"] = Traps(reason=NORMAL)
    rt.call(sv.StartChildCall(extra_args={"name": "x1"}))
    pid = rt.pid_of("x1")
    assert rt.call(sv.TerminateChildCall(pid)) == sv.Ok()  # type: ignore[arg-type]
    errors = [a for _, a in rt.actions if isinstance(a, sv.Report) and a.kind is sv.ReportKind.SHUTDOWN_ERROR]
    assert [(e.key, e.reason, e.detail) for e in errors] == [("dyn-1", NORMAL, {"count": 1})]


def test_stop_requested_exits_with_the_parents_reason() -> None:
    rt = FakeRuntime(tree(worker("a"))).start()
    rt.stop(ExitReason(ExitKind.SHUTDOWN_WITH, "maintenance"))
    assert rt.exits["sup"] == shutdown_with("maintenance")
