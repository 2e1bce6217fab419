"""config/diff.py: what a reload changes, step by step, and in which order."""

from __future__ import annotations

from dataclasses import replace

from supervisor_tree.config.diff import StepKind, diff, explicit_heartbeats
from supervisor_tree.config.load import parse_config
from supervisor_tree.spec import NodeSpec


def spec(text: str) -> NodeSpec:
    return parse_config(text, check_imports=False)


BASE = """
[node]
heartbeat = { interval = 0.5, misses = 4 }

[tree]
strategy = "one_for_one"
intensity = 5

[[tree.children]]
id = "core"
type = "supervisor"
strategy = "rest_for_one"
[[tree.children.children]]
id = "registry"
start = "m:Registry"
[[tree.children.children]]
id = "session"
start = "m:Session"
args = { ttl = 30 }
[[tree.children.children]]
id = "queue"
start = "m:Queue"

[[tree.children]]
id = "pool_members"
type = "supervisor"
strategy = "simple_one_for_one"
[[tree.children.children]]
id = "member"
start = "m:Member"
args = { size = 1 }

[[tree.children]]
id = "web"
start = "m:Web"
heartbeat = { interval = 1.0, misses = 3 }
"""


def steps(old: str, new: str, **kw: object) -> list[tuple[str, str, str | None]]:
    return [(s.kind.value, s.supervisor, s.child) for s in diff(spec(old), spec(new), **kw).steps]  # type: ignore[arg-type]


def test_the_same_config_changes_nothing() -> None:
    changes = diff(spec(BASE), spec(BASE))
    assert changes.steps == () and changes.problems == ()
    assert ("root/core", "session") in changes.unchanged and ("root", "web") in changes.unchanged


def test_flags_are_one_step_in_place() -> None:
    changes = diff(spec(BASE), spec(BASE.replace("intensity = 5", "intensity = 9\nperiod = 30")))
    assert [(s.kind, s.supervisor, s.changed) for s in changes.steps] == [
        (StepKind.FLAGS, "root", ("intensity 5 -> 9", "period 5 -> 30"))
    ]


def test_a_changed_child_is_one_change_naming_what_differs() -> None:
    changes = diff(spec(BASE), spec(BASE.replace("ttl = 30", "ttl = 60")))
    step, record = changes.steps
    assert (step.kind, step.supervisor, step.child, step.changed) == (StepKind.CHANGE, "root/core", "session", ("args.ttl 30 -> 60",))
    # the nested supervisor keeps running; its parent records its new spec, in place
    assert (record.kind, record.supervisor, record.child, record.changed) == (StepKind.RECORD, "root", "core", ("children",))
    assert ("root/core", "registry") in changes.unchanged and ("root/core", "queue") in changes.unchanged


def test_a_child_added_in_the_middle_goes_before_its_first_kept_successor() -> None:
    new = BASE.replace('[[tree.children.children]]\nid = "queue"',
                       '[[tree.children.children]]\nid = "cache"\nstart = "m:Cache"\n'
                       '[[tree.children.children]]\nid = "cache2"\nstart = "m:Cache"\n'
                       '[[tree.children.children]]\nid = "queue"')  # fmt: skip
    changes = diff(spec(BASE), spec(new))
    adds = [(s.child, s.before) for s in changes.steps if s.kind is StepKind.ADD]
    assert adds == [("cache", "queue"), ("cache2", "queue")]
    assert [s.kind for s in changes.steps] == [StepKind.ADD, StepKind.ADD, StepKind.RECORD]


def test_removals_run_newest_first_over_the_whole_tree_and_before_additions() -> None:
    new = spec(BASE)
    core = new.tree.children[0]
    assert core.supervisor is not None
    trimmed = replace(core, supervisor=replace(core.supervisor, children=core.supervisor.children[1:2]))
    moved = replace(core.supervisor.children[2], id="queue")  # queue moves from core to the root
    new = replace(new, tree=replace(new.tree, children=(trimmed, new.tree.children[1], moved)))
    assert [(k, p, c) for k, p, c in [(s.kind.value, s.supervisor, s.child) for s in diff(spec(BASE), new).steps]] == [
        ("remove", "root", "web"),
        ("remove", "root/core", "queue"),
        ("remove", "root/core", "registry"),
        ("add", "root", "queue"),
        ("record", "root", "core"),
    ]


def test_a_new_order_is_a_flags_step() -> None:
    new = spec(BASE)
    core = new.tree.children[0]
    assert core.supervisor is not None
    swapped = replace(core.supervisor, children=tuple(reversed(core.supervisor.children)))
    new = replace(new, tree=replace(new.tree, children=(replace(core, supervisor=swapped), *new.tree.children[1:])))
    flags = [s for s in diff(spec(BASE), new).steps if s.kind is StepKind.FLAGS]
    assert [(s.supervisor, s.changed) for s in flags] == [("root/core", ("order queue, session, registry",))]


HB = "heartbeat {interval=0.5, misses=4} -> {interval=0.25, misses=4}"


def test_the_node_heartbeat_changes_the_workers_that_use_it_and_no_supervisor() -> None:
    new = spec(BASE.replace("interval = 0.5", "interval = 0.25"))
    changes = diff(spec(BASE), replace(new, tree=explicit_heartbeats(new.tree, new.heartbeat)))
    assert [(s.kind.value, s.child, s.changed) for s in changes.steps] == [
        ("flags", None, ("template member: " + HB,)),
        ("change", "registry", (HB,)),
        ("change", "session", (HB,)),
        ("change", "queue", (HB,)),
        ("instances", "member", (HB,)),
        ("record", "core", ("children",)),
        ("record", "pool_members", ("children",)),
    ]
    # the specs handed to the supervisors carry the new interval: what they start beats at it at once
    assert all(s.spec.heartbeat == new.heartbeat for s in changes.steps if s.kind.value in ("change", "instances"))  # type: ignore[union-attr]
    assert ("root", "web") in changes.unchanged  # it has a heartbeat of its own


def test_a_new_template_restarts_the_instances_after_taking_the_flags() -> None:
    changes = diff(spec(BASE), spec(BASE.replace("size = 1", "size = 2")))
    assert [(s.kind, s.supervisor, s.changed) for s in changes.steps] == [
        (StepKind.FLAGS, "root/pool_members", ("template member: args.size 1 -> 2",)),
        (StepKind.INSTANCES, "root/pool_members", ("args.size 1 -> 2",)),
        (StepKind.RECORD, "root", ("children",)),
    ]


def test_a_nested_supervisors_own_fields_are_recorded_in_place_and_its_children_untouched() -> None:
    new = BASE.replace('strategy = "rest_for_one"', 'strategy = "rest_for_one"\nshutdown = 10000')
    changes = diff(spec(BASE), spec(new))
    assert [(s.kind, s.child, s.changed) for s in changes.steps] == [(StepKind.RECORD, "core", ("shutdown infinity -> 10000",))]


def test_a_nested_supervisor_to_simple_one_for_one_is_restarted_whole() -> None:
    new = spec(BASE)
    core = new.tree.children[0]
    assert core.supervisor is not None
    sofo = replace(core.supervisor, strategy=new.tree.children[1].supervisor.strategy, children=core.supervisor.children[:1])  # type: ignore[union-attr]
    new = replace(new, tree=replace(new.tree, children=(replace(core, supervisor=sofo), *new.tree.children[1:])))
    (step,) = diff(spec(BASE), new).steps
    assert (step.kind, step.child, step.changed) == (StepKind.CHANGE, "core", ("strategy rest_for_one -> simple_one_for_one",))


def test_the_root_to_simple_one_for_one_is_a_problem() -> None:
    new = '[tree]\nstrategy = "simple_one_for_one"\n[[tree.children]]\nid = "t"\nstart = "m:T"\n'
    changes = diff(spec(BASE), spec(new))
    assert changes.steps == () and "cannot change to or from simple_one_for_one" in changes.problems[0]


def test_a_child_no_config_declared_is_kept() -> None:
    old = spec(BASE.replace('[[tree.children]]\nid = "web"', '[[tree.children]]\nid = "dyn"\nstart = "m:Dyn"\n[[tree.children]]\nid = "web"'))
    declared = frozenset({"core", "registry", "session", "queue", "pool_members", "web"})
    changes = diff(old, spec(BASE), declared)
    assert changes.steps == () and changes.kept == (("root", "dyn"),)
    assert [s.child for s in diff(old, spec(BASE)).steps] == ["dyn"]


def test_a_new_preload_is_a_node_step_first() -> None:
    changes = diff(spec(BASE), spec(BASE.replace("[node]", '[node]\npreload = ["m"]').replace("ttl = 30", "ttl = 1")))
    assert [s.kind for s in changes.steps] == [StepKind.NODE, StepKind.CHANGE, StepKind.RECORD]
    assert changes.steps[0].changed == ("preload [] -> ['m']",)
