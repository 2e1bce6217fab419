"""Changing a running supervisor (otp/changes.py): code_change of its flags, a child's spec
replaced with or without a restart, and start_child at a place in the start order."""

from __future__ import annotations

from dataclasses import replace

import pytest

from supervisor_tree.otp import supervisor as sv
from supervisor_tree.spec import SHUTDOWN, Restart, Strategy, error
from tests.unit.driver import FakeRuntime, Traps, nested, tree, worker

CRASH = error("crash")


def running(rt: FakeRuntime, path: str | None = None) -> dict[str, tuple[object, int]]:
    """key -> (pid, generation) of the children that run."""
    return {i.key: (i.pid, i.generation) for i in sv.which_children(rt.state(path)) if i.status is sv.ChildStatus.RUNNING}


# ---------------------------------------------------------------------- code_change: UpdateSpecCall


def test_new_flags_apply_in_place_and_no_child_is_touched() -> None:
    rt = FakeRuntime(tree(worker("a"), worker("b"), intensity=0, period=5)).start()
    before, since = running(rt), len(rt.trace)
    result = rt.call(sv.UpdateSpecCall(tree(worker("a"), worker("b"), strategy=Strategy.REST_FOR_ONE, intensity=3, period=60)))
    assert result == sv.Ok()
    assert running(rt) == before and rt.lines(since) == []
    assert [type(a).__name__ for _, a in rt.actions[-1:]] == ["Reply"]
    state = rt.state()
    assert (state.spec.strategy, state.spec.intensity, state.spec.period) == (Strategy.REST_FOR_ONE, 3, 60)
    # The new intensity counts: with 0 the first crash would stop the supervisor; now three are allowed.
    for _ in range(3):
        rt.crash("a", CRASH)
    assert rt.state().phase is sv.Phase.RUNNING
    # ... and the new strategy: a's crash restarted its successor b too (rest_for_one).
    assert running(rt)["b"][1] == 4


def test_children_take_the_new_order_and_a_child_the_spec_does_not_name_keeps_its_slot() -> None:
    rt = FakeRuntime(tree(worker("a"), worker("b"), worker("c"))).start()
    assert rt.call(sv.StartChildCall(worker("dyn"), before="b")) == sv.Ok(rt.pid_of("dyn"))
    assert [c.key for c in rt.state().children] == ["a", "dyn", "b", "c"]
    before = running(rt)
    assert rt.call(sv.UpdateSpecCall(tree(worker("c"), worker("a"), worker("b")))) == sv.Ok()
    assert [c.key for c in rt.state().children] == ["c", "dyn", "a", "b"]
    assert running(rt) == before
    rt.stop()
    assert rt.lines()[-5:] == ["exit b#1 reason=shutdown", "exit a#1 reason=shutdown", "exit dyn#1 reason=shutdown",
                               "exit c#1 reason=shutdown", "exit sup#1 reason=shutdown"]  # fmt: skip


@pytest.mark.parametrize("old, new", [(Strategy.ONE_FOR_ONE, Strategy.SIMPLE_ONE_FOR_ONE),
                                      (Strategy.SIMPLE_ONE_FOR_ONE, Strategy.ONE_FOR_ALL)])  # fmt: skip
def test_to_or_from_simple_one_for_one_is_refused_and_nothing_changes(old: Strategy, new: Strategy) -> None:
    rt = FakeRuntime(tree(worker("a"), strategy=old)).start()
    state = rt.state()
    result = rt.call(sv.UpdateSpecCall(tree(worker("a"), strategy=new)))
    assert isinstance(result, sv.ApiError) and result.reason == "invalid_change"
    assert "cannot change in place" in str(result.detail)
    assert rt.state() == state


def test_an_invalid_spec_is_refused() -> None:
    rt = FakeRuntime(tree(worker("a"))).start()
    result = rt.call(sv.UpdateSpecCall(tree(worker("a"), worker("a"))))
    assert isinstance(result, sv.ApiError) and result.reason == "invalid_child_spec"
    assert 'duplicate child id "a"' in str(result.detail)


def test_a_new_template_is_what_the_next_instance_starts() -> None:
    rt = FakeRuntime(tree(worker("t", args={"v": 1}), strategy=Strategy.SIMPLE_ONE_FOR_ONE)).start()
    rt.call(sv.StartChildCall(extra_args={"name": "one"}))
    first = running(rt)
    rt.call(sv.UpdateSpecCall(tree(worker("t", args={"v": 2}), strategy=Strategy.SIMPLE_ONE_FOR_ONE)))
    rt.call(sv.StartChildCall(extra_args={"name": "two"}))
    spawns = [a for _, a in rt.actions if isinstance(a, sv.Spawn)]
    assert [dict(s.args) for s in spawns] == [{"v": 1, "name": "one"}, {"v": 2, "name": "two"}]
    assert {k: v for k, v in running(rt).items() if k in first} == first


# ---------------------------------------------------------------------- ReplaceChildCall


def test_a_replaced_child_stops_by_its_old_rules_and_starts_its_new_spec_at_its_place() -> None:
    rt = FakeRuntime(tree(worker("a"), worker("b", shutdown=250), worker("c"), strategy=Strategy.REST_FOR_ONE)).start()
    rt.on_stop["b"] = Traps(after=0.1)
    a, c = running(rt)["a"], running(rt)["c"]
    new = replace(worker("b", shutdown="brutal_kill"), args={"v": 2})
    ref = 77
    rt.send("sup", sv.ApiRequest(ref, sv.ReplaceChildCall("b", new)))
    rt.run()
    stop = [type(x).__name__ for _, x in rt.actions[-2:]]
    assert stop == ["AskStop", "SetTimer"]  # the old spec's shutdown (250 ms), not the new brutal_kill
    assert ref not in rt.replies
    rt.settle()
    b = running(rt)["b"]
    assert rt.replies[ref] == sv.Ok(b[0]) and b[1] == 2
    spawn = [x for _, x in rt.actions if isinstance(x, sv.Spawn)][-1]
    assert (spawn.spec, dict(spawn.args), spawn.generation) == (new, {"v": 2}, 2)
    assert running(rt)["a"] == a and running(rt)["c"] == c  # rest_for_one: c was not restarted
    assert [c.key for c in rt.state().children] == ["a", "b", "c"]
    assert rt.state().restarts == ()  # no intensity charged


def test_a_new_spec_that_does_not_start_gives_way_to_the_old_one() -> None:
    rt = FakeRuntime(tree(worker("a"), worker("b", args={"v": 1}))).start()
    old_spec = rt.state().child("b").spec  # type: ignore[union-attr]
    rt.fail_starts("b", "error")
    result = rt.call(sv.ReplaceChildCall("b", worker("b", args={"v": 2})))
    assert isinstance(result, sv.ApiError) and result.reason == "start_failed"
    assert "previous spec was started again" in str(result.detail)
    child = rt.state().child("b")
    assert child is not None and child.status is sv.ChildStatus.RUNNING and child.pid == result.pid
    assert child.spec == old_spec and child.generation == 3  # 2 failed, 3 is the old spec again
    assert rt.lines()[3:7] == ["exit b#1 reason=shutdown", "start_fail b", "log[start_error] b#1 reason={start_failed,b}", "start b#2"]


def test_when_neither_spec_starts_the_child_is_left_not_running() -> None:
    rt = FakeRuntime(tree(worker("a"), worker("b"))).start()
    rt.fail_starts("b", "error", "error")
    result = rt.call(sv.ReplaceChildCall("b", worker("b", args={"v": 2})))
    assert isinstance(result, sv.ApiError) and result.reason == "start_failed"
    assert "did not start again either" in str(result.detail)
    assert rt.children() == "[b=not_running, a=running(a#1)]"


def test_in_place_replacement_starts_and_stops_nothing() -> None:
    sub = tree(worker("x"))
    rt = FakeRuntime(tree(worker("a"), nested("s", sub))).start()
    before, since = running(rt), len(rt.trace)
    new = replace(nested("s", tree(worker("x"), worker("y"))), restart=Restart.TRANSIENT)
    assert rt.call(sv.ReplaceChildCall("s", new, restart=False)) == sv.Ok(before["s"][0])
    assert rt.state().child("s").spec == new  # type: ignore[union-attr]
    assert running(rt) == before and rt.lines(since) == []


def test_a_child_with_no_process_takes_its_new_spec_in_place() -> None:
    rt = FakeRuntime(tree(worker("a", Restart.TRANSIENT))).start()
    rt.crash("a", SHUTDOWN)  # transient, normal exit: kept, not running
    assert rt.call(sv.ReplaceChildCall("a", worker("a", Restart.TRANSIENT, args={"v": 2}))) == sv.Ok(None)
    assert rt.children() == "[a=not_running]"
    assert rt.call(sv.RestartChildCall("a")) == sv.Ok(rt.pid_of("a"))
    spawn = [x for _, x in rt.actions if isinstance(x, sv.Spawn)][-1]
    assert dict(spawn.args) == {"v": 2}


@pytest.mark.parametrize("restart", [Restart.TEMPORARY, Restart.PERMANENT], ids=lambda r: r.value)
def test_an_instance_of_simple_one_for_one_keeps_its_key_args_and_count(restart: Restart) -> None:
    rt = FakeRuntime(tree(worker("t", restart, args={"v": 1}), strategy=Strategy.SIMPLE_ONE_FOR_ONE)).start()
    rt.call(sv.StartChildCall(extra_args={"name": "one"}))
    rt.call(sv.StartChildCall(extra_args={"name": "two"}))
    two = running(rt)["t-2"]
    result = rt.call(sv.ReplaceChildCall("t-1", worker("t", restart, args={"v": 2}), args={"v": 2, "name": "one"}))
    assert isinstance(result, sv.Ok)
    assert running(rt)["t-1"] == (result.pid, 2) and running(rt)["t-2"] == two
    assert rt.lines()[-2:] == ["exit one#1 reason=shutdown", "start one#2"]


def test_a_replacement_waits_for_a_busy_supervisor_and_other_events_wait_for_it() -> None:
    rt = FakeRuntime(tree(worker("a"), worker("b"))).start()
    rt.start_delay["b"] = 1.0
    ref = 5
    rt.send("sup", sv.ApiRequest(ref, sv.ReplaceChildCall("b", worker("b", args={"v": 2}))))
    rt.run()
    assert rt.state().busy and ref not in rt.replies
    rt.crash("a", CRASH)  # while b's new spec starts: deferred, then handled
    assert "exit a#1 reason=crash" not in rt.lines()
    rt.settle()
    assert isinstance(rt.replies[ref], sv.Ok)
    assert rt.lines()[-4:] == ["start b#2", "exit a#1 reason=crash", "log[child_terminated] a#1 reason=crash", "start a#2"]


@pytest.mark.parametrize("call, reason", [
    (sv.ReplaceChildCall("nope", worker("nope")), "not_found"),
    (sv.ReplaceChildCall("a", worker("b")), "invalid_child_spec"),
])  # fmt: skip
def test_bad_replacements_are_refused(call: sv.ReplaceChildCall, reason: str) -> None:
    rt = FakeRuntime(tree(worker("a"), worker("b"))).start()
    state = rt.state()
    result = rt.call(call)
    assert isinstance(result, sv.ApiError) and result.reason == reason
    assert rt.state() == state


# ---------------------------------------------------------------------- start_child at a place


def test_a_child_started_before_another_is_its_predecessor_for_rest_for_one() -> None:
    rt = FakeRuntime(tree(worker("a"), worker("c"), strategy=Strategy.REST_FOR_ONE)).start()
    assert isinstance(rt.call(sv.StartChildCall(worker("b"), before="c")), sv.Ok)
    assert [c.key for c in rt.state().children] == ["a", "b", "c"]
    since = len(rt.trace)
    rt.crash("b", CRASH)
    assert rt.lines(since) == ["exit b#1 reason=crash", "log[child_terminated] b#1 reason=crash",
                               "exit c#1 reason=shutdown", "start b#2", "start c#2"]  # fmt: skip


def test_start_child_before_a_child_that_is_not_there_starts_nothing() -> None:
    rt = FakeRuntime(tree(worker("a"))).start()
    result = rt.call(sv.StartChildCall(worker("b"), before="zz"))
    assert isinstance(result, sv.ApiError) and result.reason == "not_found" and "zz" in str(result.detail)
    assert rt.children() == "[a=running(a#1)]"
