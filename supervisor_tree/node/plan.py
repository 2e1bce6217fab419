"""Small plans the node makes from a tree or from a decision: standbys to keep, actions to run first.

    standby_for(spec.tree)              # how many pre-forked standbys the fork server keeps
    first, rest = processes_first(actions)
"""

from __future__ import annotations

from collections.abc import Sequence

from supervisor_tree.otp import supervisor as sv
from supervisor_tree.spec import Strategy, SupervisorSpec

__all__ = ["NODE", "STANDBY_MIN", "STANDBY_MAX", "standby_for", "processes_first"]

NODE = "__node__"  # owner of the node's own timers
STANDBY_MIN, STANDBY_MAX = 2, 16  # pre-forked standbys the fork server keeps (see standby_for)


def standby_for(tree: SupervisorSpec) -> int:
    """How many pre-forked standbys the fork server keeps: as many as the most workers one
    restart starts back to back, within [STANDBY_MIN, STANDBY_MAX].

    A restart that starts several workers starts them one after the other, each once the
    previous one is ready (OTP's order); the fork server refills its standbys only when it
    has been idle for a moment, so with 2 standbys a one_for_all group of 10 ran 8 cold
    forks in a row (a fork, a new ZeroMQ context, ~5 ms each on a loaded 2-core machine).
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

    return max(STANDBY_MIN, min(STANDBY_MAX, largest(tree, False)))


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
