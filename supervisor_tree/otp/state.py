"""The supervisor's state record, and the two read-only queries on it.

Owns `SupervisorState` (every fact about one supervisor, in one frozen record),
the per-child record, the plan a busy supervisor is carrying out, and OTP's
`which_children` / `count_children`.  No decisions here: `supervisor.decide` makes
them.  No I/O.

    >>> from supervisor_tree.spec import ChildSpec, SupervisorSpec
    >>> from supervisor_tree.otp.supervisor import init_state, which_children
    >>> state = init_state(SupervisorSpec(children=(ChildSpec(id="a", start="m:A"),)), "root")
    >>> [(c.key, c.status.value) for c in which_children(state)]
    [('a', 'not_running')]

Invariants (tests/unit/driver.py checks them after every decide, in every test):

- `children` is in start order, oldest first: initial children in spec order, then
  children added by start_child at the newest end (or just before the child its
  `before` names).  A restarted or replaced child keeps its place; only a
  code_change (UpdateSpecCall) reorders, to the order of its new spec.  which_children returns the reverse (newest first, R2), and every stop
  sequence walks it backwards.
- A busy supervisor has a `plan` and waits on at most one step of it
  (`plan.waiting`): one Spawn, one stop (or, for simple_one_for_one, one parallel
  stop under one timer).  So at most one child is STARTING or STOPPING.
- While busy, every event that does not answer the awaited step is appended to
  `deferred` and handled, in order, once the plan is finished: OTP's mailbox.
- `restarts` holds whole-second timestamps of restarts, newest first (R4).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from supervisor_tree.otp.messages import ApiResult, ChildKey, Event, Pid, TryAgainRestart
from supervisor_tree.spec import ChildSpec, ChildType, ExitReason, Restart, Strategy, SupervisorSpec


class ChildStatus(enum.Enum):
    RUNNING = "running"
    RESTARTING = "restarting"  # a restart attempt failed and a retry is pending, or a backoff delay runs
    NOT_RUNNING = "not_running"  # spec kept, no process (OTP's pid `undefined`)
    STARTING = "starting"  # a Spawn is awaited
    STOPPING = "stopping"  # a stop is awaited; the process is still alive


class Phase(enum.Enum):
    NEW = "new"  # before InitRequested
    STARTING = "starting"  # starting the initial children
    RUNNING = "running"
    STOPPING = "stopping"  # stopping every child before Exit
    EXITED = "exited"


class PlanKind(enum.Enum):
    INIT = "init"  # start the initial children, then Ready (R1); a failure turns it into SHUTDOWN (R8)
    RESTART = "restart"  # a strategy's restart: stops newest-first, then starts oldest-first (R6)
    SHUTDOWN = "shutdown"  # stop every child, then Exit (R5, R11, R12)
    START_CHILD = "start_child"  # API calls that wait on a child (R13)
    TERMINATE_CHILD = "terminate_child"
    RESTART_CHILD = "restart_child"
    REPLACE_CHILD = "replace_child"  # stop a child, start its new spec in its place (a reload)


@dataclass(frozen=True, slots=True)
class Child:
    """One child as the supervisor knows it.

    `pid` is the live process (RUNNING or STOPPING), `last_pid` the previous one (for
    reports, and terminate_child by an old pid).  `generation` is that of the latest
    Spawn (0: never spawned).  `started_at`, `backoff_count` and `timer` serve the
    backoff extension: when it came up, how many backoff restarts in a row, and the
    pending ("backoff", key) timer.
    """

    key: ChildKey
    spec: ChildSpec
    args: Mapping[str, object]
    status: ChildStatus = ChildStatus.NOT_RUNNING
    pid: Pid | None = None
    last_pid: Pid | None = None
    generation: int = 0
    started_at: float | None = None
    backoff_count: int = 0
    timer: tuple[object, ...] | None = None


@dataclass(frozen=True, slots=True)
class AwaitStart:
    key: ChildKey
    generation: int


@dataclass(frozen=True, slots=True)
class AwaitStop:
    """One child being stopped.  `timer` is the pending shutdown timer (None: none, or it fired and Kill was sent)."""

    key: ChildKey
    pid: Pid
    timer: tuple[object, ...] | None


@dataclass(frozen=True, slots=True)
class AwaitStopAll:
    """simple_one_for_one's parallel stop (R10): all asked at once, one timer, errors grouped by reason."""

    pending: tuple[tuple[ChildKey, Pid], ...]
    timer: tuple[object, ...] | None
    errors: tuple[tuple[ExitReason, ChildKey], ...] = ()


Waiting = AwaitStart | AwaitStop | AwaitStopAll


@dataclass(frozen=True, slots=True)
class Swap:
    """A REPLACE_CHILD plan's child.  Once the old process is stopped, `new` (the new spec,
    not running) takes the child's place at index `slot` and is started.  If it does not
    start, `old` is put back and started instead, once; `failure` keeps the new spec's error."""

    slot: int
    new: Child
    old: Child
    placed: bool = False
    failure: object = None


@dataclass(frozen=True, slots=True)
class Plan:
    """A multi-step job: stop `to_stop` in order, then start `to_start` in order, then finish per `kind`."""

    kind: PlanKind
    to_stop: tuple[ChildKey, ...] = ()
    to_start: tuple[ChildKey, ...] = ()
    waiting: Waiting | None = None
    parallel: bool = False  # stop all of to_stop at once (simple_one_for_one shutdown)
    ref: int | None = None  # the ApiRequest being served
    result: ApiResult | None = None  # its answer, sent when the plan finishes
    exit_reason: ExitReason | None = None  # SHUTDOWN: the reason to Exit with
    swap: Swap | None = None  # REPLACE_CHILD: the child's old and new spec


Deferred = Event | TryAgainRestart


@dataclass(frozen=True, slots=True)
class SupervisorState:
    """Every fact about one supervisor.  Build it with `supervisor.init_state`."""

    spec: SupervisorSpec
    path: str
    phase: Phase = Phase.NEW
    children: tuple[Child, ...] = ()
    restarts: tuple[int, ...] = ()
    plan: Plan | None = None
    deferred: tuple[Deferred, ...] = ()
    next_instance: int = 1  # simple_one_for_one: the n of the next f"{template.id}-{n}"
    exit_reason: ExitReason | None = None

    @property
    def busy(self) -> bool:
        """Carrying out a plan: events other than the awaited answer are deferred."""
        return self.plan is not None

    @property
    def is_simple(self) -> bool:
        return self.spec.strategy is Strategy.SIMPLE_ONE_FOR_ONE

    def child(self, key: ChildKey) -> Child | None:
        for c in self.children:
            if c.key == key:
                return c
        return None


@dataclass(frozen=True, slots=True)
class ChildInfo:
    """One row of which_children.  `id` is None for simple_one_for_one instances (OTP's undefined)."""

    key: ChildKey
    id: str | None
    type: ChildType
    restart: Restart
    status: ChildStatus
    pid: Pid | None
    generation: int
    spec: ChildSpec
    args: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ChildCounts:
    """count_children, as OTP: specs held (1 for simple_one_for_one), live processes, and
    specs (for simple_one_for_one: children) of each type."""

    specs: int
    active: int
    supervisors: int
    workers: int


_ALIVE = (ChildStatus.RUNNING, ChildStatus.STOPPING)


def which_children(state: SupervisorState) -> tuple[ChildInfo, ...]:
    """The children newest-first, as OTP returns them (R2)."""
    simple = state.is_simple
    return tuple(
        ChildInfo(
            key=c.key,
            id=None if simple else c.spec.id,
            type=c.spec.type,
            restart=c.spec.restart,
            status=c.status,
            pid=c.pid,
            generation=c.generation,
            spec=c.spec,
            args=c.args,
        )
        for c in reversed(state.children)
    )


def count_children(state: SupervisorState) -> ChildCounts:
    active = sum(1 for c in state.children if c.status in _ALIVE)
    if state.is_simple:
        n = len(state.children)
        is_sup = state.spec.children[0].is_supervisor
        return ChildCounts(specs=1, active=active, supervisors=n if is_sup else 0, workers=0 if is_sup else n)
    sups = sum(1 for c in state.children if c.spec.is_supervisor)
    return ChildCounts(specs=len(state.children), active=active, supervisors=sups, workers=len(state.children) - sups)
