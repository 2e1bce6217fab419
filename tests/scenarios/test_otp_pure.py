"""Every scenario of otp-scenarios.md, replayed against the pure supervisor.

One test per S-number.  The traces of the scenarios shown in the document are copied
verbatim (otp_trace drops the inject / call / snapshot lines, which are checked
with asserts instead); S09, S10, S13, S17, S22, S24, S27, S28, S33 and S35 are not
shown there and are written here from the rules that cite them.  No processes and
no sleeping: tests/unit/driver.py plays the runtime on a simulated clock.
"""

from __future__ import annotations

import pytest

from supervisor_tree.otp import supervisor as sv
from supervisor_tree.spec import (
    NORMAL,
    SHUTDOWN,
    AutoShutdown,
    ChildSpec,
    ExitKind,
    ExitReason,
    Restart,
    Shutdown,
    Strategy,
    SupervisorSpec,
    error,
    shutdown_with,
)
from tests.unit.driver import NEVER_EXITS, FakeRuntime, Traps, nested, otp_trace, tree, worker

PERMANENT, TRANSIENT, TEMPORARY = Restart.PERMANENT, Restart.TRANSIENT, Restart.TEMPORARY
CRASH = error("crash")


def three(strategy: Strategy = Strategy.ONE_FOR_ONE, **flags: int) -> SupervisorSpec:
    return tree(worker("a"), worker("b"), worker("c"), strategy=strategy, **flags)  # type: ignore[arg-type]


def test_s01_one_for_one_restarts_only_the_crashed_child() -> None:
    rt = FakeRuntime(three()).start()
    assert rt.children() == "[c=running(c#1), b=running(b#1), a=running(a#1)]"
    rt.crash("b", CRASH)
    assert rt.lines() == otp_trace("""
      1. start a#1
      2. start b#1
      3. start c#1
      4. start sup#1
      5. snapshot before: which_children = [c=running(c#1), b=running(b#1), a=running(a#1)]
      6. inject: b exits by itself with reason crash
      7. exit b#1 reason=crash
      8. log[child_terminated] b#1 reason=crash
      9. start b#2
    """)
    assert rt.children() == "[c=running(c#1), b=running(b#2), a=running(a#1)]"
    assert rt.counts() == "specs=3 active=3 supervisors=0 workers=3"


def test_s02_one_for_all_stops_every_sibling_and_restarts_all() -> None:
    rt = FakeRuntime(three(Strategy.ONE_FOR_ALL)).start()
    rt.crash("b", CRASH)
    assert rt.lines() == otp_trace("""
      1. start a#1
      2. start b#1
      3. start c#1
      4. start sup#1
      5. inject: b exits by itself with reason crash
      6. exit b#1 reason=crash
      7. log[child_terminated] b#1 reason=crash
      8. exit c#1 reason=shutdown
      9. exit a#1 reason=shutdown
     10. start a#2
     11. start b#2
     12. start c#2
    """)
    assert rt.children() == "[c=running(c#2), b=running(b#2), a=running(a#2)]"
    assert rt.counts() == "specs=3 active=3 supervisors=0 workers=3"


def test_s03_rest_for_one_restarts_the_rest_and_drops_a_temporary() -> None:
    spec = tree(worker("a"), worker("b"), worker("tmp", TEMPORARY), worker("d"), strategy=Strategy.REST_FOR_ONE)
    rt = FakeRuntime(spec).start()
    rt.crash("b", CRASH)
    assert rt.lines() == otp_trace("""
      1. start a#1
      2. start b#1
      3. start tmp#1
      4. start d#1
      5. start sup#1
      6. inject: b exits by itself with reason crash
      7. exit b#1 reason=crash
      8. log[child_terminated] b#1 reason=crash
      9. exit d#1 reason=shutdown
     10. exit tmp#1 reason=shutdown
     11. start b#2
     12. start d#2
    """)
    assert rt.children() == "[d=running(d#2), b=running(b#2), a=running(a#1)]"
    assert rt.counts() == "specs=3 active=3 supervisors=0 workers=3"


def sofo(**flags: object) -> SupervisorSpec:
    return tree(worker("dyn"), strategy=Strategy.SIMPLE_ONE_FOR_ONE, **flags)  # type: ignore[arg-type]


def start_x(rt: FakeRuntime, name: str) -> sv.ApiResult | None:
    return rt.call(sv.StartChildCall(extra_args={"name": name}))


def test_s04_simple_one_for_one_restarts_an_instance_with_its_own_args() -> None:
    rt = FakeRuntime(sofo()).start()
    for name in ("x1", "x2", "x3"):
        result = start_x(rt, name)
        assert isinstance(result, sv.Ok) and result.pid == rt.pid_of(name)
    rt.crash("x2", CRASH)
    assert rt.lines() == otp_trace("""
      1. start sup#1
      2. start x1#1
      3. call: start_child(sup, [x1]) -> {ok,'<x1#1>'}
      4. start x2#1
      5. call: start_child(sup, [x2]) -> {ok,'<x2#1>'}
      6. start x3#1
      7. call: start_child(sup, [x3]) -> {ok,'<x3#1>'}
      8. inject: x2 exits by itself with reason crash
      9. exit x2#1 reason=crash
     10. log[child_terminated] x2#1 reason=crash
     11. start x2#2
    """)
    respawn = [a for _, a in rt.actions if isinstance(a, sv.Spawn)][-1]
    assert (respawn.key, dict(respawn.args), respawn.generation) == ("dyn-2", {"name": "x2"}, 2)
    assert rt.children() == "[undefined=running(x1#1), undefined=running(x2#2), undefined=running(x3#1)]"
    assert rt.counts() == "specs=1 active=3 supervisors=0 workers=3"


def test_s05_permanent_child_is_restarted_whatever_the_reason() -> None:
    rt = FakeRuntime(tree(worker("p1"), worker("p2"), worker("p3"))).start()
    rt.crash("p1", NORMAL)
    rt.crash("p2", SHUTDOWN)
    rt.crash("p3", shutdown_with("done"))
    assert rt.lines() == otp_trace("""
      1. start p1#1
      2. start p2#1
      3. start p3#1
      4. start sup#1
      5. inject: p1 exits by itself with reason normal
      6. exit p1#1 reason=normal
      7. log[child_terminated] p1#1 reason=normal
      8. start p1#2
      9. inject: p2 exits by itself with reason shutdown
     10. exit p2#1 reason=shutdown
     11. log[child_terminated] p2#1 reason=shutdown
     12. start p2#2
     13. inject: p3 exits by itself with reason {shutdown,done}
     14. exit p3#1 reason={shutdown,done}
     15. log[child_terminated] p3#1 reason={shutdown,done}
     16. start p3#2
    """)
    assert rt.children() == "[p3=running(p3#2), p2=running(p2#2), p1=running(p1#2)]"
    assert len(rt.state().restarts) == 3  # each counts


def test_s06_transient_normal_exits_are_not_restarted_nor_counted() -> None:
    spec = tree(worker("t1", TRANSIENT), worker("t2", TRANSIENT), worker("t3", TRANSIENT), intensity=0)
    rt = FakeRuntime(spec).start()
    rt.crash("t1", NORMAL)
    rt.crash("t2", SHUTDOWN)
    rt.crash("t3", shutdown_with("done"))
    assert rt.lines() == otp_trace("""
      1. start t1#1
      2. start t2#1
      3. start t3#1
      4. start sup#1
      5. inject: t1 exits by itself with reason normal
      6. exit t1#1 reason=normal
      7. inject: t2 exits by itself with reason shutdown
      8. exit t2#1 reason=shutdown
      9. inject: t3 exits by itself with reason {shutdown,done}
     10. exit t3#1 reason={shutdown,done}
    """)
    assert rt.state().phase is sv.Phase.RUNNING
    assert rt.children() == "[t3=not_running, t2=not_running, t1=not_running]"
    assert rt.counts() == "specs=3 active=0 supervisors=0 workers=3"


def test_s07_transient_abnormal_exit_including_killed_is_restarted() -> None:
    rt = FakeRuntime(tree(worker("t1", TRANSIENT), worker("t2", TRANSIENT))).start()
    rt.crash("t1", error("{error,boom}"))
    rt.crash("t2", ExitReason(ExitKind.KILLED))
    assert rt.lines() == otp_trace("""
      1. start t1#1
      2. start t2#1
      3. start sup#1
      4. inject: t1 exits by itself with reason {error,boom}
      5. exit t1#1 reason={error,boom}
      6. log[child_terminated] t1#1 reason={error,boom}
      7. start t1#2
      8. inject: t2 is killed from outside (untrappable kill; exit reason becomes killed)
      9. exit t2#1 reason=killed
     10. log[child_terminated] t2#1 reason=killed
     11. start t2#2
    """)
    assert rt.children() == "[t2=running(t2#2), t1=running(t1#2)]"
    assert rt.counts() == "specs=2 active=2 supervisors=0 workers=2"


def test_s08_temporary_child_is_never_restarted_and_forgotten() -> None:
    temporaries = (worker("tmp1", TEMPORARY), worker("tmp2", TEMPORARY), worker("tmp3", TEMPORARY))
    spec = tree(worker("a"), *temporaries, intensity=0)
    rt = FakeRuntime(spec).start()
    rt.crash("tmp1", CRASH)
    rt.crash("tmp2", NORMAL)
    assert rt.call(sv.TerminateChildCall("tmp3")) == sv.Ok()
    assert rt.call(sv.RestartChildCall("tmp3")) == sv.ApiError("not_found")
    assert rt.lines() == otp_trace("""
      1. start a#1
      2. start tmp1#1
      3. start tmp2#1
      4. start tmp3#1
      5. start sup#1
      6. inject: tmp1 exits by itself with reason crash
      7. exit tmp1#1 reason=crash
      8. log[child_terminated] tmp1#1 reason=crash
      9. inject: tmp2 exits by itself with reason normal
     10. exit tmp2#1 reason=normal
     11. exit tmp3#1 reason=shutdown
     12. call: terminate_child(sup, tmp3) -> ok
     13. call: restart_child(sup, tmp3) -> {error,not_found}
    """)
    assert rt.children() == "[a=running(a#1)]"
    assert rt.counts() == "specs=1 active=1 supervisors=0 workers=1"


def test_s09_one_for_all_stops_and_drops_a_temporary_sibling() -> None:
    """R6: temporary siblings are stopped and dropped, not restarted."""
    spec = tree(worker("a"), worker("tmp", TEMPORARY), worker("b"), strategy=Strategy.ONE_FOR_ALL)
    rt = FakeRuntime(spec).start()
    rt.crash("b", CRASH)
    assert rt.lines()[4:] == [
        "exit b#1 reason=crash",
        "log[child_terminated] b#1 reason=crash",
        "exit tmp#1 reason=shutdown",
        "exit a#1 reason=shutdown",
        "start a#2",
        "start b#2",
    ]
    assert rt.children() == "[b=running(b#2), a=running(a#2)]"
    assert rt.counts() == "specs=2 active=2 supervisors=0 workers=2"


def test_s10_group_restart_revives_stopped_specs() -> None:
    """R6: one_for_all starts every non-temporary spec, running or not: a finished
    transient and a child stopped with terminate_child come back.  A transient exit
    that needs no restart triggers nothing in the group."""
    spec = tree(worker("a"), worker("t", TRANSIENT), worker("b"), worker("c"), strategy=Strategy.ONE_FOR_ALL)
    rt = FakeRuntime(spec).start()
    mark = len(rt.trace)
    rt.crash("t", NORMAL)
    assert rt.lines(mark) == ["exit t#1 reason=normal"]  # nothing else happens
    assert rt.call(sv.TerminateChildCall("b")) == sv.Ok()
    assert rt.children() == "[c=running(c#1), b=not_running, t=not_running, a=running(a#1)]"
    rt.crash("c", CRASH)
    assert rt.lines(mark) == [
        "exit t#1 reason=normal",
        "exit b#1 reason=shutdown",
        "exit c#1 reason=crash",
        "log[child_terminated] c#1 reason=crash",
        "exit a#1 reason=shutdown",
        "start a#2",
        "start t#2",
        "start b#2",
        "start c#2",
    ]
    assert rt.children() == "[c=running(c#2), b=running(b#2), t=running(t#2), a=running(a#2)]"
    assert rt.counts() == "specs=4 active=4 supervisors=0 workers=4"


def test_s11_intensity_exceeded_the_supervisor_shuts_down() -> None:
    rt = FakeRuntime(three(intensity=2, period=5)).start()
    for _ in range(3):
        rt.crash("b", CRASH)
    assert rt.lines() == otp_trace("""
      1. start a#1
      2. start b#1
      3. start c#1
      4. start sup#1
      5. inject: b exits by itself with reason crash
      6. exit b#1 reason=crash
      7. log[child_terminated] b#1 reason=crash
      8. start b#2
      9. inject: b exits by itself with reason crash
     10. exit b#2 reason=crash
     11. log[child_terminated] b#2 reason=crash
     12. start b#3
     13. inject: b exits by itself with reason crash
     14. exit b#3 reason=crash
     15. log[child_terminated] b#3 reason=crash
     16. log[shutdown] b#3 reason=reached_max_restart_intensity
     17. exit c#1 reason=shutdown
     18. exit a#1 reason=shutdown
     19. exit sup#1 reason=shutdown
    """)
    assert rt.exits["sup"] == SHUTDOWN


def test_s12_intensity_zero_the_first_restart_is_fatal() -> None:
    rt = FakeRuntime(tree(worker("a"), worker("b"), intensity=0, period=5)).start()
    rt.crash("a", CRASH)
    assert rt.lines() == otp_trace("""
      1. start a#1
      2. start b#1
      3. start sup#1
      4. inject: a exits by itself with reason crash
      5. exit a#1 reason=crash
      6. log[child_terminated] a#1 reason=crash
      7. log[shutdown] a#1 reason=reached_max_restart_intensity
      8. exit b#1 reason=shutdown
      9. exit sup#1 reason=shutdown
    """)
    assert rt.exits["sup"] == SHUTDOWN


def test_s13_one_counter_serves_all_children() -> None:
    """R4: restarts of different children count together."""
    rt = FakeRuntime(three(intensity=2, period=10)).start()
    rt.crash("a", CRASH)
    rt.advance(1.0)
    rt.crash("b", CRASH)
    rt.advance(1.0)
    rt.crash("c", CRASH)
    assert rt.lines()[-6:] == [
        "exit c#1 reason=crash",
        "log[child_terminated] c#1 reason=crash",
        "log[shutdown] c#1 reason=reached_max_restart_intensity",
        "exit b#2 reason=shutdown",
        "exit a#2 reason=shutdown",
        "exit sup#1 reason=shutdown",
    ]


def test_s14_restarts_further_apart_than_the_period_do_not_accumulate() -> None:
    rt = FakeRuntime(tree(worker("a"), intensity=1, period=1)).start()
    rt.crash("a", CRASH)
    rt.advance(2.2)
    rt.crash("a", CRASH)
    rt.advance(2.2)
    rt.crash("a", CRASH)
    assert rt.lines() == otp_trace("""
      1. start a#1
      2. start sup#1
      3. inject: a exits by itself with reason crash
      4. exit a#1 reason=crash
      5. log[child_terminated] a#1 reason=crash
      6. start a#2
      7. (driver waits 2.2s)
      8. inject: a exits by itself with reason crash
      9. exit a#2 reason=crash
     10. log[child_terminated] a#2 reason=crash
     11. start a#3
     12. (driver waits 2.2s)
     13. inject: a exits by itself with reason crash
     14. exit a#3 reason=crash
     15. log[child_terminated] a#3 reason=crash
     16. start a#4
    """)
    assert rt.children() == "[a=running(a#4)]"
    assert rt.counts() == "specs=1 active=1 supervisors=0 workers=1"


def test_s15_the_period_window_uses_whole_seconds() -> None:
    observed = otp_trace("""
      1. start a#1
      2. start supA#1
      3. inject: a exits by itself with reason crash
      4. exit a#1 reason=crash
      5. log[child_terminated] a#1 reason=crash
      6. (first crash was 0.10s after a whole monotonic second; driver waits until 1400ms after it)
      7. start a#2
      8. inject: a exits by itself with reason crash
      9. exit a#2 reason=crash
     10. log[child_terminated] a#2 reason=crash
     11. log[shutdown] a#2 reason=reached_max_restart_intensity
     12. exit supA#1 reason=shutdown
     13. (driver, as parent, stops supA)
     14. start b#1
     15. start supB#1
     16. inject: b exits by itself with reason crash
     17. exit b#1 reason=crash
     18. log[child_terminated] b#1 reason=crash
     19. (first crash was 0.75s after a whole monotonic second; driver waits until 1400ms after it)
     20. start b#2
     21. inject: b exits by itself with reason crash
     22. exit b#2 reason=crash
     23. log[child_terminated] b#2 reason=crash
     24. start b#3
    """)
    run_a = FakeRuntime(tree(worker("a"), intensity=1, period=1), "supA", now=100.0).start()
    run_a.advance(0.10)
    run_a.crash("a", CRASH)  # second 100
    run_a.advance(1.40)
    run_a.crash("a", CRASH)  # second 101: within the window
    run_b = FakeRuntime(tree(worker("b"), intensity=1, period=1), "supB", now=100.0).start()
    run_b.advance(0.75)
    run_b.crash("b", CRASH)  # second 100
    run_b.advance(1.40)
    run_b.crash("b", CRASH)  # second 102: the first is forgotten
    assert run_a.lines() + run_b.lines() == observed
    assert run_a.exits["supA"] == SHUTDOWN
    assert run_b.state().phase is sv.Phase.RUNNING


def mid_tree(root_intensity: int, mid_restart: Restart = PERMANENT) -> SupervisorSpec:
    mid = tree(worker("w1"), worker("w2"), intensity=1, period=5)
    return tree(nested("mid", mid, mid_restart), worker("x"), intensity=root_intensity, period=5)


def test_s16_a_child_supervisor_that_gives_up_is_restarted_by_its_parent() -> None:
    rt = FakeRuntime(mid_tree(1)).start()
    rt.crash("w1", CRASH)
    rt.crash("w1", CRASH)
    assert rt.lines() == otp_trace("""
      1. start w1#1
      2. start w2#1
      3. start mid#1
      4. start x#1
      5. start sup#1
      6. inject: w1 exits by itself with reason crash
      7. exit w1#1 reason=crash
      8. log[child_terminated] w1#1 reason=crash
      9. start w1#2
     10. inject: w1 exits by itself with reason crash
     11. exit w1#2 reason=crash
     12. log[child_terminated] w1#2 reason=crash
     13. log[shutdown] w1#2 reason=reached_max_restart_intensity
     14. exit w2#1 reason=shutdown
     15. exit mid#1 reason=shutdown
     16. log[child_terminated] mid#1 reason=shutdown
     17. start w1#3
     18. start w2#2
     19. start mid#2
    """)
    assert rt.children() == "[x=running(x#1), mid=running(mid#2)[sup]]"
    assert rt.counts() == "specs=2 active=2 supervisors=1 workers=1"
    assert rt.children("sup/mid") == "[w2=running(w2#2), w1=running(w1#3)]"
    assert len(rt.state().restarts) == 1  # the parent paid one restart


def test_s17_a_transient_child_supervisor_that_gives_up_is_not_restarted() -> None:
    """R5: its exit reason, shutdown, is a normal one for a transient spec."""
    rt = FakeRuntime(mid_tree(1, TRANSIENT)).start()
    rt.crash("w1", CRASH)
    rt.crash("w1", CRASH)
    assert rt.lines()[-3:] == [
        "log[shutdown] w1#2 reason=reached_max_restart_intensity",
        "exit w2#1 reason=shutdown",
        "exit mid#1 reason=shutdown",
    ]
    assert rt.children() == "[x=running(x#1), mid=not_running[sup]]"
    assert rt.counts() == "specs=2 active=1 supervisors=1 workers=1"
    assert rt.state().restarts == ()


def test_s18_escalation_to_the_root() -> None:
    rt = FakeRuntime(mid_tree(0)).start()
    rt.crash("w1", CRASH)
    rt.crash("w1", CRASH)
    assert rt.lines() == otp_trace("""
      1. start w1#1
      2. start w2#1
      3. start mid#1
      4. start x#1
      5. start sup#1
      6. inject: w1 exits by itself with reason crash
      7. exit w1#1 reason=crash
      8. log[child_terminated] w1#1 reason=crash
      9. start w1#2
     10. inject: w1 exits by itself with reason crash
     11. exit w1#2 reason=crash
     12. log[child_terminated] w1#2 reason=crash
     13. log[shutdown] w1#2 reason=reached_max_restart_intensity
     14. exit w2#1 reason=shutdown
     15. exit mid#1 reason=shutdown
     16. log[child_terminated] mid#1 reason=shutdown
     17. log[shutdown] mid#1 reason=reached_max_restart_intensity
     18. exit x#1 reason=shutdown
     19. exit sup#1 reason=shutdown
    """)
    assert rt.exits["sup"] == SHUTDOWN


def test_s19_supervisor_shutdown_order_newest_first() -> None:
    rt = FakeRuntime(tree(worker("a"), worker("b"), worker("c"), worker("d"))).start()
    result = rt.call(sv.StartChildCall(worker("e")))
    assert result == sv.Ok(rt.pid_of("e"))
    assert rt.children() == "[e=running(e#1), d=running(d#1), c=running(c#1), b=running(b#1), a=running(a#1)]"
    rt.stop(SHUTDOWN)
    assert rt.lines() == otp_trace("""
      1. start a#1
      2. start b#1
      3. start c#1
      4. start d#1
      5. start sup#1
      6. start e#1
      7. call: start_child(sup, e) -> {ok,'<e#1>'}
      8. snapshot before stop: which_children = [e=running(e#1), d=running(d#1), c=running(c#1), b=running(b#1), a=running(a#1)]
      9. inject: parent sends exit signal shutdown to the supervisor
     10. exit e#1 reason=shutdown
     11. exit d#1 reason=shutdown
     12. exit c#1 reason=shutdown
     13. exit b#1 reason=shutdown
     14. exit a#1 reason=shutdown
     15. exit sup#1 reason=shutdown
    """)
    assert rt.exits["sup"] == SHUTDOWN


def test_s20_exits_of_processes_that_are_not_children_are_ignored() -> None:
    """The untrappable kill of the supervisor itself is the runtime's business (it kills
    the subtree without asking the machine); what the machine owns is ignoring exits
    that are not its children's, including a stale pid under a child's key."""
    rt = FakeRuntime(tree(worker("a"))).start()
    before = rt.state()
    for event in (sv.ChildExited("stranger", 4242, SHUTDOWN), sv.ChildExited("a", 4242, CRASH)):
        state, actions = sv.decide(rt.state(), event, rt.now)
        assert actions == [] and state == before
    assert rt.children() == "[a=running(a#1)]"


def test_s21_shutdown_values_timeout_brutal_kill_infinity() -> None:
    spec = tree(
        worker("a", shutdown=1000),
        worker("b", shutdown=500),
        worker("c", shutdown=1000),
        worker("d", shutdown="brutal_kill"),
        worker("e", shutdown="infinity"),
        worker("f", shutdown=1000),
    )
    rt = FakeRuntime(spec)
    rt.on_stop.update(b=NEVER_EXITS, c=Traps(after=0.2), d=NEVER_EXITS, e=Traps(after=0.3), f=Traps(reason=NORMAL))
    rt.start()
    origin, mark = rt.now, len(rt.trace)
    rt.stop(SHUTDOWN)
    rt.settle()
    assert rt.timed(origin, mark) == otp_trace("""
      8. [+0ms] inject: parent sends exit signal shutdown to the supervisor
      9. [+0ms] signal f#1 reason=shutdown
     10. [+0ms] exit f#1 reason=normal
     11. [+0ms] log[shutdown_error] f#1 reason=normal
     12. [+0ms] signal e#1 reason=shutdown
     13. [+300ms] exit e#1 reason=shutdown
     14. [+300ms] exit d#1 reason=killed
     15. [+300ms] signal c#1 reason=shutdown
     16. [+500ms] exit c#1 reason=shutdown
     17. [+500ms] signal b#1 reason=shutdown
     18. [+1000ms] exit b#1 reason=killed
     19. [+1000ms] log[shutdown_error] b#1 reason=killed
     20. [+1000ms] exit a#1 reason=shutdown
     21. [+1000ms] exit sup#1 reason=shutdown
    """.replace("[+0ms] inject", "inject"))
    assert rt.exits["sup"] == SHUTDOWN


def test_s22_simple_one_for_one_stops_all_at_once_under_one_timer() -> None:
    """R10: the stop request goes to every instance at once, one timer (the template's
    shutdown); survivors are killed when it expires; one shutdown_error per distinct
    reason, with a count."""
    rt = FakeRuntime(tree(worker("dyn", shutdown=500), strategy=Strategy.SIMPLE_ONE_FOR_ONE)).start()
    rt.on_stop.update(x2=NEVER_EXITS, x3=Traps(reason=NORMAL), x4=NEVER_EXITS, x5=Traps(after=0.2))
    for name in ("x1", "x2", "x3", "x4", "x5"):
        start_x(rt, name)
    origin, mark, acted = rt.now, len(rt.trace), len(rt.actions)
    rt.stop(SHUTDOWN)
    rt.settle()
    assert rt.timed(origin, mark) == [
        "[+0ms] signal x5#1 reason=shutdown",
        "[+0ms] signal x4#1 reason=shutdown",
        "[+0ms] signal x3#1 reason=shutdown",
        "[+0ms] signal x2#1 reason=shutdown",
        "[+0ms] exit x3#1 reason=normal",
        "[+0ms] exit x1#1 reason=shutdown",
        "[+200ms] exit x5#1 reason=shutdown",
        "[+500ms] exit x4#1 reason=killed",
        "[+500ms] exit x2#1 reason=killed",
        "[+500ms] log[shutdown_error] nb_children=1 reason=normal",
        "[+500ms] log[shutdown_error] nb_children=2 reason=killed",
        "[+500ms] exit sup#1 reason=shutdown",
    ]
    stop_actions = [a for _, a in rt.actions[acted:]]
    assert [a for a in stop_actions if isinstance(a, sv.SetTimer)] == [sv.SetTimer(("shutdown_all", "dyn"), 0.5)]
    errors = [a for a in stop_actions if isinstance(a, sv.Report) and a.kind is sv.ReportKind.SHUTDOWN_ERROR]
    assert [(e.reason, dict(e.detail or {})) for e in errors] == [
        (NORMAL, {"count": 1, "keys": ("dyn-3",)}),
        (ExitReason(ExitKind.KILLED), {"count": 2, "keys": ("dyn-4", "dyn-2")}),
    ]


def test_s23_start_failure_during_init_fails_the_supervisor() -> None:
    rt = FakeRuntime(three())
    rt.fail_starts("b", "error")
    rt.start()
    assert rt.lines() == otp_trace("""
      1. start a#1
      2. start_fail b
      3. log[start_error] b reason={start_failed,b}
      4. exit a#1 reason=shutdown
      5. call: supervisor start -> {error,{shutdown,{failed_to_start_child,b,{start_failed,b}}}}
      6. caller received exit signal with reason {shutdown,{failed_to_start_child,b,{start_failed,b}}}
    """) + ["exit sup#1 reason={shutdown,failed_to_start_child,b,{start_failed,b}}"]
    assert rt.exits["sup"] == shutdown_with("failed_to_start_child,b,{start_failed,b}")
    assert not any(isinstance(a, sv.Ready) for _, a in rt.actions)
    assert [a.key for _, a in rt.actions if isinstance(a, sv.Spawn)] == ["a", "b"]  # c never started


def test_s24_ignore_at_init_at_restart_and_from_start_child() -> None:
    """R8/R13: `ignore` is fine: a temporary spec is dropped, others kept not_running.
    R7: ignore during a restart leaves the child not_running."""
    spec = tree(worker("a"), worker("tmp", TEMPORARY), worker("p"), worker("b"))
    rt = FakeRuntime(spec)
    rt.fail_starts("tmp", "ignore")
    rt.fail_starts("p", "ignore")
    rt.start()
    assert rt.lines() == ["start a#1", "start_ignore tmp", "start_ignore p", "start b#1", "start sup#1"]
    assert rt.children() == "[b=running(b#1), p=not_running, a=running(a#1)]"
    assert rt.counts() == "specs=3 active=2 supervisors=0 workers=3"

    rt.fail_starts("b", "ignore")
    rt.crash("b", CRASH)
    assert rt.lines()[-3:] == ["exit b#1 reason=crash", "log[child_terminated] b#1 reason=crash", "start_ignore b"]
    assert rt.children() == "[b=not_running, p=not_running, a=running(a#1)]"

    rt.fail_starts("t2", "ignore")
    rt.fail_starts("p2", "ignore")
    assert rt.call(sv.StartChildCall(worker("t2", TEMPORARY))) == sv.Ok(None)
    assert rt.call(sv.StartChildCall(worker("p2"))) == sv.Ok(None)
    assert rt.children() == "[p2=not_running, b=not_running, p=not_running, a=running(a#1)]"


def test_s25_a_failed_restart_is_retried_between_other_requests() -> None:
    rt = FakeRuntime(tree(worker("a"), worker("b"), intensity=5))
    rt.start_delay["b"] = 0.1  # every start attempt of b takes 100 ms
    rt.start()
    rt.settle()
    rt.fail_starts("b", "error", "error", "error")
    rt.crash("b", CRASH)
    rt.advance(0.15)
    assert rt.children() == "[b=restarting, a=running(a#1)]"
    rt.advance(0.20)  # the third attempt failed, the fourth runs
    assert rt.counts() == "specs=2 active=1 supervisors=0 workers=2"
    rt.settle()
    assert rt.lines() == otp_trace("""
      1. start a#1
      2. start b#1
      3. start sup#1
      4. inject: b exits by itself with reason crash
      5. exit b#1 reason=crash
      6. log[child_terminated] b#1 reason=crash
      7. start_fail b
      8. log[start_error] b#1 reason={start_failed,b}
      9. start_fail b
     10. log[start_error] b#1 reason={start_failed,b}
     11. snapshot 150ms after the crash: which_children = [b=restarting, a=running(a#1)]
     12. start_fail b
     13. log[start_error] b#1 reason={start_failed,b}
     14. count_children = specs=2 active=1 supervisors=0 workers=2
     15. start b#2
    """)
    assert rt.children() == "[b=running(b#2), a=running(a#1)]"
    assert rt.counts() == "specs=2 active=2 supervisors=0 workers=2"
    assert len(rt.state().restarts) == 4  # every attempt counts


def test_s25_requests_queued_during_an_attempt_are_served_before_the_retry() -> None:
    rt = FakeRuntime(tree(worker("a"), worker("b"), intensity=5)).start()
    rt.start_delay["b"] = 0.1
    rt.fail_starts("b", "error")
    rt.crash("b", CRASH)  # attempt 1 in flight for 100 ms
    rt.send("sup", sv.ApiRequest(77, sv.RestartChildCall("b")))
    rt.send("sup", sv.ApiRequest(78, sv.TerminateChildCall("a")))
    rt.run()
    assert 77 not in rt.replies  # deferred while the machine waits on the start
    rt.settle()
    assert rt.replies[77] == sv.ApiError("restarting")
    assert rt.replies[78] == sv.Ok()
    assert rt.lines()[-4:] == [
        "start_fail b",
        "log[start_error] b#1 reason={start_failed,b}",
        "exit a#1 reason=shutdown",  # the calls were served between the attempts
        "start b#2",
    ]


def test_s26_a_restart_that_keeps_failing_exhausts_intensity() -> None:
    rt = FakeRuntime(three(intensity=2)).start()
    rt.fail_starts("b", *["error"] * 6)
    rt.crash("b", CRASH)
    assert rt.lines() == otp_trace("""
      1. start a#1
      2. start b#1
      3. start c#1
      4. start sup#1
      5. inject: b exits by itself with reason crash
      6. exit b#1 reason=crash
      7. log[child_terminated] b#1 reason=crash
      8. start_fail b
      9. log[start_error] b#1 reason={start_failed,b}
     10. start_fail b
     11. log[start_error] b#1 reason={start_failed,b}
     12. log[shutdown] b#1 reason=reached_max_restart_intensity
     13. exit c#1 reason=shutdown
     14. exit a#1 reason=shutdown
     15. exit sup#1 reason=shutdown
    """)
    assert rt.exits["sup"] == SHUTDOWN


def test_s27_one_for_all_retry_restarts_the_whole_group_again() -> None:
    """R7: the retry scope of one_for_all is the whole group, including the children
    already restarted by the failed attempt."""
    rt = FakeRuntime(three(Strategy.ONE_FOR_ALL)).start()
    rt.fail_starts("c", "error")
    rt.crash("b", CRASH)
    assert rt.lines()[4:] == [
        "exit b#1 reason=crash",
        "log[child_terminated] b#1 reason=crash",
        "exit c#1 reason=shutdown",
        "exit a#1 reason=shutdown",
        "start a#2",
        "start b#2",
        "start_fail c",
        "log[start_error] c#1 reason={start_failed,c}",
        "exit b#2 reason=shutdown",
        "exit a#2 reason=shutdown",
        "start a#3",
        "start b#3",
        "start c#2",
    ]
    assert rt.children() == "[c=running(c#2), b=running(b#3), a=running(a#3)]"
    assert len(rt.state().restarts) == 2


def test_s28_rest_for_one_retry_restarts_from_the_failed_child_on() -> None:
    rt = FakeRuntime(tree(worker("a"), worker("b"), worker("c"), worker("d"), strategy=Strategy.REST_FOR_ONE)).start()
    rt.fail_starts("c", "error")
    rt.crash("b", CRASH)
    assert rt.lines()[5:] == [
        "exit b#1 reason=crash",
        "log[child_terminated] b#1 reason=crash",
        "exit d#1 reason=shutdown",
        "exit c#1 reason=shutdown",
        "start b#2",
        "start_fail c",
        "log[start_error] c#1 reason={start_failed,c}",
        "start c#2",
        "start d#2",
    ]
    assert rt.children() == "[d=running(d#2), c=running(c#2), b=running(b#2), a=running(a#1)]"


def test_s29_dynamic_api_on_one_for_one() -> None:
    rt = FakeRuntime(tree(worker("a"))).start()
    b = worker("b")
    first = rt.call(sv.StartChildCall(b))
    assert first == sv.Ok(rt.pid_of("b"))
    assert rt.call(sv.StartChildCall(b)) == sv.ApiError("already_started", pid=rt.pid_of("b"))
    assert rt.children() == "[b=running(b#1), a=running(a#1)]"
    assert rt.call(sv.TerminateChildCall("b")) == sv.Ok()
    assert rt.call(sv.TerminateChildCall("b")) == sv.Ok()
    assert rt.children() == "[b=not_running, a=running(a#1)]"
    assert rt.call(sv.StartChildCall(b)) == sv.ApiError("already_present")
    assert rt.call(sv.RestartChildCall("b")) == sv.Ok(rt.pid_of("b"))
    assert rt.call(sv.RestartChildCall("b")) == sv.ApiError("running")
    assert rt.call(sv.DeleteChildCall("b")) == sv.ApiError("running")
    assert rt.call(sv.TerminateChildCall("b")) == sv.Ok()
    assert rt.call(sv.DeleteChildCall("b")) == sv.Ok()
    assert rt.call(sv.RestartChildCall("b")) == sv.ApiError("not_found")
    assert rt.call(sv.DeleteChildCall("b")) == sv.ApiError("not_found")
    assert rt.call(sv.TerminateChildCall("zzz")) == sv.ApiError("not_found")
    invalid = rt.call(sv.StartChildCall(ChildSpec(id="bogus", start="m:B", shutdown=Shutdown.timeout(-1))))
    assert isinstance(invalid, sv.ApiError) and invalid.reason == "invalid_child_spec"
    assert 'shutdown must be milliseconds >= 0, "brutal_kill" or "infinity"; got -1' in str(invalid.detail)
    rt.fail_starts("c", "error")
    assert rt.call(sv.StartChildCall(worker("c"))) == sv.ApiError("start_failed", detail="{start_failed,c}")
    a_spec = sv.which_children(rt.state())[-1].spec  # get_childspec's content
    assert a_spec == worker("a") and a_spec.effective_shutdown == Shutdown.timeout(1000)
    assert rt.call(sv.TerminateChildCall("a")) == sv.Ok()
    assert rt.lines() == otp_trace("""
      1. start a#1
      2. start sup#1
      3. start b#1
      4. call: start_child(sup, spec b) -> {ok,'<b#1>'}
      5. call: start_child(sup, spec b) again -> {error,{already_started,'<b#1>'}}
      6. snapshot after adding b: which_children = [b=running(b#1), a=running(a#1)]
      7. exit b#1 reason=shutdown
      8. call: terminate_child(sup, b) -> ok
      9. call: terminate_child(sup, b) again (not running) -> ok
     10. snapshot after terminate b: which_children = [b=not_running, a=running(a#1)]
     11. call: start_child(sup, spec b) while b is stopped -> {error,already_present}
     12. start b#2
     13. call: restart_child(sup, b) -> {ok,'<b#2>'}
     14. call: restart_child(sup, b) while running -> {error,running}
     15. call: delete_child(sup, b) while running -> {error,running}
     16. exit b#2 reason=shutdown
     17. call: terminate_child(sup, b) -> ok
     18. call: delete_child(sup, b) -> ok
     19. call: restart_child(sup, b) after delete -> {error,not_found}
     20. call: delete_child(sup, b) after delete -> {error,not_found}
     21. call: terminate_child(sup, zzz) -> {error,not_found}
     22. call: start_child(sup, spec with restart=bogus) -> {error,{invalid_restart_type,bogus}}
     23. start_fail c
     24. call: start_child(sup, spec c) whose start fails -> {error,{{start_failed,c},{child,undefined,c,{otp_ref,start_worker,[c]},permanent,false,1000,worker,[otp_ref]}}}
     25. call: get_childspec(sup, a) -> {ok,#{id => a,modules => [otp_ref],restart => permanent,shutdown => 1000,significant => false,start => {otp_ref,start_worker,[a]},type => worker}}
     26. exit a#1 reason=shutdown
     27. call: terminate_child(sup, a) -> ok
    """)
    assert rt.children() == "[a=not_running]"
    assert rt.counts() == "specs=1 active=0 supervisors=0 workers=1"
    assert len(rt.state().restarts) == 0  # terminate_child counts no restart


def test_s30_dynamic_api_on_simple_one_for_one() -> None:
    rt = FakeRuntime(sofo()).start()
    rt.fail_starts("x3", "ignore")
    rt.fail_starts("x4", "error")
    assert start_x(rt, "x1") == sv.Ok(rt.pid_of("x1"))
    assert start_x(rt, "x2") == sv.Ok(rt.pid_of("x2"))
    assert start_x(rt, "x3") == sv.Ok(None)
    assert start_x(rt, "x4") == sv.ApiError("start_failed", detail="{start_failed,x4}")
    assert start_x(rt, "x1") == sv.Ok(rt.pid_of("x1#2"))
    assert rt.children() == "[undefined=running(x1#1), undefined=running(x1#2), undefined=running(x2#1)]"
    assert rt.counts() == "specs=1 active=3 supervisors=0 workers=3"
    assert rt.call(sv.RestartChildCall("dyn")) == sv.ApiError("simple_one_for_one")
    assert rt.call(sv.DeleteChildCall("dyn")) == sv.ApiError("simple_one_for_one")
    assert rt.call(sv.TerminateChildCall("dyn")) == sv.ApiError("simple_one_for_one")
    x2 = rt.pid_of("x2")
    assert isinstance(x2, int)
    assert rt.call(sv.TerminateChildCall(x2)) == sv.Ok()
    assert rt.call(sv.TerminateChildCall(x2, target_alive=False)) == sv.Ok()
    assert rt.call(sv.TerminateChildCall(99999, target_alive=True)) == sv.ApiError("not_found")
    assert rt.lines() == otp_trace("""
      1. start sup#1
      2. start x1#1
      3. call: start_child(sup, [x1]) -> {ok,'<x1#1>'}
      4. start x2#1
      5. call: start_child(sup, [x2]) -> {ok,'<x2#1>'}
      6. start_ignore x3
      7. call: start_child(sup, [x3]) (start returns ignore) -> {ok,undefined}
      8. start_fail x4
      9. call: start_child(sup, [x4]) (start fails) -> {error,{start_failed,x4}}
     10. start x1#2
     11. call: start_child(sup, [x1]) again (same args allowed) -> {ok,'<x1#2>'}
     12. snapshot after starts: which_children = [undefined=running(x1#1), undefined=running(x1#2), undefined=running(x2#1)]
     13. count_children = specs=1 active=3 supervisors=0 workers=3
     14. call: restart_child(sup, dyn) -> {error,simple_one_for_one}
     15. call: delete_child(sup, dyn) -> {error,simple_one_for_one}
     16. call: terminate_child(sup, dyn) (an id, not a pid) -> {error,simple_one_for_one}
     17. exit x2#1 reason=shutdown
     18. call: terminate_child(sup, <pid of x2>) -> ok
     19. call: terminate_child(sup, <pid of x2>) again (pid now dead) -> ok
     20. call: terminate_child(sup, <live pid that is not a child>) -> {error,not_found}
    """)
    assert rt.children() == "[undefined=running(x1#1), undefined=running(x1#2)]"
    assert rt.counts() == "specs=1 active=2 supervisors=0 workers=2"


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        (tree(worker("a"), worker("a")), 'duplicate child id "a"'),
        (tree(worker("a"), intensity=-1), "intensity must be an integer >= 0; got -1"),
        (tree(worker("a"), period=0), "period must be an integer >= 1 (seconds); got 0"),
        (tree(worker("a"), worker("b"), strategy=Strategy.SIMPLE_ONE_FOR_ONE), "needs exactly one child spec; got 2"),
        (tree(worker("s", TRANSIENT, significant=True)), "needs the supervisor's auto_shutdown"),
    ],
)
def test_s31_validation_of_a_supervisor_spec(spec: SupervisorSpec, problem: str) -> None:
    with pytest.raises(ValueError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        sv.init_state(spec, "sup")


@pytest.mark.parametrize(
    ("auto_shutdown", "child", "problem"),
    [
        (AutoShutdown.NEVER, worker("s", TRANSIENT, significant=True), "auto_shutdown"),
        (AutoShutdown.ANY_SIGNIFICANT, worker("s", PERMANENT, significant=True), "not allowed on a permanent child"),
        (AutoShutdown.NEVER, ChildSpec(id="d", start="m:D", shutdown=Shutdown.timeout(-1)), "shutdown must be"),
        (AutoShutdown.NEVER, ChildSpec(id="d", start="not_mfa"), 'start must be "module:Class"'),
        (AutoShutdown.ANY_SIGNIFICANT, worker("s", TRANSIENT, significant=True), None),
    ],
)
def test_s31_validation_of_start_child(auto_shutdown: AutoShutdown, child: ChildSpec, problem: str | None) -> None:
    rt = FakeRuntime(tree(worker("a"), auto_shutdown=auto_shutdown)).start()
    result = rt.call(sv.StartChildCall(child))
    if problem is None:
        assert isinstance(result, sv.Ok)
    else:
        assert isinstance(result, sv.ApiError) and result.reason == "invalid_child_spec"
        assert problem in str(result.detail)


def test_s31_defaults_are_otps() -> None:
    rt = FakeRuntime(SupervisorSpec(children=(ChildSpec(id="d", start="otp_ref:start_worker"),))).start()
    state = rt.state()
    assert (state.spec.strategy, state.spec.intensity, state.spec.period) == (Strategy.ONE_FOR_ONE, 1, 5)
    info = sv.which_children(state)[0]
    defaults = (info.restart, info.spec.significant, info.spec.effective_shutdown)
    assert defaults == (PERMANENT, False, Shutdown.timeout(5000))
    rt.stop()
    assert rt.lines() == ["start d#1", "start sup#1", "exit d#1 reason=shutdown", "exit sup#1 reason=shutdown"]


def test_s32_any_significant_transient_finishing_shuts_the_supervisor_down() -> None:
    s = worker("s", TRANSIENT, significant=True)
    spec = tree(worker("a"), s, worker("c"), auto_shutdown=AutoShutdown.ANY_SIGNIFICANT)
    rt = FakeRuntime(spec).start()
    rt.crash("s", NORMAL)
    assert rt.lines() == otp_trace("""
      1. start a#1
      2. start s#1
      3. start c#1
      4. start sup#1
      5. inject: s exits by itself with reason normal
      6. exit s#1 reason=normal
      7. exit c#1 reason=shutdown
      8. exit a#1 reason=shutdown
      9. exit sup#1 reason=shutdown
    """)
    assert rt.exits["sup"] == SHUTDOWN
    assert "auto_shutdown" in rt.report_kinds()


def test_s33_a_significant_transient_that_crashes_is_simply_restarted() -> None:
    s = worker("s", TRANSIENT, significant=True)
    spec = tree(worker("a"), s, worker("c"), auto_shutdown=AutoShutdown.ANY_SIGNIFICANT)
    rt = FakeRuntime(spec).start()
    rt.crash("s", CRASH)
    assert rt.state().phase is sv.Phase.RUNNING
    rt.crash("s", NORMAL)
    assert rt.lines()[4:] == [
        "exit s#1 reason=crash",
        "log[child_terminated] s#1 reason=crash",
        "start s#2",
        "exit s#2 reason=normal",
        "exit c#1 reason=shutdown",
        "exit a#1 reason=shutdown",
        "exit sup#1 reason=shutdown",
    ]


def test_s34_all_significant_waits_for_the_last_significant_child() -> None:
    spec = tree(
        worker("s1", TEMPORARY, significant=True),
        worker("s2", TEMPORARY, significant=True),
        worker("a"),
        auto_shutdown=AutoShutdown.ALL_SIGNIFICANT,
    )
    rt = FakeRuntime(spec).start()
    rt.crash("s1", CRASH)
    assert rt.children() == "[a=running(a#1), s2=running(s2#1)]"
    rt.crash("s2", NORMAL)
    assert rt.lines() == otp_trace("""
      1. start s1#1
      2. start s2#1
      3. start a#1
      4. start sup#1
      5. inject: s1 exits by itself with reason crash
      6. exit s1#1 reason=crash
      7. log[child_terminated] s1#1 reason=crash
      8. snapshot after s1 crash: which_children = [a=running(a#1), s2=running(s2#1)]
      9. inject: s2 exits by itself with reason normal
     10. exit s2#1 reason=normal
     11. exit a#1 reason=shutdown
     12. exit sup#1 reason=shutdown
    """)
    assert rt.exits["sup"] == SHUTDOWN


def test_s35_terminate_child_or_a_group_restart_never_triggers_auto_shutdown() -> None:
    spec = tree(
        worker("a"),
        worker("s", TRANSIENT, significant=True),
        worker("b"),
        strategy=Strategy.ONE_FOR_ALL,
        auto_shutdown=AutoShutdown.ANY_SIGNIFICANT,
    )
    rt = FakeRuntime(spec).start()
    assert rt.call(sv.TerminateChildCall("s")) == sv.Ok()
    assert rt.state().phase is sv.Phase.RUNNING
    assert rt.children() == "[b=running(b#1), s=not_running, a=running(a#1)]"
    assert rt.call(sv.RestartChildCall("s")) == sv.Ok(rt.pid_of("s"))
    rt.crash("b", CRASH)  # s is stopped as a bystander of the group restart
    assert rt.lines()[4:] == [
        "exit s#1 reason=shutdown",
        "start s#2",
        "exit b#1 reason=crash",
        "log[child_terminated] b#1 reason=crash",
        "exit s#2 reason=shutdown",
        "exit a#1 reason=shutdown",
        "start a#2",
        "start s#3",
        "start b#2",
    ]
    assert rt.state().phase is sv.Phase.RUNNING
    assert "auto_shutdown" not in rt.report_kinds()
