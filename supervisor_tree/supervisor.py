"""The supervisor as a pure state machine: `decide(state, event, now) -> (state, actions)`.

Owns OTP's supervisor behaviour (otp-scenarios.md R1-R14): what to start, stop,
restart, report and answer, given what happened.  It never spawns, signals, sleeps
or reads a clock: the runtime feeds it events with the time, and carries out the
actions it returns.  Decision tables live in strategies.py, the intensity window and
backoff delays in intensity.py, the state record in supervisor_state.py and the
messages in supervisor_events.py; this module re-exports all the public names.

    >>> from supervisor_tree.spec import ChildSpec, SupervisorSpec, error
    >>> state = init_state(SupervisorSpec(children=(ChildSpec(id="a", start="m:A"),)), "root")
    >>> state, actions = decide(state, InitRequested(), now=0.0)
    >>> actions
    [Spawn(key='a', spec=..., args={}, generation=1)]
    >>> state, actions = decide(state, ChildStarted("a", 4121), now=0.1)
    >>> [type(a).__name__ for a in actions]
    ['Report', 'Ready']
    >>> state, actions = decide(state, ChildExited("a", 4121, error("boom")), now=2.0)
    >>> [getattr(a, "kind", a).__class__.__name__ == "ReportKind" and a.kind.value or type(a).__name__ for a in actions]
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
responsive (not busy) until the timer fires and the restart runs.  Under one_for_all
and rest_for_one the delay of the failed child is applied before the whole group
restart (stop the scope, start it again) begins; siblings keep running meanwhile.
With backoff unset the behaviour is exactly OTP's.
"""

from __future__ import annotations

from dataclasses import replace
from typing import assert_never

from . import intensity, strategies
from .spec import SHUTDOWN, AutoShutdown, ExitReason, Restart, ShutdownKind, SupervisorSpec, child_problems
from .spec import shutdown_with, spec_problems
from .strategies import ExitOutcome
from .supervisor_events import (
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
)
from .supervisor_state import (
    AwaitStart,
    AwaitStop,
    AwaitStopAll,
    Child,
    ChildCounts,
    ChildInfo,
    ChildStatus,
    Deferred,
    Phase,
    Plan,
    PlanKind,
    SupervisorState,
    Waiting,
    count_children,
    which_children,
)

__all__ = [
    # queries and the machine
    "init_state", "decide", "which_children", "count_children",
    "SupervisorState", "Phase", "ChildStatus", "ChildInfo", "ChildCounts",
    "ChildKey", "Pid",
    # events
    "Event", "InitRequested", "ChildStarted", "ChildStartFailed", "ChildIgnored", "ChildExited",
    "TimerFired", "StopRequested", "ApiRequest",
    "ApiCall", "StartChildCall", "TerminateChildCall", "RestartChildCall", "DeleteChildCall",
    "ApiResult", "Ok", "ApiError",
    # actions
    "Action", "Spawn", "AskStop", "Kill", "SetTimer", "CancelTimer", "Report", "ReportKind",
    "Reply", "Ready", "Exit",
]  # fmt: skip

_SHUTDOWN_TIMER = "shutdown"
_SHUTDOWN_ALL_TIMER = "shutdown_all"
_BACKOFF_TIMER = "backoff"


def init_state(spec: SupervisorSpec, path: str) -> SupervisorState:
    """A supervisor that has started nothing yet (phase NEW).  `path` names it in reports ("root/mid").

    Raises ValueError listing every problem when `spec` is invalid (R14): config.py
    and start_child validate first, so this only guards programming errors."""
    problems = spec_problems(spec)
    if problems:
        raise ValueError(f"supervisor {path}: " + "; ".join(problems))
    simple = spec.strategy.value == "simple_one_for_one"
    children = () if simple else tuple(Child(key=c.id, spec=c, args=c.args) for c in spec.children)
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
                    return _begin_init(state, out)
                case StopRequested(reason=reason):
                    return _exit(replace(state, phase=Phase.EXITED, exit_reason=reason), out)
                case _:
                    return replace(state, deferred=state.deferred + (event,))
        case Phase.STARTING | Phase.RUNNING | Phase.STOPPING:
            if state.plan is None:
                return _handle(state, event, now, out)
            answered = _answer(state, state.plan.waiting, event, now, out)
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
            return _on_timer(state, timer, now, out)
        case StopRequested(reason=reason):
            return _begin_shutdown(state, reason, out)
        case ApiRequest(ref=ref, call=call):
            return _on_api(state, ref, call, out)
        case TryAgainRestart(key=key):
            child = state.child(key)
            if child is None or child.status is not ChildStatus.RESTARTING or child.timer is not None:
                return state  # terminated, deleted or restarted meanwhile
            return _restart(state, child, now, out)
        case _:
            assert_never(item)


def _answer(
    state: SupervisorState, waiting: Waiting | None, event: Event, now: float, out: list[Action]
) -> SupervisorState | None:
    """The new state if `event` answers the step in flight, else None."""
    match waiting:
        case None:
            return None
        case AwaitStart(key=key):
            match event:
                case ChildStarted(key=k, pid=pid) if k == key:
                    return _on_started(state, key, pid, now, out)
                case ChildStartFailed(key=k, reason=reason) if k == key:
                    return _on_start_failed(state, key, reason, out)
                case ChildIgnored(key=k) if k == key:
                    return _on_ignored(state, key, out)
                case _:
                    return None
        case AwaitStop(key=key, pid=pid, timer=timer):
            match event:
                case ChildExited(key=k, pid=p, reason=reason) if k == key and p == pid:
                    if timer is not None:
                        out.append(CancelTimer(timer))
                    state = _set_waiting(state, None)
                    return _advance(_stopped(state, key, reason, out), out)
                case TimerFired(key=t) if timer is not None and t == timer:
                    out.append(Kill(key, pid))  # R9: it had its chance; reported when its exit comes
                    return _set_waiting(state, AwaitStop(key, pid, None))
                case _:
                    return None
        case AwaitStopAll(pending=pending, timer=timer, errors=errors):
            match event:
                case ChildExited(key=k, pid=p, reason=reason) if (k, p) in pending:
                    child = state.child(k)
                    assert child is not None
                    out.append(Report(ReportKind.EXITED, k, p, child.generation, reason))
                    if not _clean(child, reason):
                        errors = errors + ((reason, k),)
                    state = _forget_process(state, child)
                    rest = tuple(kp for kp in pending if kp != (k, p))
                    if rest:
                        return _set_waiting(state, AwaitStopAll(rest, timer, errors))
                    if timer is not None:
                        out.append(CancelTimer(timer))
                    _report_grouped(errors, out)
                    return _advance(_set_waiting(state, None), out)
                case TimerFired(key=t) if timer is not None and t == timer:
                    out.extend(Kill(k, p) for k, p in pending)
                    return _set_waiting(state, AwaitStopAll(pending, None, errors))
                case _:
                    return None
        case _:
            assert_never(waiting)


# ---------------------------------------------------------------------------
# Plans: run steps until one must be waited on, then finish


