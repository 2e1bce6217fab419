"""Phases, deferral, generations, statuses in flight, and the API in states the
scenarios do not show (R1, R2, R7, R8, R13)."""

from __future__ import annotations

import pytest

from supervisor_tree.otp import supervisor as sv
from supervisor_tree.spec import NORMAL, SHUTDOWN, ChildSpec, Restart, Strategy, error, shutdown_with
from tests.unit.driver import NEVER_EXITS, FakeRuntime, nested, tree, worker

CRASH = error("crash")


def test_the_initial_start_is_one_child_at_a_time_in_order() -> None:
    state = sv.init_state(tree(worker("a"), worker("b")), "root")
    assert state.phase is sv.Phase.NEW
    state, actions = sv.decide(state, sv.InitRequested(), 0.0)
    assert [(type(a).__name__, getattr(a, "key", None)) for a in actions] == [("Spawn", "a")]
    assert state.phase is sv.Phase.STARTING and state.busy
    assert [(i.key, i.status) for i in sv.which_children(state)] == [
        ("b", sv.ChildStatus.NOT_RUNNING),
        ("a", sv.ChildStatus.STARTING),
    ]
    state, actions = sv.decide(state, sv.ChildStarted("a", 11), 0.1)
    assert [type(a).__name__ for a in actions] == ["Report", "Spawn"]
    state, actions = sv.decide(state, sv.ChildStarted("b", 12), 0.2)
    assert actions == [sv.Report(sv.ReportKind.STARTED, "b", 12, 1, None), sv.Ready()]
    assert state.phase is sv.Phase.RUNNING and not state.busy


def test_events_before_init_wait_for_it() -> None:
    state = sv.init_state(tree(worker("a")), "root")
    state, actions = sv.decide(state, sv.ApiRequest(1, sv.TerminateChildCall("a")), 0.0)
    assert actions == [] and len(state.deferred) == 1
    state, actions = sv.decide(state, sv.InitRequested(), 0.0)
    state, actions = sv.decide(state, sv.ChildStarted("a", 11), 0.0)
    assert [type(a).__name__ for a in actions] == ["Report", "Ready", "AskStop", "SetTimer"]


def test_a_stop_before_init_exits_without_starting_anything() -> None:
    state = sv.init_state(tree(worker("a")), "root")
    state, _ = sv.decide(state, sv.ApiRequest(1, sv.DeleteChildCall("a")), 0.0)
    state, actions = sv.decide(state, sv.StopRequested(SHUTDOWN), 0.0)
    assert actions == [sv.Reply(1, sv.ApiError("noproc", detail=SHUTDOWN)), sv.Exit(SHUTDOWN)]
    assert state.phase is sv.Phase.EXITED


def test_a_stop_during_init_is_served_after_it() -> None:
    rt = FakeRuntime(tree(worker("a"), worker("b")))
    rt.start_delay["b"] = 1.0
    rt.start()
    rt.stop()
    assert rt.state().phase is sv.Phase.STARTING
    rt.settle()
    assert rt.lines() == [
        "start a#1",
        "start b#1",
        "start sup#1",
        "exit b#1 reason=shutdown",
        "exit a#1 reason=shutdown",
        "exit sup#1 reason=shutdown",
    ]


def test_after_exit_calls_get_noproc_and_the_rest_is_ignored() -> None:
    rt = FakeRuntime(tree(worker("a"))).start()
    rt.stop(shutdown_with("bye"))
    state = rt.state()
    assert sv.decide(state, sv.ApiRequest(5, sv.RestartChildCall("a")), 9.0) == (
        state,
        [sv.Reply(5, sv.ApiError("noproc", detail=shutdown_with("bye")))],
    )
    for event in (sv.InitRequested(), sv.StopRequested(SHUTDOWN), sv.ChildExited("a", 1, CRASH), sv.TimerFired(("x",))):
        assert sv.decide(state, event, 9.0) == (state, [])


def test_deferred_events_are_handled_in_arrival_order() -> None:
    rt = FakeRuntime(tree(worker("a"), worker("b"), worker("c", shutdown="infinity")))
    rt.on_stop["c"] = NEVER_EXITS
    rt.start()
    assert rt.call(sv.TerminateChildCall("c")) is None  # c hangs: the machine is busy
    rt.crash("a", CRASH)
    rt.send("sup", sv.ApiRequest(50, sv.RestartChildCall("a")))
    rt.send("sup", sv.ApiRequest(51, sv.TerminateChildCall("b")))
    rt.run()
    assert [type(e).__name__ for e in rt.state().deferred] == ["ChildExited", "ApiRequest", "ApiRequest"]
    mark = len(rt.trace)
    rt.die(rt.pid_of("c"), SHUTDOWN)
    rt.run()
    assert rt.lines(mark) == [
        "exit c#1 reason=shutdown",
        "exit a#1 reason=crash",  # the exit first: a is restarted ...
        "log[child_terminated] a#1 reason=crash",
        "start a#2",
        "exit b#1 reason=shutdown",  # ... then the calls, in order
    ]
    assert rt.replies[50] == sv.ApiError("running") and rt.replies[51] == sv.Ok()


def test_a_stop_queued_before_a_retry_wins() -> None:
    """R7: the retry goes behind what was already waiting; a stop request served first
    means it never happens."""
    rt = FakeRuntime(tree(worker("a"), worker("b"))).start()
    rt.start_delay["b"] = 0.1
    rt.fail_starts("b", "error", "error")
    rt.crash("b", CRASH)
    rt.stop()
    rt.settle()
    assert rt.lines()[-4:] == [
        "start_fail b",
        "log[start_error] b#1 reason={start_failed,b}",
        "exit a#1 reason=shutdown",
        "exit sup#1 reason=shutdown",
    ]
    assert sum(isinstance(a, sv.Spawn) and a.key == "b" for _, a in rt.actions) == 2


def test_generations_count_every_spawn() -> None:
    rt = FakeRuntime(tree(worker("a"), intensity=10)).start()
    first = rt.pid_of("a")
    rt.fail_starts("a", "error", "error")
    rt.crash("a", CRASH)
    spawns = [(a.key, a.generation) for _, a in rt.actions if isinstance(a, sv.Spawn)]
    assert spawns == [("a", 1), ("a", 2), ("a", 3), ("a", 4)]
    info = sv.which_children(rt.state())[0]
    assert (info.generation, info.pid) == (4, rt.pid_of("a#2"))
    errors = [a for _, a in rt.actions if isinstance(a, sv.Report) and a.kind is sv.ReportKind.START_ERROR]
    assert [(e.generation, e.pid, e.reason) for e in errors] == [
        (2, first, "{start_failed,a}"),  # reported with the previous incarnation's pid, as OTP
        (3, first, "{start_failed,a}"),
    ]


def test_a_child_being_stopped_shows_stopping_and_counts_as_active() -> None:
    rt = FakeRuntime(tree(worker("a"), worker("b", shutdown=1000)))
    rt.on_stop["b"] = NEVER_EXITS
    rt.start()
    rt.call(sv.TerminateChildCall("b"))
    assert rt.children() == "[b=stopping(b#1), a=running(a#1)]"
    assert rt.counts() == "specs=2 active=2 supervisors=0 workers=2"
    rt.advance(1.0)
    assert rt.children() == "[b=not_running, a=running(a#1)]"


def test_stale_start_answers_and_unknown_timers_are_ignored() -> None:
    rt = FakeRuntime(tree(worker("a"))).start()
    state = rt.state()
    for event in (
        sv.ChildStarted("a", 77),
        sv.ChildStartFailed("a", "late"),
        sv.ChildIgnored("zzz"),
        sv.TimerFired(("shutdown", "a", 1)),
        sv.TimerFired(("backoff", "a")),
        sv.InitRequested(),
    ):
        assert sv.decide(state, event, 1.0) == (state, [])


def test_terminate_child_by_pid_on_a_supervisor_with_specs() -> None:
    rt = FakeRuntime(tree(worker("a"), worker("b"))).start()
    pid = rt.pid_of("b")
    assert isinstance(pid, int)
    assert rt.call(sv.TerminateChildCall(pid)) == sv.Ok()
    assert rt.call(sv.TerminateChildCall(pid, target_alive=False)) == sv.ApiError("not_found")
    assert rt.children() == "[b=not_running, a=running(a#1)]"


@pytest.mark.parametrize(
    ("strategy", "call", "detail"),
    [
        (Strategy.ONE_FOR_ONE, sv.StartChildCall(), "start_child needs a child spec"),
        (Strategy.SIMPLE_ONE_FOR_ONE, sv.StartChildCall(worker("z")), "pass extra_args, not a spec"),
    ],
)
def test_start_child_without_the_right_argument(strategy: Strategy, call: sv.StartChildCall, detail: str) -> None:
    rt = FakeRuntime(tree(worker("a"), strategy=strategy)).start()
    result = rt.call(call)
    assert isinstance(result, sv.ApiError) and result.reason == "invalid_child_spec" and detail in str(result.detail)


def test_start_child_appends_at_the_newest_end_and_a_restart_keeps_its_place() -> None:
    rt = FakeRuntime(tree(worker("a"), worker("b"))).start()
    rt.call(sv.StartChildCall(worker("c")))
    rt.call(sv.TerminateChildCall("a"))
    rt.call(sv.DeleteChildCall("a"))
    rt.call(sv.StartChildCall(worker("a")))  # a comes back as the newest
    rt.crash("b", CRASH)
    assert rt.children() == "[a=running(a#2), c=running(c#1), b=running(b#2)]"
    rt.stop()
    assert rt.lines()[-4:] == [
        "exit a#2 reason=shutdown",
        "exit c#1 reason=shutdown",
        "exit b#2 reason=shutdown",
        "exit sup#1 reason=shutdown",
    ]


def test_restart_child_that_fails_or_ignores() -> None:
    rt = FakeRuntime(tree(worker("a"))).start()
    rt.call(sv.TerminateChildCall("a"))
    rt.fail_starts("a", "error", "ignore")
    assert rt.call(sv.RestartChildCall("a")) == sv.ApiError("start_failed", detail="{start_failed,a}")
    assert rt.call(sv.RestartChildCall("a")) == sv.Ok(None)
    assert rt.children() == "[a=not_running]"
    assert "start_error" not in rt.report_kinds()  # the caller gets the error; OTP logs nothing


def test_a_failing_start_child_keeps_no_spec_and_burns_no_simple_key_twice() -> None:
    rt = FakeRuntime(tree(worker("dyn"), strategy=Strategy.SIMPLE_ONE_FOR_ONE)).start()
    rt.fail_starts("x", "error")
    rt.call(sv.StartChildCall(extra_args={"name": "x"}))
    rt.call(sv.StartChildCall(extra_args={"name": "x"}))
    assert [i.key for i in sv.which_children(rt.state())] == ["dyn-2"]


def test_a_nested_supervisor_that_fails_to_start_fails_its_parents_start() -> None:
    rt = FakeRuntime(tree(worker("x"), nested("mid", tree(worker("w1"), worker("w2")))))
    rt.fail_starts("w2", "error")
    rt.start()
    assert rt.lines() == [
        "start x#1",
        "start w1#1",
        "start_fail w2",
        "log[start_error] w2 reason={start_failed,w2}",
        "exit w1#1 reason=shutdown",
        "log[start_error] mid reason={shutdown,failed_to_start_child,w2,{start_failed,w2}}",
        "exit x#1 reason=shutdown",
        "exit sup#1 reason={shutdown,failed_to_start_child,mid,{shutdown,failed_to_start_child,w2,{start_failed,w2}}}",
    ]


def test_init_state_of_a_simple_one_for_one_has_no_children_and_is_ready_at_once() -> None:
    state = sv.init_state(tree(worker("dyn", Restart.TEMPORARY), strategy=Strategy.SIMPLE_ONE_FOR_ONE), "root/pool")
    assert sv.which_children(state) == () and sv.count_children(state) == sv.ChildCounts(1, 0, 0, 0)
    state, actions = sv.decide(state, sv.InitRequested(), 0.0)
    assert actions == [sv.Ready()] and state.phase is sv.Phase.RUNNING and state.path == "root/pool"


def test_child_info_fields() -> None:
    spec = ChildSpec(id="a", start="m:A", args={"k": 1}, restart=Restart.TRANSIENT)
    rt = FakeRuntime(tree(spec)).start()
    (info,) = sv.which_children(rt.state())
    assert (info.key, info.id, info.type.value, info.restart, info.status, info.pid, info.generation) == (
        "a", "a", "worker", Restart.TRANSIENT, sv.ChildStatus.RUNNING, rt.pid_of("a"), 1,
    )  # fmt: skip
    assert info.spec is spec and dict(info.args) == {"k": 1}
    rt.crash("a", NORMAL)
    assert sv.which_children(rt.state())[0].pid is None
