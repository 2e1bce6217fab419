"""OTP's decision tables, pure: what a child's exit means, what counts as a clean
stop, and what a strategy restarts.

Owns R3 (restart type x exit reason), R9's clean-stop reasons and R6's restart
plans.  The supervisor asks; nothing here touches state or emits actions.

    >>> from supervisor_tree.spec import Restart, ExitKind
    >>> exit_outcome(Restart.TRANSIENT, ExitKind.NORMAL).name
    'KEEP'
    >>> restart_plan(Strategy.REST_FOR_ONE, [("a", Restart.PERMANENT), ("b", Restart.PERMANENT),
    ...              ("tmp", Restart.TEMPORARY), ("d", Restart.PERMANENT)], "b")
    (('d', 'tmp'), ('b', 'd'))
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import assert_never

from supervisor_tree.spec import ExitKind, ExitReason, Restart, ShutdownKind, Strategy


class ExitOutcome(enum.Enum):
    """What a child that exits by itself gets (OTP's do_restart)."""

    RESTART = "restart"  # reported child_terminated, restarted (counts toward intensity)
    KEEP = "keep"  # not restarted, not reported, spec kept as not_running
    FORGET = "forget"  # not restarted, not reported, spec removed
    FORGET_REPORTED = "forget_reported"  # not restarted, reported, spec removed


def exit_outcome(restart: Restart, kind: ExitKind) -> ExitOutcome:
    """R3, one case per (restart type, exit kind).  simple_one_for_one keeps no stopped
    instances, so there the caller turns KEEP into a removal."""
    match restart:
        case Restart.PERMANENT:
            return ExitOutcome.RESTART  # whatever the reason, even normal (S05)
        case Restart.TRANSIENT:
            match kind:
                case ExitKind.NORMAL | ExitKind.SHUTDOWN | ExitKind.SHUTDOWN_WITH: return ExitOutcome.KEEP  # S06
                case ExitKind.KILLED: return ExitOutcome.RESTART  # S07: killed is abnormal
                case ExitKind.SIGNALLED | ExitKind.EXIT_CODE: return ExitOutcome.RESTART
                case ExitKind.ERROR | ExitKind.HUNG | ExitKind.NODE_LOST: return ExitOutcome.RESTART  # S07
                case _: assert_never(kind)
        case Restart.TEMPORARY:
            match kind:
                case ExitKind.NORMAL | ExitKind.SHUTDOWN | ExitKind.SHUTDOWN_WITH: return ExitOutcome.FORGET  # S08
                case ExitKind.KILLED: return ExitOutcome.FORGET_REPORTED
                case ExitKind.SIGNALLED | ExitKind.EXIT_CODE: return ExitOutcome.FORGET_REPORTED
                case ExitKind.ERROR | ExitKind.HUNG | ExitKind.NODE_LOST: return ExitOutcome.FORGET_REPORTED  # S08
                case _: assert_never(kind)
        case _:
            assert_never(restart)


def is_clean_stop(reason: ExitReason, restart: Restart, shutdown: ShutdownKind) -> bool:
    """R9: does this exit, after the supervisor asked the child to stop, count as clean?

    `shutdown` always does; `killed` does under brutal_kill; a transient or temporary
    child may also answer with normal or {shutdown, _}.  Anything else is reported
    as shutdown_error and has no other effect (S21 child f).
    """
    lenient = restart is not Restart.PERMANENT
    match reason.kind:
        case ExitKind.SHUTDOWN: return True
        case ExitKind.KILLED: return shutdown is ShutdownKind.BRUTAL_KILL
        case ExitKind.NORMAL | ExitKind.SHUTDOWN_WITH: return lenient
        case ExitKind.SIGNALLED | ExitKind.EXIT_CODE | ExitKind.ERROR | ExitKind.HUNG | ExitKind.NODE_LOST: return False
        case _: assert_never(reason.kind)


def restart_plan(
    strategy: Strategy, children: Sequence[tuple[str, Restart]], failed: str
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """R6: (keys to stop, newest first; keys to start, oldest first) to restart `failed`.

    `children` is in start order.  The failed child has no process, so it is not
    stopped; temporary children in the scope are stopped and dropped; every other
    spec in the scope is started, whether it was running or not (S10).  Retries use
    the same plan with the child whose start failed (R7: S27, S28).
    """
    keys = [k for k, _ in children]
    match strategy:
        case Strategy.ONE_FOR_ONE | Strategy.SIMPLE_ONE_FOR_ONE:
            return (), (failed,)
        case Strategy.ONE_FOR_ALL:
            scope = list(children)
        case Strategy.REST_FOR_ONE:
            scope = list(children[keys.index(failed):])
        case _:
            assert_never(strategy)
    to_stop = tuple(k for k, _ in reversed(scope) if k != failed)
    to_start = tuple(k for k, r in scope if r is not Restart.TEMPORARY)
    return to_stop, to_start
