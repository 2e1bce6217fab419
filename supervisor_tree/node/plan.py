"""Small plans the node makes from a tree or from a decision: standbys to keep, actions to run first.

    standby_for(spec.tree)              # how many pre-forked standbys the fork server keeps
    first, rest = processes_first(actions)
    pids = kill_ahead(run.state, actions)   # brutal_kill siblings to SIGKILL now, newest first

They read a supervisor's state; they never change it (otp/ stays pure: the effects are the node's).
"""

from __future__ import annotations

from collections.abc import Sequence

from supervisor_tree.otp import supervisor as sv
from supervisor_tree.otp.state import AwaitStop, ChildStatus
from supervisor_tree.spec import ShutdownKind, Strategy, SupervisorSpec

__all__ = ["NODE", "STANDBY_MIN", "STANDBY_MAX", "standby_for", "processes_first", "kill_ahead"]

NODE = "__node__"  # owner of the node's own timers
STANDBY_MIN, STANDBY_MAX = 2, 16  # pre-forked standbys the fork server keeps (see standby_for)


def standby_for(tree: SupervisorSpec) -> int:
    """How many pre-forked standbys the fork server keeps: as many as the most workers one
    restart starts back to back, and one more, within [STANDBY_MIN, STANDBY_MAX].

    A restart that starts several workers starts them one after the other, each once the
    previous one is ready (OTP's order); the fork server refills its standbys only when it
    has been idle for a moment, so with 2 standbys a one_for_all group of 10 ran 8 cold
    forks in a row (a fork, a new ZeroMQ context, ~5 ms each on a loaded 2-core machine).
    The one more: a crash right after a group restart (anywhere in the tree) found the
    group's standbys all used and the refill not done, and took a cold fork beside the
    refill (a single restart right after a group of 10: ~38 ms against ~7 ms alone).
    Counted per restart unit: a one_for_all or rest_for_one supervisor, and any nested
    supervisor (its parent restarts it whole), with the workers of their whole subtree.
    A standby costs ~2.6 MB of private memory.
    """

    def workers(spec: SupervisorSpec) -> int:
        return sum(workers(c.supervisor) if c.supervisor is not None else 1 for c in spec.children)

    def largest(spec: SupervisorSpec, nested: bool) -> int:
        together = nested or spec.strategy in (Strategy.ONE_FOR_ALL, Strategy.REST_FOR_ONE)
        own = workers(spec) if together else 0
        return max([own] + [largest(c.supervisor, True) for c in spec.children if c.supervisor is not None])

    return max(STANDBY_MIN, min(STANDBY_MAX, largest(tree, False) + 1))


def _touches_a_process(action: object) -> bool:
    """A Spawn of a worker, or a signal to a worker's pid: work that another process starts on."""
    match action:
        case sv.Spawn(spec=spec):
            return not spec.is_supervisor
        case sv.Kill(pid=pid) | sv.AskStop(pid=pid):
            return isinstance(pid, int)
    return False


def processes_first(actions: Sequence[object]) -> tuple[list[object], list[object]]:
    """(the actions that touch a worker process, the others), each in decision order.

    Why: a restart decides [Report(exited), Report(child_terminated), Report(restarting),
    Spawn]; writing the three reports (event log, log line, PUB) before asking the fork
    server for the new incarnation put ~0.3 ms into every restart, and into every step
    of a one_for_all restart (stop the next sibling, start the next one).  Now the fork
    server and the workers get going while the node writes the reports.  What anyone can
    observe keeps its order: the reports of one decision are all written before the node
    reads its next message (the new worker's "ready" comes later), and the actions of
    each group run in the order the supervisor decided them.
    """
    first = [a for a in actions if _touches_a_process(a)]
    if not first:
        return [], list(actions)
    return first, [a for a in actions if not _touches_a_process(a)]


def kill_ahead(state: sv.SupervisorState, actions: Sequence[object]) -> list[int]:
    """The pids of the brutal_kill workers a stop plan would kill next, one after the other,
    each after the previous one's exit (R9): the node SIGKILLs them now, newest first.

    When: this decision sent Kill to the child the plan now waits for (a brutal_kill child,
    or one whose shutdown timeout fired).  Which: the children next in `plan.to_stop` that
    are running workers with shutdown brutal_kill, up to the first that is not (a timeout or
    infinity shutdown, or a nested supervisor): that one gets its stop request only after
    every later sibling is dead, as before.  Children with no process are passed over (their
    stop is bookkeeping).

    Why nobody can tell: a SIGKILLed process runs no more of its own code, so none of these
    children can observe that its newer sibling was not dead yet; the supervisor still
    stops them in its order, taking each exit (queued meanwhile) as the answer to its stop
    (OTP's unlink_flush), so the "exited" reports keep reverse start order.  What it saves:
    the kernel tears the processes down together (~2.5 ms each, one after the other before).
    """
    plan = state.plan
    if plan is None or plan.parallel or not isinstance(plan.waiting, AwaitStop) or plan.waiting.timer is not None:
        return []
    key = plan.waiting.key
    if not any(isinstance(a, sv.Kill) and a.key == key for a in actions):
        return []
    pids = []
    for next_key in plan.to_stop:
        child = state.child(next_key)
        if child is None or child.status is not ChildStatus.RUNNING:
            continue
        if child.spec.is_supervisor or not isinstance(child.pid, int):
            break
        if child.spec.effective_shutdown.kind is not ShutdownKind.BRUTAL_KILL:
            break
        pids.append(child.pid)
    return pids
