"""The supervisor as a pure state machine: `decide(state, event, now) -> (state, actions)`.

Owns OTP's supervisor behaviour (otp-scenarios.md R1-R14): what to start, stop,
restart, report and answer, given what happened.  It never spawns, signals, sleeps
or reads a clock: the runtime feeds it events with the time and carries out the
actions it returns, in order.  Beside it, pure too: strategies.py (decision tables),
intensity.py (restart window, backoff delays), steps.py (how a plan's
start and stop steps run), state.py (the state record, which_children,
count_children) and messages.py (the messages).  Import the public names
from here.

    >>> from supervisor_tree.spec import ChildSpec, SupervisorSpec, error
    >>> state = init_state(SupervisorSpec(children=(ChildSpec(id="a", start="m:A"),)), "root")
    >>> state, actions = decide(state, InitRequested(), now=0.0)
    >>> [(type(a).__name__, a.key, a.generation) for a in actions]
    [('Spawn', 'a', 1)]
    >>> state, actions = decide(state, ChildStarted("a", 4121), now=0.1)
    >>> [type(a).__name__ for a in actions], state.phase.value
    (['Report', 'Ready'], 'running')
    >>> state, actions = decide(state, ChildExited("a", 4121, error("boom")), now=2.0)
    >>> [a.kind.value if isinstance(a, Report) else type(a).__name__ for a in actions]
    ['exited', 'child_terminated', 'restarting', 'Spawn']

How it works.  Starting or stopping a child is a step the machine waits on: it
emits Spawn / AskStop / Kill and waits for the answering event.  A job made of such
steps (the initial start, a group restart, the final stop, an API call that starts
or stops) is a `Plan`; while one runs, every other event is deferred, in order, and
handled once it is finished, as OTP's mailbox would.  A failed restart queues its
retry behind those deferred events (R7), so API calls and stop requests get in
between attempts (S25).

Extension beyond OTP: `ChildSpec.backoff`.  A restart of such a child is charged to
intensity at once, then delayed: Report(RESTARTING, detail={"delay": d}) and
SetTimer(("backoff", key), d); the child shows RESTARTING and the machine stays
responsive (not busy) until the timer fires and the restart runs.  For one_for_one
and simple_one_for_one that restarts the child alone.  For one_for_all and
rest_for_one the failed child's delay comes first and then the whole group restart
(stop the scope newest-first, start it oldest-first) runs; the siblings keep
running during the delay.  A failed start after a delay is retried through the
same path, with the next, longer delay.  With backoff unset the behaviour is
exactly OTP's: immediate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import assert_never

from supervisor_tree.otp import changes, intensity, strategies
from supervisor_tree.otp.messages import (
    Action,
    ApiCall,
    ApiError,
    ApiRequest,
    ApiResult,
    AskStop,
    CancelTimer,
    ChildExited,
    ChildIgnored,
    ChildKey,
    ChildStarted,
    ChildStartFailed,
    DeleteChildCall,
    Event,
    Exit,
    InitRequested,
    Kill,
    Ok,
    Pid,
    Ready,
    ReplaceChildCall,
    Reply,
    Report,
    ReportKind,
    RestartChildCall,
    SetTimer,
    Spawn,
    StartChildCall,
    StopRequested,
    TerminateChildCall,
    TimerFired,
    TryAgainRestart,
    UpdateSpecCall,
)
from supervisor_tree.otp.state import (
    Child,
    ChildCounts,
    ChildInfo,
    ChildStatus,
    Deferred,
    Phase,
    Plan,
    PlanKind,
    SupervisorState,
    count_children,
    which_children,
)
from supervisor_tree.otp.steps import (
    advance,
    answer,
    begin_init,
    begin_restart,
    begin_shutdown,
    exit_supervisor,
    forget_process,
    put_child,
    remove_child,
)
from supervisor_tree.otp.strategies import ExitOutcome
from supervisor_tree.spec import (
    SHUTDOWN,
    AutoShutdown,
    ExitReason,
    Strategy,
    SupervisorSpec,
    child_problems,
    spec_problems,
)

__all__ = [
    # the machine and its queries
    "init_state", "decide", "which_children", "count_children",
    "SupervisorState", "Phase", "ChildStatus", "ChildInfo", "ChildCounts", "ChildKey", "Pid",
    # events
    "Event", "InitRequested", "ChildStarted", "ChildStartFailed", "ChildIgnored", "ChildExited",
    "TimerFired", "StopRequested", "ApiRequest",
    "ApiCall", "StartChildCall", "TerminateChildCall", "RestartChildCall", "DeleteChildCall",
    "ReplaceChildCall", "UpdateSpecCall",
    "ApiResult", "Ok", "ApiError",
    # actions
    "Action", "Spawn", "AskStop", "Kill", "SetTimer", "CancelTimer", "Report", "ReportKind",
    "Reply", "Ready", "Exit",
]  # fmt: skip

BACKOFF_TIMER = "backoff"


def init_state(spec: SupervisorSpec, path: str, generations: Mapping[str, int] | None = None) -> SupervisorState:
    """A supervisor that has started nothing yet (phase NEW).  `path` names it in reports ("root/mid").

    `generations`: the last generation each child id had under an earlier incarnation
    of this supervisor, so a restarted sub-tree keeps counting (worker ids name
    incarnations node-wide: "w1#3" is never reused).

    Raises ValueError listing every problem when `spec` is invalid (R14): config.py
    and start_child validate first, so this only guards programming errors."""
    problems = spec_problems(spec)
    if problems:
        raise ValueError(f"supervisor {path}: " + "; ".join(problems))
    simple = spec.strategy is Strategy.SIMPLE_ONE_FOR_ONE
    gens = generations or {}
    children = () if simple else tuple(Child(key=c.id, spec=c, args=c.args, generation=gens.get(c.id, 0)) for c in spec.children)
    return SupervisorState(spec=spec, path=path, children=children)


def decide(state: SupervisorState, event: Event, now: float) -> tuple[SupervisorState, list[Action]]:
    """Handle one event at monotonic time `now` (seconds); return the new state and what to do, in order."""
    out: list[Action] = []
    state = _dispatch(state, event, now, out)
    while state.plan is None and state.deferred and state.phase is Phase.RUNNING:
        item, rest = state.deferred[0], state.deferred[1:]
        state = _handle(replace(state, deferred=rest), item, now, out)
    return state, out


# ---------------------------------------------------------------------------
# Routing


def _dispatch(state: SupervisorState, event: Event, now: float, out: list[Action]) -> SupervisorState:
    match state.phase:
        case Phase.EXITED:
            if isinstance(event, ApiRequest):
                out.append(Reply(event.ref, ApiError("noproc", detail=state.exit_reason)))
            return state
        case Phase.NEW:
            match event:
                case InitRequested():
                    return begin_init(state, out)
                case StopRequested(reason=reason):
                    return exit_supervisor(replace(state, phase=Phase.EXITED, exit_reason=reason), out)
                case _:
                    return replace(state, deferred=state.deferred + (event,))
        case Phase.STARTING | Phase.RUNNING | Phase.STOPPING:
            if state.plan is None:
                return _handle(state, event, now, out)
            answered = answer(state, state.plan.waiting, event, now, out)
            if answered is not None:
                return answered
            if isinstance(event, (ChildStarted, ChildStartFailed, ChildIgnored)):
                return state  # answers no Spawn in flight: stale
            return replace(state, deferred=state.deferred + (event,))
        case _:
            assert_never(state.phase)


def _handle(state: SupervisorState, item: Deferred, now: float, out: list[Action]) -> SupervisorState:
    """An event (or a queued retry) while idle."""
    match item:
        case InitRequested():
            return state  # already initialised
        case ChildStarted() | ChildStartFailed() | ChildIgnored():
            return state  # no Spawn in flight: stale
        case ChildExited(key=key, pid=pid, reason=reason):
            return _on_exit(state, key, pid, reason, now, out)
        case TimerFired(key=timer):
            return _on_timer(state, timer, out)
        case StopRequested(reason=reason):
            return begin_shutdown(state, reason, out)
        case ApiRequest(ref=ref, call=call):
            return _on_api(state, ref, call, out)
        case TryAgainRestart(key=key):
            child = state.child(key)
            if child is None or child.status is not ChildStatus.RESTARTING or child.timer is not None:
                return state  # terminated, deleted or restarted meanwhile
            return _restart(state, child, now, out)
        case _:
            assert_never(item)


# ---------------------------------------------------------------------------
# A child exits by itself (R3), restarts (R4, R6, R7), auto shutdown (R12)


def _on_exit(
    state: SupervisorState, key: ChildKey, pid: Pid, reason: ExitReason, now: float, out: list[Action]
) -> SupervisorState:
    child = state.child(key)
    if child is None or child.status is not ChildStatus.RUNNING or child.pid != pid:
        return state  # an earlier incarnation, or not ours (S20): ignored
    out.append(Report(ReportKind.EXITED, key, pid, child.generation, reason))
    count = child.backoff_count
    if child.spec.backoff is not None and child.started_at is not None:
        if now - child.started_at >= child.spec.backoff.reset_after:
            count = 0  # it ran long enough: the next restart is a first one again
    child = replace(child, status=ChildStatus.NOT_RUNNING, pid=None, last_pid=pid, started_at=None, backoff_count=count)
    state = put_child(state, child)
    terminated = Report(ReportKind.CHILD_TERMINATED, key, pid, child.generation, reason)
    match strategies.exit_outcome(child.spec.restart, reason.kind):
        case ExitOutcome.RESTART:
            out.append(terminated)
            return _restart(state, child, now, out)
        case ExitOutcome.KEEP:
            state = remove_child(state, key) if state.is_simple else state
            return _auto_shutdown(state, child, reason, out)
        case ExitOutcome.FORGET:
            return _auto_shutdown(remove_child(state, key), child, reason, out)
        case ExitOutcome.FORGET_REPORTED:
            out.append(terminated)
            return _auto_shutdown(remove_child(state, key), child, reason, out)
        case _ as unreachable:
            assert_never(unreachable)


def _restart(state: SupervisorState, child: Child, now: float, out: list[Action]) -> SupervisorState:
    """OTP's restart/2: the intensity check, then the strategy's restart (or its backoff delay)."""
    spec = state.spec
    window, allowed = intensity.add_restart(state.restarts, now, spec.intensity, spec.period)
    state = replace(state, restarts=window)
    if not allowed:  # R5: give up
        detail = {"intensity": spec.intensity, "period": spec.period}
        kind = ReportKind.REACHED_MAX_RESTART_INTENSITY
        out.append(Report(kind, child.key, child.last_pid, child.generation, None, detail))
        state = forget_process(state, child)
        return begin_shutdown(state, SHUTDOWN, out)
    backoff = child.spec.backoff
    if backoff is None:
        out.append(Report(ReportKind.RESTARTING, child.key, None, child.generation, None))
        return begin_restart(state, child.key, out)
    n = child.backoff_count + 1
    delay = intensity.backoff_delay(backoff, n, seed=f"{state.path}/{child.key}/{child.generation}/{n}")
    timer = (BACKOFF_TIMER, child.key)
    out.append(Report(ReportKind.RESTARTING, child.key, None, child.generation, None, {"delay": delay}))
    out.append(SetTimer(timer, delay))
    return put_child(state, replace(child, status=ChildStatus.RESTARTING, backoff_count=n, timer=timer))


def _on_timer(state: SupervisorState, timer: tuple[object, ...], out: list[Action]) -> SupervisorState:
    match timer:
        case ("backoff", str() as key):
            child = state.child(key)
            if child is not None and child.timer == timer and child.status is ChildStatus.RESTARTING:
                return begin_restart(put_child(state, replace(child, timer=None)), key, out)
            return state
        case _:
            return state  # a shutdown timer whose stop already ended: stale


def _auto_shutdown(state: SupervisorState, child: Child, reason: ExitReason, out: list[Action]) -> SupervisorState:
    """R12: a significant child ended by itself and is not restarted (S32-S34)."""
    if not child.spec.significant:
        return state
    match state.spec.auto_shutdown:
        case AutoShutdown.NEVER:
            return state
        case AutoShutdown.ANY_SIGNIFICANT:
            pass
        case AutoShutdown.ALL_SIGNIFICANT:
            if any(c.spec.significant and c.status is not ChildStatus.NOT_RUNNING for c in state.children):
                return state
        case _:
            assert_never(state.spec.auto_shutdown)
    out.append(Report(ReportKind.AUTO_SHUTDOWN, child.key, child.last_pid, child.generation, reason))
    return begin_shutdown(state, SHUTDOWN, out)


# ---------------------------------------------------------------------------
# The dynamic API (R13)


def _on_api(state: SupervisorState, ref: int, call: ApiCall, out: list[Action]) -> SupervisorState:
    match call:
        case StartChildCall():
            return _start_child(state, ref, call, out)
        case TerminateChildCall():
            return _terminate_child(state, ref, call, out)
        case RestartChildCall(id=cid):
            return _restart_child(state, ref, cid, out)
        case DeleteChildCall(id=cid):
            return _delete_child(state, ref, cid, out)
        case ReplaceChildCall():
            return changes.replace_child(state, ref, call, out)
        case UpdateSpecCall(spec=spec):
            return changes.update_spec(state, ref, spec, out)
        case _:
            assert_never(call)


def _reply(state: SupervisorState, ref: int, result: ApiResult, out: list[Action]) -> SupervisorState:
    out.append(Reply(ref, result))
    return state


def _start_child(state: SupervisorState, ref: int, call: StartChildCall, out: list[Action]) -> SupervisorState:
    if state.is_simple:
        if call.spec is not None:
            problem = "a simple_one_for_one supervisor starts instances of its template: pass extra_args, not a spec"
            return _reply(state, ref, ApiError("invalid_child_spec", detail=problem), out)
        template = state.spec.children[0]
        child = Child(f"{template.id}-{state.next_instance}", template, {**template.args, **(call.extra_args or {})})
        state = replace(state, next_instance=state.next_instance + 1)
    else:
        if call.spec is None:
            return _reply(state, ref, ApiError("invalid_child_spec", detail="start_child needs a child spec"), out)
        problems = child_problems(call.spec, state.spec.auto_shutdown)
        if problems:
            return _reply(state, ref, ApiError("invalid_child_spec", detail="; ".join(problems)), out)
        existing = state.child(call.spec.id)
        if existing is not None and existing.pid is not None:
            return _reply(state, ref, ApiError("already_started", pid=existing.pid), out)
        if existing is not None:
            return _reply(state, ref, ApiError("already_present"), out)
        child = Child(call.spec.id, call.spec, call.spec.args)
    placed = changes.insert_before(state, child, None if state.is_simple else call.before)  # default: the newest end (R2)
    if placed is None:
        return _reply(state, ref, ApiError("not_found", detail=f'no child "{call.before}" to start {child.key} before'), out)
    state = placed
    return advance(replace(state, plan=Plan(PlanKind.START_CHILD, to_start=(child.key,), ref=ref)), out)


def _terminate_child(state: SupervisorState, ref: int, call: TerminateChildCall, out: list[Action]) -> SupervisorState:
    """Stop per R9, keep the spec (temporary: drop it); no restart, no intensity, no auto shutdown."""
    target = call.target
    if state.is_simple and isinstance(target, str):
        return _reply(state, ref, ApiError("simple_one_for_one"), out)
    if isinstance(target, str):
        child = state.child(target)
    else:  # by pid; a simple_one_for_one instance waiting to be restarted answers to its old pid
        child = next((c for c in state.children if c.pid is not None and c.pid == target), None)
        if child is None and state.is_simple:
            waiting = (c for c in state.children if c.status is ChildStatus.RESTARTING)
            child = next((c for c in waiting if c.last_pid == target), None)
    if child is None:
        if state.is_simple and call.target_alive is False:
            return _reply(state, ref, Ok(), out)  # a dead pid that is not a child: ok (S30)
        return _reply(state, ref, ApiError("not_found"), out)
    plan = Plan(PlanKind.TERMINATE_CHILD, to_stop=(child.key,), ref=ref, result=Ok())
    return advance(replace(state, plan=plan), out)


def _restart_child(state: SupervisorState, ref: int, cid: str, out: list[Action]) -> SupervisorState:
    if state.is_simple:
        return _reply(state, ref, ApiError("simple_one_for_one"), out)
    child = state.child(cid)
    if child is None:
        return _reply(state, ref, ApiError("not_found"), out)
    match child.status:
        case ChildStatus.NOT_RUNNING:
            return advance(replace(state, plan=Plan(PlanKind.RESTART_CHILD, to_start=(cid,), ref=ref)), out)
        case ChildStatus.RESTARTING:
            return _reply(state, ref, ApiError("restarting"), out)
        case ChildStatus.RUNNING | ChildStatus.STARTING | ChildStatus.STOPPING:
            return _reply(state, ref, ApiError("running"), out)
        case _:
            assert_never(child.status)


def _delete_child(state: SupervisorState, ref: int, cid: str, out: list[Action]) -> SupervisorState:
    if state.is_simple:
        return _reply(state, ref, ApiError("simple_one_for_one"), out)
    child = state.child(cid)
    if child is None:
        return _reply(state, ref, ApiError("not_found"), out)
    match child.status:
        case ChildStatus.NOT_RUNNING:
            return _reply(remove_child(state, cid), ref, Ok(), out)
        case ChildStatus.RESTARTING:
            return _reply(state, ref, ApiError("restarting"), out)
        case ChildStatus.RUNNING | ChildStatus.STARTING | ChildStatus.STOPPING:
            return _reply(state, ref, ApiError("running"), out)
        case _:
            assert_never(child.status)


