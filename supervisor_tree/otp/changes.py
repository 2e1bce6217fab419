"""Changing a running supervisor in place: OTP's code_change, and a child's spec replaced.

Owns the two calls a reload needs beyond OTP's dynamic API (messages.py has their
contracts): `UpdateSpecCall` takes a supervisor's new flags (and a
simple_one_for_one template) without touching a child; `ReplaceChildCall` gives one
child a new spec, restarting it at its place when it runs (a rolling restart is a
sequence of these, one answered before the next is sent).  Also where a child
started with `StartChildCall.before` goes in the start order.  Pure, like the rest
of otp/: `supervisor.decide` routes the calls here.

    >>> from supervisor_tree.spec import ChildSpec, SupervisorSpec, Strategy
    >>> from supervisor_tree.otp.supervisor import init_state
    >>> a, b = ChildSpec(id="a", start="m:A"), ChildSpec(id="b", start="m:B")
    >>> state = init_state(SupervisorSpec(children=(a, b)), "root")
    >>> out = []
    >>> state = update_spec(state, 7, SupervisorSpec(Strategy.REST_FOR_ONE, 5, 10, children=(b, a)), out)
    >>> state.spec.strategy.value, [c.key for c in state.children], out
    ('rest_for_one', ['b', 'a'], [Reply(ref=7, result=Ok(pid=None))])
"""

from __future__ import annotations

from dataclasses import replace
from typing import assert_never

from supervisor_tree.otp.messages import Action, ApiError, ApiResult, CancelTimer, Ok, ReplaceChildCall, Reply
from supervisor_tree.otp.state import Child, ChildStatus, Plan, PlanKind, SupervisorState, Swap
from supervisor_tree.otp.steps import advance, put_child, remove_child
from supervisor_tree.spec import Restart, Strategy, SupervisorSpec, child_problems, spec_problems

__all__ = ["update_spec", "replace_child", "insert_before"]


def _reply(state: SupervisorState, ref: int, result: ApiResult, out: list[Action]) -> SupervisorState:
    out.append(Reply(ref, result))
    return state


def update_spec(state: SupervisorState, ref: int, spec: SupervisorSpec, out: list[Action]) -> SupervisorState:
    """code_change: new flags (and template) in place; children named in `spec` take its order."""
    simple = spec.strategy is Strategy.SIMPLE_ONE_FOR_ONE
    if simple != state.is_simple:
        was, now = state.spec.strategy.value, spec.strategy.value
        why = f"strategy {was} -> {now} cannot change in place (a simple_one_for_one supervisor holds instances, not specs)"
        return _reply(state, ref, ApiError("invalid_change", detail=why), out)
    problems = spec_problems(spec)
    if problems:
        return _reply(state, ref, ApiError("invalid_child_spec", detail="; ".join(problems)), out)
    children = state.children if simple else _reordered(state.children, [c.id for c in spec.children])
    return _reply(replace(state, spec=spec, children=children), ref, Ok(), out)


def _reordered(children: tuple[Child, ...], order: list[str]) -> tuple[Child, ...]:
    """The children named in `order` in that relative order, in the slots they hold; the others stay put."""
    rank = {key: i for i, key in enumerate(order)}
    slots = [i for i, c in enumerate(children) if c.key in rank]
    named = sorted((children[i] for i in slots), key=lambda c: rank[c.key])
    out = list(children)
    for i, child in zip(slots, named):
        out[i] = child
    return tuple(out)


def replace_child(state: SupervisorState, ref: int, call: ReplaceChildCall, out: list[Action]) -> SupervisorState:
    child = state.child(call.key)
    if child is None:
        return _reply(state, ref, ApiError("not_found"), out)
    spec = call.spec
    if not state.is_simple and spec.id != call.key:
        why = f'a child keeps its id: the new spec of "{call.key}" has id "{spec.id}"'
        return _reply(state, ref, ApiError("invalid_child_spec", detail=why), out)
    problems = child_problems(spec, state.spec.auto_shutdown)
    if problems:
        return _reply(state, ref, ApiError("invalid_child_spec", detail="; ".join(problems)), out)
    args = call.args if call.args is not None else child.args if state.is_simple else spec.args
    match child.status:
        case ChildStatus.RUNNING if call.restart:
            new = replace(child, spec=spec, args=args, status=ChildStatus.NOT_RUNNING, pid=None, last_pid=child.pid,
                          started_at=None, backoff_count=0, timer=None)  # fmt: skip
            old = replace(child, status=ChildStatus.NOT_RUNNING, pid=None, last_pid=child.pid, started_at=None)
            swap = Swap(slot=state.children.index(child), new=new, old=old)
            plan = Plan(PlanKind.REPLACE_CHILD, to_stop=(child.key,), to_start=(child.key,), ref=ref, swap=swap)
            return advance(replace(state, plan=plan), out)
        case ChildStatus.NOT_RUNNING | ChildStatus.RESTARTING if spec.restart is Restart.TEMPORARY:
            if child.timer is not None:  # a temporary child is never restarted, nor kept without a process
                out.append(CancelTimer(child.timer))
            return _reply(remove_child(state, child.key), ref, Ok(None), out)
        case ChildStatus.RUNNING | ChildStatus.NOT_RUNNING | ChildStatus.RESTARTING:
            # In place; a pending restart (backoff timer, retry) starts the new spec.
            return _reply(put_child(state, replace(child, spec=spec, args=args)), ref, Ok(child.pid), out)
        case ChildStatus.STARTING | ChildStatus.STOPPING:  # only while busy, when calls wait: unreachable
            return _reply(state, ref, ApiError("running", pid=child.pid), out)
        case _:
            assert_never(child.status)


def insert_before(state: SupervisorState, child: Child, before: str | None) -> SupervisorState | None:
    """`state` with `child` added to the start order: just before `before`, or at the newest end
    (None).  None when `before` is not a child."""
    if before is None:
        return replace(state, children=state.children + (child,))
    at = next((i for i, c in enumerate(state.children) if c.key == before), None)
    if at is None:
        return None
    return replace(state, children=state.children[:at] + (child,) + state.children[at:])
