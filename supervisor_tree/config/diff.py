"""What a reload changes: the difference between two NodeSpecs, as ordered steps.

Owns `diff(old, new)`: per supervisor (by path, "root/core"), the children added,
removed and changed, the flags changed, and in which order a running tree must
take them so that nothing unchanged is touched.  Pure: it reads two specs and
returns data; the node binds the steps to what runs (node/reload_plan.py) and
carries them out.

    >>> from supervisor_tree.spec import ChildSpec, NodeSpec, SupervisorSpec
    >>> a, b = ChildSpec(id="a", start="m:A"), ChildSpec(id="b", start="m:B")
    >>> old = NodeSpec(SupervisorSpec(children=(a, b)))
    >>> new = NodeSpec(SupervisorSpec(intensity=3, children=(ChildSpec(id="a", start="m:A", args={"n": 2}),)))
    >>> [(s.kind.value, s.supervisor, s.child, s.changed) for s in diff(old, new).steps]
    [('flags', 'root', None, ('intensity 1 -> 3',)), ('remove', 'root', 'b', ()), ('change', 'root', 'a', ('args.n (none) -> 2',))]

The order: node settings (a new preload refreshes the fork server); every
supervisor's flags, in place, top-down; removals in reverse start order over the
whole tree (they run before any addition, so an id may move between
supervisors); changed children in start order, one at a time; additions in start
order, each just before the first following sibling that already runs; last, bottom-up,
each nested supervisor whose spec changed has its new spec recorded in its parent
(in place: a later restart of that subtree starts the new one).  A change that
cannot be applied to a running tree (the root to or from simple_one_for_one) is a
problem, and a reload with a problem changes nothing.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields, is_dataclass, replace

from supervisor_tree.spec import ChildSpec, Heartbeat, NodeSpec, Shutdown, Strategy, SupervisorSpec

__all__ = ["StepKind", "Step", "Changes", "diff", "child_ids", "explicit_heartbeats", "ROOT"]

ROOT = "root"


class StepKind(enum.Enum):
    NODE = "node"  # a node setting; preload: the fork server re-imports and forks new standbys
    FLAGS = "flags"  # a supervisor's flags (and order, template) in place: UpdateSpecCall
    REMOVE = "remove"  # terminate (its shutdown rules), then delete
    CHANGE = "change"  # restart with the new spec at its place: ReplaceChildCall
    INSTANCES = "instances"  # simple_one_for_one: restart each running instance with the new template
    ADD = "add"  # start_child at its place in the start order
    RECORD = "record"  # a nested supervisor's new spec, taken in place by its parent (nothing restarts)


@dataclass(frozen=True, slots=True)
class Step:
    """One thing to do.  `spec`: the new ChildSpec (REMOVE: the old one), the new
    SupervisorSpec (FLAGS), or None (NODE).  `changed`: what differs, one short text each."""

    kind: StepKind
    supervisor: str
    child: str | None = None
    spec: ChildSpec | SupervisorSpec | None = None
    changed: tuple[str, ...] = ()
    before: str | None = None  # ADD: the sibling it is started before (None: the newest end)


@dataclass(frozen=True, slots=True)
class Changes:
    steps: tuple[Step, ...]
    unchanged: tuple[tuple[str, str], ...]  # (supervisor, id) of every child left alone
    kept: tuple[tuple[str, str], ...] = ()  # children no config declared (start_child): left alone
    notes: tuple[str, ...] = ()  # settings that take effect at the next start
    problems: tuple[str, ...] = ()


def diff(old: NodeSpec, new: NodeSpec, declared: frozenset[str] | None = None) -> Changes:
    """The steps that turn a tree running `old` into one running `new`.

    `declared`: the ids some config declared; a child of `old` that is not in it (one
    start_child added) is kept rather than removed.  None: every child of `old` was declared.
    """
    if (old.tree.strategy is Strategy.SIMPLE_ONE_FOR_ONE) != (new.tree.strategy is Strategy.SIMPLE_ONE_FOR_ONE):
        problem = (f"[tree] strategy {old.tree.strategy.value} -> {new.tree.strategy.value}: the root supervisor cannot "
                   "change to or from simple_one_for_one while it runs; stop the node and start it with the new config")  # fmt: skip
        return Changes((), (), problems=(problem,))
    d = _Differ(old.heartbeat, new.heartbeat, declared)
    d.walk(ROOT, old.tree, new.tree)
    steps: list[Step] = []
    if old.preload != new.preload:
        steps.append(Step(StepKind.NODE, ROOT, changed=(f"preload {list(old.preload)} -> {list(new.preload)}",)))
    records = sorted(d.records, key=lambda s: -s.supervisor.count("/"))  # bottom-up; siblings in start order
    steps += d.flags + d.removes + d.changes + d.adds + records
    notes = []
    if old.name != new.name:
        notes.append(f"[node] name {old.name!r} -> {new.name!r}: shown at once; the run directory keeps its name")
    if old.extra != new.extra:
        notes.append("[profile]: its settings take effect at the next start of the node")
    return Changes(tuple(steps), tuple(d.unchanged), tuple(d.kept), tuple(notes))


def child_ids(spec: SupervisorSpec) -> Iterator[str]:
    """Every child id in the tree, depth first."""
    for child in spec.children:
        yield child.id
        if child.supervisor is not None:
            yield from child_ids(child.supervisor)


class _Differ:
    """One walk over both trees, collecting each phase's steps in its own list."""

    def __init__(self, old_hb: Heartbeat, new_hb: Heartbeat, declared: frozenset[str] | None) -> None:
        self.old_hb, self.new_hb, self.declared = old_hb, new_hb, declared
        self.flags: list[Step] = []
        self.removes: list[Step] = []
        self.changes: list[Step] = []
        self.adds: list[Step] = []
        self.records: list[Step] = []
        self.unchanged: list[tuple[str, str]] = []
        self.kept: list[tuple[str, str]] = []

    def walk(self, path: str, old: SupervisorSpec, new: SupervisorSpec) -> None:
        """Collect the steps for one supervisor and the subtrees it keeps."""
        flags = _flag_changes(old, new)
        if new.strategy is Strategy.SIMPLE_ONE_FOR_ONE:
            template_changes = self._child_changes(old.children[0], new.children[0])
            if old.children[0] != new.children[0]:  # (not for the node's heartbeat alone: the template is the same)
                flags.append(f"template {new.children[0].id}: " + ", ".join(template_changes))
            if flags:
                self.flags.append(Step(StepKind.FLAGS, path, spec=new, changed=tuple(flags)))
            if template_changes:
                self.changes.append(Step(StepKind.INSTANCES, path, new.children[0].id, new.children[0], tuple(template_changes)))
            return
        olds = {c.id: c for c in old.children}
        kept_now = [c.id for c in new.children if c.id in olds]
        if kept_now != [c.id for c in old.children if c.id in set(kept_now)]:
            flags.append("order " + ", ".join(kept_now))
        if flags:
            self.flags.append(Step(StepKind.FLAGS, path, spec=new, changed=tuple(flags)))
        if path == ROOT:
            self._removals(path, old, new)
        for i, child in enumerate(new.children):
            if child.id not in olds:
                before = next((c.id for c in new.children[i + 1 :] if c.id in olds), None)
                self.adds.append(Step(StepKind.ADD, path, child.id, child, before=before))
            else:
                self._kept_child(path, olds[child.id], child)

    def _removals(self, path: str, old: SupervisorSpec, new: SupervisorSpec) -> None:
        """Children of `old` that `new` lacks, newest first over the whole tree (a kept subtree's first)."""
        news = {c.id: c for c in new.children}
        for child in reversed(old.children):
            kept = news.get(child.id)
            if kept is not None:
                if _walked(child, kept):
                    assert child.supervisor is not None and kept.supervisor is not None
                    self._removals(f"{path}/{child.id}", child.supervisor, kept.supervisor)
            elif self.declared is not None and child.id not in self.declared:
                self.kept.append((path, child.id))
            else:
                self.removes.append(Step(StepKind.REMOVE, path, child.id, child))

    def _kept_child(self, path: str, old: ChildSpec, new: ChildSpec) -> None:
        """A child in both trees: a change (restart), a subtree walked (and recorded), or unchanged."""
        own = self._child_changes(old, new)
        if _walked(old, new):
            assert old.supervisor is not None and new.supervisor is not None
            self.walk(f"{path}/{new.id}", old.supervisor, new.supervisor)
            if _explicit(old, self.old_hb) != _explicit(new, self.new_hb):
                self.records.append(Step(StepKind.RECORD, path, new.id, new, tuple(own) or ("children",)))
            else:
                self.unchanged.append((path, new.id))
            return
        if old.supervisor is not None and new.supervisor is not None:  # to or from simple_one_for_one
            own.append(f"strategy {old.supervisor.strategy.value} -> {new.supervisor.strategy.value}")
        if own:
            self.changes.append(Step(StepKind.CHANGE, path, new.id, new, tuple(own)))
        else:
            self.unchanged.append((path, new.id))

    def _child_changes(self, old: ChildSpec, new: ChildSpec) -> list[str]:
        """One text per field that differs (nested trees aside); heartbeat and shutdown as they take effect."""
        a = replace(old, heartbeat=_beat(old, self.old_hb), shutdown=old.effective_shutdown, supervisor=None)
        b = replace(new, heartbeat=_beat(new, self.new_hb), shutdown=new.effective_shutdown, supervisor=None)
        out: list[str] = []
        for f in fields(ChildSpec):
            x, y = getattr(a, f.name), getattr(b, f.name)
            if x == y:
                continue
            if f.name == "args" and isinstance(x, Mapping) and isinstance(y, Mapping):
                out.extend(f"args.{k} {_show(x.get(k, _NONE))} -> {_show(y.get(k, _NONE))}"
                           for k in sorted(set(x) | set(y), key=str) if x.get(k, _NONE) != y.get(k, _NONE))  # fmt: skip
            else:
                out.append(f"{f.name} {_show(x)} -> {_show(y)}")
        return out


_NONE = object()


def _walked(old: ChildSpec, new: ChildSpec) -> bool:
    """A nested supervisor in both trees whose changes are applied inside it (not by restarting it)."""
    if old.supervisor is None or new.supervisor is None:
        return False
    simple = Strategy.SIMPLE_ONE_FOR_ONE
    return (old.supervisor.strategy is simple) == (new.supervisor.strategy is simple)


def explicit_heartbeats(spec: SupervisorSpec, node_default: Heartbeat) -> SupervisorSpec:
    """`spec` with the node's default heartbeat written into every worker that has none.

    A reload that changes the node's default hands the supervisors these specs: a worker it
    starts then beats at the new interval even before the node's own settings change."""
    return replace(spec, children=tuple(_explicit(c, node_default) for c in spec.children))


def _explicit(child: ChildSpec, node_default: Heartbeat) -> ChildSpec:
    if child.supervisor is not None:
        return replace(child, supervisor=explicit_heartbeats(child.supervisor, node_default))
    return child if child.heartbeat is not None else replace(child, heartbeat=node_default)


def _beat(child: ChildSpec, node_default: Heartbeat) -> Heartbeat | None:
    """The heartbeat a worker runs with (its own, else the node's); supervisors have none."""
    return None if child.is_supervisor else child.heartbeat or node_default


def _show(value: object) -> str:
    if value is _NONE or value is None:
        return "(none)"
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, str):
        return repr(value)
    if is_dataclass(value) and not isinstance(value, (type, Shutdown)):  # heartbeat, backoff, retry
        return "{" + ", ".join(f"{f.name}={getattr(value, f.name)}" for f in fields(value)) + "}"
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _flag_changes(old: SupervisorSpec, new: SupervisorSpec) -> list[str]:
    out = []
    for name in ("strategy", "intensity", "period", "auto_shutdown"):
        x, y = getattr(old, name), getattr(new, name)
        if x != y:
            out.append(f"{name} {_show(x)} -> {_show(y)}")
    return out
