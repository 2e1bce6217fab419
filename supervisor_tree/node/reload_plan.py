"""A reload's plan: the steps the node carries out, bound to what runs, and how they read.

Owns turning config/diff.py's `Changes` into numbered `Step`s against the running
supervisors (a new simple_one_for_one template becomes one restart per running
instance), the plan of `reload --code` (the workers whose files changed on disk,
and whether the fork server must import the project's code again first), the
spec of the running tree (`running_spec`, the "old" side of a diff), and the plan's
text and JSON.  Pure: it reads supervisor states and records; node/reload.py
carries the steps out.

    steps = bind(diff(running_spec(sups, node.spec), new_spec), sups)
    print("\\n".join(plan_lines(steps)))
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from supervisor_tree.config.diff import ROOT, Changes, StepKind
from supervisor_tree.otp import supervisor as sv
from supervisor_tree.spec import ChildSpec, NodeSpec, ShutdownKind, SupervisorSpec

__all__ = ["Step", "running_spec", "bind", "code_plan", "plan_lines", "step_line", "step_json", "WorkerCode"]

# What a step does (Step.kind): refresh / preload (the fork server imports the project's code / its
# new preload again), flags
# (UpdateSpecCall), remove (terminate, then delete), change / instance / code (ReplaceChildCall,
# restarted at its place), add (StartChildCall before a sibling), record (ReplaceChildCall in place).
RESTARTS = ("change", "instance", "code")


@dataclass(frozen=True, slots=True)
class Step:
    n: int
    kind: str
    supervisor: str
    child: str | None = None
    why: tuple[str, ...] = ()  # what changed: fields, or files
    spec: ChildSpec | SupervisorSpec | None = None
    args: Mapping[str, object] | None = None  # instance: its args under the new template
    before: str | None = None  # add
    preload: tuple[str, ...] = ()  # refresh
    also: tuple[str, ...] = ()  # refresh: modules to import (the targets about to restart)


# ---------------------------------------------------------------------- the running tree as a spec


def running_spec(sups: Mapping[str, sv.SupervisorState], node: NodeSpec) -> NodeSpec:
    """`node` with its tree as it runs now: each supervisor's flags and its children's specs."""
    return replace(node, tree=_running(sups, ROOT, node.tree))


def _running(sups: Mapping[str, sv.SupervisorState], path: str, recorded: SupervisorSpec) -> SupervisorSpec:
    state = sups.get(path)
    if state is None:
        return recorded  # not running (or gone): its recorded spec is what would start
    if state.is_simple:
        return state.spec
    children = []
    for child in state.children:
        spec = child.spec
        if spec.supervisor is not None:
            spec = replace(spec, supervisor=_running(sups, f"{path}/{child.key}", spec.supervisor))
        children.append(spec)
    return replace(state.spec, children=tuple(children))


# ---------------------------------------------------------------------- config reload


def bind(changes: Changes, sups: Mapping[str, sv.SupervisorState], preload: Sequence[str] = ()) -> list[Step]:
    """Number the steps; a new template becomes one restart per running instance."""
    steps: list[Step] = []

    def add(kind: str, supervisor: str, child: str | None = None, **kw: object) -> None:
        steps.append(Step(len(steps) + 1, kind, supervisor, child, **kw))  # type: ignore[arg-type]

    for s in changes.steps:
        match s.kind:
            case StepKind.NODE:
                add("preload", s.supervisor, why=s.changed, preload=tuple(preload))
            case StepKind.FLAGS:
                add("flags", s.supervisor, why=s.changed, spec=s.spec)
            case StepKind.REMOVE:
                add("remove", s.supervisor, s.child, spec=s.spec)
            case StepKind.CHANGE:
                add("change", s.supervisor, s.child, why=s.changed, spec=s.spec)
            case StepKind.INSTANCES:
                state = sups.get(s.supervisor)
                if state is None:
                    continue
                old, new = state.spec.children[0], s.spec
                assert isinstance(new, ChildSpec)
                for c in state.children:
                    if c.status is sv.ChildStatus.RUNNING:
                        add("instance", s.supervisor, c.key, why=s.changed, spec=new, args=_instance_args(c.args, old, new))
            case StepKind.ADD:
                add("add", s.supervisor, s.child, spec=s.spec, before=s.before)
            case StepKind.RECORD:
                add("record", s.supervisor, s.child, why=s.changed, spec=s.spec)
    return steps


def _instance_args(args: Mapping[str, object], old: ChildSpec, new: ChildSpec) -> dict[str, object]:
    """An instance's args under a new template: the template's, then what its start_child added."""
    extra = {k: v for k, v in args.items() if k not in old.args or old.args[k] != v}
    return {**new.args, **extra}


# ---------------------------------------------------------------------- code reload


@dataclass(frozen=True, slots=True)
class WorkerCode:
    """A worker's code record (worker/code.py) as its supervisor knows the worker."""

    supervisor: str
    key: str
    generation: int
    spec: ChildSpec
    epoch: int
    inherited: tuple[str, ...]
    own: Mapping[str, str]


def code_plan(workers: Sequence[WorkerCode], snapshots: Mapping[int, Mapping[str, str]], current_epoch: int,
              hash_of: Callable[[str], str], preload: Sequence[str],
              fork_server_own: frozenset[str] = frozenset()) -> tuple[list[Step], list[str], list[str]]:  # fmt: skip
    """(the steps: refresh the fork server if it holds a changed file, then each worker whose
    files changed, restarted one at a time; notes on workers that could not be compared;
    problems: changed files the fork server itself runs, which no refresh can renew)."""
    restarts: list[tuple[WorkerCode, tuple[str, ...]]] = []
    notes = []
    for w in workers:
        snapshot = snapshots.get(w.epoch)
        if snapshot is None and w.inherited:
            notes.append(f"{w.key}: forked with code snapshot {w.epoch}, which the node never received; not compared")
            continue
        loaded = {f: (snapshot or {}).get(f, "") for f in w.inherited} | dict(w.own)
        changed = tuple(f for f, h in sorted(loaded.items()) if hash_of(f) != h)
        if changed:
            restarts.append((w, changed))
    stuck = sorted({f for _, files in restarts for f in files if f in fork_server_own})
    if stuck:
        return [], notes, [f"{_files([f])} changed, and the fork server itself runs it: a worker forked now would "
                           "still run the old version; stop the node and start it again to run the new one" for f in stuck]
    steps: list[Step] = []
    held = snapshots.get(current_epoch, {})
    stale = sorted({f for _, files in restarts for f in files if f in held and held[f] != hash_of(f)})
    if stale:
        targets = tuple(dict.fromkeys(_module_of(w.spec) for w, _ in restarts if _module_of(w.spec)))
        steps.append(Step(1, "refresh", ROOT, why=tuple(stale), preload=tuple(preload), also=targets))
    for w, files in restarts:
        steps.append(Step(len(steps) + 1, "code", w.supervisor, w.key, why=files, spec=w.spec))
    return steps, notes, []


def _module_of(spec: ChildSpec) -> str:
    return spec.start.partition(":")[0] if isinstance(spec.start, str) else ""


# ---------------------------------------------------------------------- how a plan reads


def _where(step: Step) -> str:
    return f"{step.supervisor}/{step.child}" if step.child else step.supervisor


def _files(paths: Sequence[str]) -> str:
    cwd = os.getcwd() + "/"
    return ", ".join(p.removeprefix(cwd) for p in paths)


def step_line(step: Step) -> str:
    """One line: `3. change root/core/session: restart with the new spec (args.ttl 1800 -> 60)`."""
    why = ", ".join(step.why)
    match step.kind:
        case "refresh":
            text = f"the fork server imports the project's code again (it holds {_files(step.why)}); new standbys"
        case "preload":
            text = f"the fork server imports its new preload ({why}); new standbys"
        case "flags":
            text = f"in place, no child restarted ({why})"
        case "remove":
            shutdown = step.spec.effective_shutdown if isinstance(step.spec, ChildSpec) else None
            ms = " ms" if shutdown is not None and shutdown.kind is ShutdownKind.TIMEOUT else ""
            text = f"terminate (shutdown {shutdown}{ms}), then delete"
        case "change":
            text = f"restart with the new spec ({why})"
        case "instance":
            text = f"restart with the new template ({why})"
        case "code":
            text = f"restart: its code changed ({_files(step.why)})"
        case "add":
            text = f"start before {step.before}" if step.before else "start (the newest child)"
        case "record":
            text = f"{step.supervisor} takes its new spec in place, nothing restarts ({why})"
        case _:
            text = why
    return f"{step.n}. {step.kind} {_where(step)}: {text}"


def plan_lines(steps: Sequence[Step]) -> list[str]:
    return [step_line(s) for s in steps]


def step_json(step: Step) -> dict[str, object]:
    out: dict[str, object] = {"n": step.n, "kind": step.kind, "supervisor": step.supervisor, "child": step.child,
                              "why": list(step.why), "text": step_line(step)}  # fmt: skip
    if step.before:
        out["before"] = step.before
    return out
