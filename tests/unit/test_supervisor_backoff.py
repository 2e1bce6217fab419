"""The backoff extension: delayed restarts, tenacity's policy, deterministic jitter,
reset after a long run, and a machine that stays responsive meanwhile."""

from __future__ import annotations

import pytest
import tenacity

from supervisor_tree.otp import supervisor as sv
from supervisor_tree.otp.intensity import backoff_delay
from supervisor_tree.spec import SHUTDOWN, Backoff, Restart, Strategy, SupervisorSpec, error
from tests.unit.driver import FakeRuntime, tree, worker

CRASH = error("crash")
POLICY = Backoff(initial=0.1, factor=2.0, cap=1.0, jitter=False, reset_after=30.0)


class _State:
    def __init__(self, n: int) -> None:
        self.attempt_number = n


@pytest.mark.parametrize(("attempt", "delay"), [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (9, 1.0)])
def test_the_delay_is_tenacitys_wait_exponential(attempt: int, delay: float) -> None:
    assert backoff_delay(POLICY, attempt, seed="x") == pytest.approx(delay)
    reference = tenacity.wait_exponential(multiplier=0.1, exp_base=2.0, max=1.0)
    assert backoff_delay(POLICY, attempt, seed="x") == reference(_State(attempt))  # type: ignore[arg-type]


def test_jitter_is_a_deterministic_factor_between_half_and_one() -> None:
    jittery = Backoff(initial=1.0, factor=2.0, cap=100.0, jitter=True)
    delays = [backoff_delay(jittery, 3, seed=f"root/b/{g}/3") for g in range(50)]
    assert all(2.0 <= d <= 4.0 for d in delays)
    assert len(set(delays)) > 40  # the seed matters
    assert delays == [backoff_delay(jittery, 3, seed=f"root/b/{g}/3") for g in range(50)]  # and decides


def backoff_tree(strategy: Strategy = Strategy.ONE_FOR_ONE, intensity: int = 100) -> SupervisorSpec:
    children = (worker("a"), worker("b", backoff=POLICY), worker("c"))
    return tree(*children, strategy=strategy, intensity=intensity, period=3600)


def test_a_restart_waits_for_its_delay_and_the_machine_stays_responsive() -> None:
    rt = FakeRuntime(backoff_tree()).start()
    mark = len(rt.actions)
    rt.crash("b", CRASH)
    actions = [a for _, a in rt.actions[mark:]]
    assert [type(a).__name__ for a in actions] == ["Report", "Report", "Report", "SetTimer"]
    assert actions[2] == sv.Report(sv.ReportKind.RESTARTING, "b", None, 1, None, {"delay": 0.1})
    assert actions[3] == sv.SetTimer(("backoff", "b"), 0.1)
    state = rt.state()
    assert not state.busy and rt.children() == "[c=running(c#1), b=restarting, a=running(a#1)]"
    assert rt.counts() == "specs=3 active=2 supervisors=0 workers=3"
    # served at once meanwhile
    assert rt.call(sv.RestartChildCall("b")) == sv.ApiError("restarting")
    assert rt.call(sv.DeleteChildCall("b")) == sv.ApiError("restarting")
    assert rt.call(sv.TerminateChildCall("c")) == sv.Ok()
    rt.advance(0.099)
    assert rt.children() == "[c=not_running, b=restarting, a=running(a#1)]"
    rt.advance(0.002)
    assert rt.children() == "[c=not_running, b=running(b#2), a=running(a#1)]"


def test_consecutive_restarts_wait_longer_up_to_the_cap() -> None:
    rt = FakeRuntime(backoff_tree()).start()
    delays = []
    for _ in range(6):
        rt.crash("b", CRASH)
        delays.append(_last_delay(rt))
        rt.advance(2.0)
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert len(rt.state().restarts) == 6  # each one is charged to intensity


def _last_delay(rt: FakeRuntime) -> float:
    timers = [a for _, a in rt.actions if isinstance(a, sv.SetTimer) and a.key[0] == "backoff"]
    return timers[-1].delay


def test_the_count_resets_after_a_long_enough_run() -> None:
    rt = FakeRuntime(backoff_tree()).start()
    rt.crash("b", CRASH)
    rt.advance(1.0)
    rt.crash("b", CRASH)
    assert _last_delay(rt) == pytest.approx(0.2)
    rt.advance(30.2)  # up 30 s: long enough
    rt.crash("b", CRASH)
    assert _last_delay(rt) == pytest.approx(0.1)


def test_a_failed_start_after_the_delay_is_retried_with_the_next_delay() -> None:
    rt = FakeRuntime(backoff_tree()).start()
    rt.fail_starts("b", "error")
    rt.crash("b", CRASH)
    rt.advance(0.1)
    assert rt.lines()[-2:] == ["start_fail b", "log[start_error] b#1 reason={start_failed,b}"]
    assert rt.children() == "[c=running(c#1), b=restarting, a=running(a#1)]"
    assert _last_delay(rt) == pytest.approx(0.2)
    rt.advance(0.2)
    assert rt.children() == "[c=running(c#1), b=running(b#2), a=running(a#1)]"
    assert len(rt.state().restarts) == 2


def test_intensity_is_charged_when_the_restart_is_decided() -> None:
    rt = FakeRuntime(backoff_tree(intensity=1)).start()
    rt.crash("b", CRASH)
    rt.advance(0.1)
    rt.crash("b", CRASH)
    assert rt.exits["sup"] == SHUTDOWN
    assert not any(isinstance(a, sv.SetTimer) and a.delay == pytest.approx(0.2) for _, a in rt.actions)


def test_terminate_child_cancels_the_delay() -> None:
    rt = FakeRuntime(backoff_tree()).start()
    rt.crash("b", CRASH)
    mark = len(rt.actions)
    assert rt.call(sv.TerminateChildCall("b")) == sv.Ok()
    assert [a for _, a in rt.actions[mark:]] == [sv.CancelTimer(("backoff", "b")), sv.Reply(1, sv.Ok())]
    state = rt.state()
    assert sv.decide(state, sv.TimerFired(("backoff", "b")), 9.0) == (state, [])  # a late timer is ignored
    assert rt.children() == "[c=running(c#1), b=not_running, a=running(a#1)]"


def test_a_stop_during_the_delay_cancels_it() -> None:
    rt = FakeRuntime(backoff_tree()).start()
    rt.crash("b", CRASH)
    mark = len(rt.actions)
    rt.stop()
    assert sv.CancelTimer(("backoff", "b")) in [a for _, a in rt.actions[mark:]]
    assert rt.lines()[-3:] == ["exit c#1 reason=shutdown", "exit a#1 reason=shutdown", "exit sup#1 reason=shutdown"]


@pytest.mark.parametrize("strategy", [Strategy.ONE_FOR_ALL, Strategy.REST_FOR_ONE])
def test_group_strategies_wait_for_the_failed_childs_delay_then_restart_the_group(strategy: Strategy) -> None:
    rt = FakeRuntime(backoff_tree(strategy)).start()
    mark = len(rt.trace)
    rt.crash("b", CRASH)
    assert rt.lines(mark) == ["exit b#1 reason=crash", "log[child_terminated] b#1 reason=crash"]
    assert rt.children() == "[c=running(c#1), b=restarting, a=running(a#1)]"  # siblings keep running
    rt.advance(0.1)
    if strategy is Strategy.ONE_FOR_ALL:
        tail = ["exit c#1 reason=shutdown", "exit a#1 reason=shutdown", "start a#2", "start b#2", "start c#2"]
    else:
        tail = ["exit c#1 reason=shutdown", "start b#2", "start c#2"]
    assert rt.lines(mark + 2) == tail


def test_a_group_restart_during_the_delay_takes_the_child_along() -> None:
    rt = FakeRuntime(backoff_tree(Strategy.ONE_FOR_ALL)).start()
    rt.crash("b", CRASH)
    mark = len(rt.actions)
    rt.crash("c", CRASH)  # no backoff: the group restarts now, b included
    acted = [a for _, a in rt.actions[mark:]]
    assert sv.CancelTimer(("backoff", "b")) in acted
    assert rt.children() == "[c=running(c#2), b=running(b#2), a=running(a#2)]"
    rt.advance(1.0)
    assert rt.children() == "[c=running(c#2), b=running(b#2), a=running(a#2)]"


def test_simple_one_for_one_instances_back_off_one_by_one() -> None:
    rt = FakeRuntime(tree(worker("dyn", backoff=POLICY), strategy=Strategy.SIMPLE_ONE_FOR_ONE)).start()
    for name in ("x1", "x2"):
        rt.call(sv.StartChildCall(extra_args={"name": name}))
    rt.crash("x1", CRASH)
    assert _last_delay(rt) == pytest.approx(0.1)
    assert rt.children() == "[undefined=restarting, undefined=running(x2#1)]"
    x1 = rt.state().child("dyn-1")
    assert x1 is not None and isinstance(x1.last_pid, int)
    assert rt.call(sv.TerminateChildCall(x1.last_pid)) == sv.Ok()  # by its old pid, as OTP's {restarting, Pid}
    assert rt.children() == "[undefined=running(x2#1)]"


@pytest.mark.parametrize("restart", [Restart.PERMANENT, Restart.TRANSIENT])
def test_without_backoff_restarts_are_immediate(restart: Restart) -> None:
    rt = FakeRuntime(tree(worker("a", restart))).start()
    rt.crash("a", CRASH)
    assert not any(isinstance(a, sv.SetTimer) for _, a in rt.actions)
    assert rt.children() == "[a=running(a#2)]"
