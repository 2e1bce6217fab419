"""The steps of a supervisor's plans: starting and stopping children, one at a time.

Owns how a `Plan` runs (state.py): start or stop one child, wait for the
answering event, go on with the next step, and finish (Ready, Exit, a Reply, or
nothing).  Also the small state helpers both modules use.  `supervisor.decide`
decides which plan to run; this module carries it out.  Pure: no I/O, no clock.

    >>> from supervisor_tree.spec import ChildSpec, SupervisorSpec
    >>> from supervisor_tree.otp.supervisor import init_state
    >>> state = init_state(SupervisorSpec(children=(ChildSpec(id="a", start="m:A"),)), "root")
    >>> out = []
    >>> state = begin_init(state, out)
    >>> type(out[0]).__name__, state.plan.waiting
    ('Spawn', AwaitStart(key='a', generation=1))

Stops follow R9: brutal_kill is a Kill; a timeout is AskStop plus a
("shutdown", key, generation) timer whose firing sends Kill; infinity is AskStop
alone.  A stop whose exit is already queued (the child died before it was asked)
takes that exit as its answer, as OTP's unlink_flush does.  After a Kill at the
timeout the exit (reason killed) is reported as shutdown_error when it arrives, so
the reports read as S21's trace: exit, then shutdown_error.
"""

from __future__ import annotations

from dataclasses import replace
from typing import assert_never

from supervisor_tree.otp import strategies
from supervisor_tree.otp.messages import (
    Action,
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
    Event,
    Exit,
    Kill,
    Ok,
    Pid,
    Ready,
    Reply,
    Report,
    ReportKind,
    SetTimer,
    Spawn,
    TimerFired,
    TryAgainRestart,
)
from supervisor_tree.otp.state import (
    AwaitStart,
    AwaitStop,
    AwaitStopAll,
    Child,
    ChildStatus,
    Phase,
    Plan,
    PlanKind,
    SupervisorState,
    Waiting,
)
from supervisor_tree.spec import ExitReason, Restart, ShutdownKind, shutdown_with

SHUTDOWN_TIMER = "shutdown"
SHUTDOWN_ALL_TIMER = "shutdown_all"


def answer(
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
                    state = set_waiting(state, None)
                    return advance(_stopped(state, key, reason, out), out)
                case TimerFired(key=t) if timer is not None and t == timer:
                    out.append(Kill(key, pid))  # R9: it had its chance; reported when its exit comes
                    return set_waiting(state, AwaitStop(key, pid, None))
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
                    state = forget_process(state, child)
                    rest = tuple(kp for kp in pending if kp != (k, p))
                    if rest:
                        return set_waiting(state, AwaitStopAll(rest, timer, errors))
                    if timer is not None:
                        out.append(CancelTimer(timer))
                    _report_grouped(errors, out)
                    return advance(set_waiting(state, None), out)
                case TimerFired(key=t) if timer is not None and t == timer:
                    out.extend(Kill(k, p) for k, p in pending)
                    return set_waiting(state, AwaitStopAll(pending, None, errors))
                case _:
                    return None
        case _:
            assert_never(waiting)


# ---------------------------------------------------------------------------
# Plans: run steps until one must be waited on, then finish



def advance(state: SupervisorState, out: list[Action]) -> SupervisorState:
    while state.plan is not None and state.plan.waiting is None:
        plan = state.plan
        if plan.to_stop and plan.parallel:
            state = _begin_stop_all(replace(state, plan=replace(plan, to_stop=())), plan.to_stop, out)
        elif plan.to_stop:
            state = _begin_stop(replace(state, plan=replace(plan, to_stop=plan.to_stop[1:])), plan.to_stop[0], out)
        elif plan.swap is not None and not plan.swap.placed:  # the old process is gone: the new spec takes its place
            swap = replace(plan.swap, placed=True)
            state = place(replace(state, plan=replace(plan, swap=swap)), swap.new, swap.slot)
        elif plan.to_start:
            state = _begin_start(replace(state, plan=replace(plan, to_start=plan.to_start[1:])), plan.to_start[0], out)
        else:
            state = _finish_plan(replace(state, plan=None), plan, out)
    return state


def _finish_plan(state: SupervisorState, plan: Plan, out: list[Action]) -> SupervisorState:
    match plan.kind:
        case PlanKind.INIT:
            out.append(Ready())
            return replace(state, phase=Phase.RUNNING)
        case PlanKind.RESTART:
            return state
        case PlanKind.SHUTDOWN:
            assert plan.exit_reason is not None
            return exit_supervisor(replace(state, phase=Phase.EXITED, exit_reason=plan.exit_reason), out)
        case PlanKind.START_CHILD | PlanKind.TERMINATE_CHILD | PlanKind.RESTART_CHILD | PlanKind.REPLACE_CHILD:
            assert plan.ref is not None and plan.result is not None
            result = plan.result
            if plan.swap is not None and plan.swap.failure is not None and isinstance(result, Ok):
                detail = f"{plan.swap.failure} (the previous spec was started again)"
                result = ApiError("start_failed", pid=result.pid, detail=detail)
            out.append(Reply(plan.ref, result))
            return state
        case _:
            assert_never(plan.kind)


def exit_supervisor(state: SupervisorState, out: list[Action]) -> SupervisorState:
    """The end: calls still queued get noproc (as OTP's callers of a dead process), then Exit."""
    assert state.exit_reason is not None
    for item in state.deferred:
        if isinstance(item, ApiRequest):
            out.append(Reply(item.ref, ApiError("noproc", detail=state.exit_reason)))
    out.append(Exit(state.exit_reason))
    return replace(state, deferred=())


def begin_init(state: SupervisorState, out: list[Action]) -> SupervisorState:
    if state.is_simple:  # starts with no children (S04)
        out.append(Ready())
        return replace(state, phase=Phase.RUNNING)
    plan = Plan(PlanKind.INIT, to_start=tuple(c.key for c in state.children))
    return advance(replace(state, phase=Phase.STARTING, plan=plan), out)


def begin_shutdown(state: SupervisorState, reason: ExitReason, out: list[Action]) -> SupervisorState:
    """Stop every child newest-first (R5, R9, R11), or all at once for simple_one_for_one (R10), then Exit."""
    keys = tuple(c.key for c in reversed(state.children))
    plan = Plan(PlanKind.SHUTDOWN, to_stop=keys, parallel=state.is_simple, exit_reason=reason)
    return advance(replace(state, phase=Phase.STOPPING, plan=plan), out)


def begin_restart(state: SupervisorState, key: ChildKey, out: list[Action]) -> SupervisorState:
    pairs = [(c.key, c.spec.restart) for c in state.children]
    to_stop, to_start = strategies.restart_plan(state.spec.strategy, pairs, key)
    return advance(replace(state, plan=Plan(PlanKind.RESTART, to_stop=to_stop, to_start=to_start)), out)


# ---------------------------------------------------------------------------
# Starting one child


def _begin_start(state: SupervisorState, key: ChildKey, out: list[Action]) -> SupervisorState:
    child = state.child(key)
    if child is None:
        return state
    if child.timer is not None:
        out.append(CancelTimer(child.timer))
    generation = child.generation + 1
    # A retry keeps showing "restarting" while it runs, as OTP's {restarting, Pid} does.
    status = ChildStatus.RESTARTING if child.status is ChildStatus.RESTARTING else ChildStatus.STARTING
    out.append(Spawn(key, child.spec, child.args, generation))
    state = put_child(state, replace(child, status=status, generation=generation, timer=None))
    return set_waiting(state, AwaitStart(key, generation))


def _on_started(state: SupervisorState, key: ChildKey, pid: Pid, now: float, out: list[Action]) -> SupervisorState:
    child = get_child(state, key)
    out.append(Report(ReportKind.STARTED, key, pid, child.generation, None))
    state = put_child(state, replace(child, status=ChildStatus.RUNNING, pid=pid, started_at=now))
    return advance(set_waiting(state, None, Ok(pid)), out)


def _on_ignored(state: SupervisorState, key: ChildKey, out: list[Action]) -> SupervisorState:
    """R8/R13/S24: nothing started; the spec is kept as not_running unless temporary."""
    child = get_child(state, key)
    out.append(Report(ReportKind.IGNORED, key, None, child.generation, None))
    state = forget_process(state, child)
    return advance(set_waiting(state, None, Ok(None)), out)


def _on_start_failed(state: SupervisorState, key: ChildKey, reason: object, out: list[Action]) -> SupervisorState:
    plan = state.plan
    assert plan is not None
    child = get_child(state, key)
    state = set_waiting(state, None)
    match plan.kind:
        case PlanKind.INIT:  # R8: stop what started, never start the rest, fail the start (S23)
            out.append(Report(ReportKind.START_ERROR, key, None, child.generation, reason))
            state = put_child(state, replace(child, status=ChildStatus.NOT_RUNNING))
            return begin_shutdown(state, shutdown_with(f"failed_to_start_child,{child.spec.id},{reason}"), out)
        case PlanKind.RESTART:  # R7: mark restarting, retry behind everything already queued (S25)
            out.append(Report(ReportKind.START_ERROR, key, child.last_pid, child.generation, reason))
            state = put_child(state, replace(child, status=ChildStatus.RESTARTING))
            return replace(state, plan=None, deferred=state.deferred + (TryAgainRestart(key),))
        case PlanKind.START_CHILD:  # R13: the spec is not kept
            state = remove_child(state, key)
            return advance(set_waiting(state, None, ApiError("start_failed", detail=reason)), out)
        case PlanKind.RESTART_CHILD:
            state = put_child(state, replace(child, status=ChildStatus.NOT_RUNNING))
            return advance(set_waiting(state, None, ApiError("start_failed", detail=reason)), out)
        case PlanKind.REPLACE_CHILD:  # the new spec did not start: the old one runs again (once)
            out.append(Report(ReportKind.START_ERROR, key, child.last_pid, child.generation, reason))
            swap = plan.swap
            assert swap is not None
            if swap.failure is None:
                old = replace(swap.old, status=ChildStatus.NOT_RUNNING, generation=child.generation)
                plan = replace(plan, waiting=None, swap=replace(swap, failure=reason), to_start=(key,))
                return advance(replace(put_child(state, old), plan=plan), out)
            state = forget_process(state, child)
            error = ApiError("start_failed", detail=f"{swap.failure}; the previous spec did not start again either: {reason}")
            return advance(set_waiting(state, None, error), out)
        case PlanKind.SHUTDOWN | PlanKind.TERMINATE_CHILD:
            raise AssertionError(f"a {plan.kind.value} plan starts nothing")
        case _:
            assert_never(plan.kind)


# ---------------------------------------------------------------------------
# Stopping children (R9, R10)


def _begin_stop(state: SupervisorState, key: ChildKey, out: list[Action]) -> SupervisorState:
    child = state.child(key)
    if child is None:
        return state
    if child.status is not ChildStatus.RUNNING:  # no process: only bookkeeping (and a backoff timer to drop)
        if child.timer is not None:
            out.append(CancelTimer(child.timer))
        return forget_process(state, child)
    pid = child.pid
    state = put_child(state, replace(child, status=ChildStatus.STOPPING))
    queued = _take_queued_exit(state, key, pid)
    if queued is not None:  # it died before we asked: its exit is the answer (OTP's unlink_flush)
        return _stopped(queued[0], key, queued[1], out)
    shutdown = child.spec.effective_shutdown
    timer: tuple[object, ...] | None = None
    match shutdown.kind:
        case ShutdownKind.BRUTAL_KILL:
            out.append(Kill(key, pid))
        case ShutdownKind.TIMEOUT:
            timer = (SHUTDOWN_TIMER, key, child.generation)
            out.append(AskStop(key, pid))
            out.append(SetTimer(timer, shutdown.timeout_ms / 1000))
        case ShutdownKind.INFINITY:
            out.append(AskStop(key, pid))
        case _:
            assert_never(shutdown.kind)
    return set_waiting(state, AwaitStop(key, pid, timer))


def _stopped(state: SupervisorState, key: ChildKey, reason: ExitReason, out: list[Action]) -> SupervisorState:
    """The child being stopped is dead: report its exit, and a shutdown_error if it was not clean."""
    child = get_child(state, key)
    out.append(Report(ReportKind.EXITED, key, child.pid, child.generation, reason))
    if not _clean(child, reason):
        detail = {"count": 1} if state.is_simple else None
        out.append(Report(ReportKind.SHUTDOWN_ERROR, key, child.pid, child.generation, reason, detail))
    return forget_process(state, child)


def _begin_stop_all(state: SupervisorState, keys: tuple[ChildKey, ...], out: list[Action]) -> SupervisorState:
    """R10: every instance asked at once, one timer (the template's shutdown) for all."""
    template = state.spec.children[0]
    shutdown = template.effective_shutdown
    pending: list[tuple[ChildKey, Pid]] = []
    errors: tuple[tuple[ExitReason, ChildKey], ...] = ()
    for key in keys:
        child = get_child(state, key)
        if child.status is not ChildStatus.RUNNING:
            if child.timer is not None:
                out.append(CancelTimer(child.timer))
            state = forget_process(state, child)
            continue
        queued = _take_queued_exit(state, key, child.pid)
        if queued is not None:
            state, reason = queued
            out.append(Report(ReportKind.EXITED, key, child.pid, child.generation, reason))
            if not _clean(child, reason):
                errors += ((reason, key),)
            state = forget_process(state, child)
            continue
        out.append(Kill(key, child.pid) if shutdown.kind is ShutdownKind.BRUTAL_KILL else AskStop(key, child.pid))
        state = put_child(state, replace(child, status=ChildStatus.STOPPING))
        pending.append((key, child.pid))
    if not pending:
        _report_grouped(errors, out)
        return state
    timer: tuple[object, ...] | None = None
    if shutdown.kind is ShutdownKind.TIMEOUT:
        timer = (SHUTDOWN_ALL_TIMER, template.id)
        out.append(SetTimer(timer, shutdown.timeout_ms / 1000))
    return set_waiting(state, AwaitStopAll(tuple(pending), timer, errors))


def _report_grouped(errors: tuple[tuple[ExitReason, ChildKey], ...], out: list[Action]) -> None:
    """R10: one shutdown_error per distinct reason, with how many children (and which) gave it."""
    groups: dict[ExitReason, list[ChildKey]] = {}
    for reason, key in errors:
        groups.setdefault(reason, []).append(key)
    for reason, keys in groups.items():
        detail = {"count": len(keys), "keys": tuple(keys)}
        out.append(Report(ReportKind.SHUTDOWN_ERROR, None, None, None, reason, detail))


def _clean(child: Child, reason: ExitReason) -> bool:
    return strategies.is_clean_stop(reason, child.spec.restart, child.spec.effective_shutdown.kind)


def _take_queued_exit(state: SupervisorState, key: ChildKey, pid: Pid) -> tuple[SupervisorState, ExitReason] | None:
    for i, item in enumerate(state.deferred):
        if isinstance(item, ChildExited) and item.key == key and item.pid == pid:
            return replace(state, deferred=state.deferred[:i] + state.deferred[i + 1 :]), item.reason
    return None


# ---------------------------------------------------------------------------
# State helpers


def get_child(state: SupervisorState, key: ChildKey) -> Child:
    child = state.child(key)
    assert child is not None, f"{state.path}: no child {key!r}"
    return child


def put_child(state: SupervisorState, child: Child) -> SupervisorState:
    return replace(state, children=tuple(child if c.key == child.key else c for c in state.children))


def place(state: SupervisorState, child: Child, slot: int) -> SupervisorState:
    """Put `child` in its place: over the child of the same key, or (dropped meanwhile) at index `slot`."""
    if state.child(child.key) is not None:
        return put_child(state, child)
    return replace(state, children=state.children[:slot] + (child,) + state.children[slot:])


def remove_child(state: SupervisorState, key: ChildKey) -> SupervisorState:
    return replace(state, children=tuple(c for c in state.children if c.key != key))


def forget_process(state: SupervisorState, child: Child) -> SupervisorState:
    """OTP's del_child: the child has no process now.  Temporary children and
    simple_one_for_one instances are dropped; other specs stay, not_running."""
    if state.is_simple or child.spec.restart is Restart.TEMPORARY:
        return remove_child(state, child.key)
    last = child.pid if child.pid is not None else child.last_pid
    stopped = replace(child, status=ChildStatus.NOT_RUNNING, pid=None, last_pid=last, started_at=None, timer=None)
    return put_child(state, stopped)


def set_waiting(state: SupervisorState, waiting: Waiting | None, result: ApiResult | None = None) -> SupervisorState:
    assert state.plan is not None
    plan = replace(state.plan, waiting=waiting)
    if result is not None:
        plan = replace(plan, result=result)
    return replace(state, plan=plan)
