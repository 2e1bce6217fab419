"""node/reload_plan.py: a diff bound to running supervisors, and the plan of `reload --code`."""

from __future__ import annotations

from dataclasses import replace

from supervisor_tree.config.diff import diff
from supervisor_tree.node.reload_plan import WorkerCode, bind, code_plan, plan_lines, running_spec
from supervisor_tree.otp import supervisor as sv
from supervisor_tree.spec import NodeSpec, Strategy
from tests.unit.driver import FakeRuntime, nested, tree, worker


def pool_runtime() -> tuple[FakeRuntime, NodeSpec]:
    members = tree(worker("member", args={"size": 1}), strategy=Strategy.SIMPLE_ONE_FOR_ONE)
    spec = NodeSpec(tree(worker("a"), nested("members", members)))
    rt = FakeRuntime(spec.tree, name="root").start()
    rt.call(sv.StartChildCall(extra_args={"name": "m1", "color": "red"}), "root/members")
    rt.call(sv.StartChildCall(extra_args={"name": "m2"}), "root/members")
    return rt, spec


def test_the_running_spec_is_what_runs_not_what_was_configured() -> None:
    rt, spec = pool_runtime()
    rt.call(sv.StartChildCall(worker("dyn")))  # not in any config
    rt.call(sv.UpdateSpecCall(replace(rt.state("root/members").spec, intensity=7)), "root/members")
    running = running_spec(rt.machines, spec)
    assert [c.id for c in running.tree.children] == ["a", "members", "dyn"]
    assert running.tree.children[1].supervisor.intensity == 7  # type: ignore[union-attr]


def test_a_new_template_restarts_each_running_instance_with_its_own_extra_args() -> None:
    rt, spec = pool_runtime()
    members = spec.tree.children[1].supervisor
    assert members is not None
    new_members = replace(members, children=(worker("member", args={"size": 2}),))
    new = replace(spec, tree=replace(spec.tree, children=(spec.tree.children[0], replace(spec.tree.children[1], supervisor=new_members))))
    steps = bind(diff(running_spec(rt.machines, spec), new), rt.machines)
    assert [(s.kind, s.supervisor, s.child, dict(s.args or {})) for s in steps] == [
        ("flags", "root/members", None, {}),
        ("instance", "root/members", "member-1", {"size": 2, "name": "m1", "color": "red"}),
        ("instance", "root/members", "member-2", {"size": 2, "name": "m2"}),
        ("record", "root", "members", {}),
    ]
    assert plan_lines(steps)[1] == "2. instance root/members/member-1: restart with the new template (args.size 1 -> 2)"


def code(key: str, epoch: int = 1, inherited: tuple[str, ...] = (), own: dict[str, str] | None = None) -> WorkerCode:
    return WorkerCode("root", key, 1, worker(key), epoch, inherited, own or {})


def test_only_workers_whose_files_changed_restart_and_the_fork_server_is_refreshed_when_it_holds_one() -> None:
    disk = {"/p/app.py": "new", "/p/lib.py": "same", "/p/task.py": "new2"}
    snapshots = {1: {"/p/app.py": "old", "/p/lib.py": "same"}}
    workers = [code("a", inherited=("/p/app.py", "/p/lib.py")), code("b", inherited=("/p/lib.py",)),
               code("t", inherited=("/p/lib.py",), own={"/p/task.py": "old2"})]  # fmt: skip
    steps, notes, problems = code_plan(workers, snapshots, 1, disk.__getitem__, ("app",))
    assert [(s.kind, s.child, s.why) for s in steps] == [
        ("refresh", None, ("/p/app.py",)),
        ("code", "a", ("/p/app.py",)),
        ("code", "t", ("/p/task.py",)),
    ]
    assert steps[0].preload == ("app",) and notes == [] and problems == []
    # once the fork server holds the new file, a later reload restarts without refreshing it again
    snapshots[2] = {"/p/app.py": "new", "/p/lib.py": "same"}
    steps, _, _ = code_plan([code("a", inherited=("/p/app.py",))], snapshots, 2, disk.__getitem__, ())
    assert [s.kind for s in steps] == ["code"]


def test_a_changed_file_the_fork_server_runs_itself_refuses_the_reload() -> None:
    steps, _, problems = code_plan([code("a", inherited=("/p/spec.py",))], {1: {"/p/spec.py": "old"}}, 1,
                                   lambda f: "new", (), frozenset({"/p/spec.py"}))  # fmt: skip
    assert steps == [] and "the fork server itself runs it" in problems[0]


def test_a_worker_from_an_unknown_snapshot_is_noted_not_compared() -> None:
    steps, notes, _ = code_plan([code("a", epoch=5, inherited=("/p/app.py",))], {1: {}}, 1, lambda f: "x", ())
    assert steps == [] and "snapshot 5" in notes[0]
