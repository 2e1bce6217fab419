"""The supervisor's vocabulary with the runtime: events in, actions out.

Owns the frozen messages `supervisor.decide` consumes (events, past tense) and
produces (actions, imperative), the dynamic-API calls and their results, and the
closed set of report kinds.  Pure data: no logic, no I/O.

    >>> from supervisor_tree.otp.messages import ChildExited, Spawn
    >>> from supervisor_tree.spec import ChildSpec, SHUTDOWN
    >>> ChildExited("db", 4121, SHUTDOWN).reason.kind.value
    'shutdown'
    >>> Spawn("db", ChildSpec(id="db", start="app:Db"), {}, 1).generation
    1

`supervisor.py` re-exports the public names (all but the internal TryAgainRestart);
import them from there.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from supervisor_tree.spec import ChildSpec, ExitReason, SupervisorSpec

ChildKey = str
"""A child's key: its id; for simple_one_for_one instances f"{template.id}-{n}", n = 1, 2, ...

n counts per supervisor and an instance keeps its key across its restarts."""

Pid = object
"""Opaque to the supervisor: an int OS pid for a worker, a handle for a nested supervisor."""


# ---------------------------------------------------------------------------
# Dynamic API calls (OTP's start_child / terminate_child / restart_child / delete_child)


@dataclass(frozen=True, slots=True)
class StartChildCall:
    """start_child: `spec` for a supervisor with specs; `extra_args` (merged over the
    template's args) for a simple_one_for_one supervisor.

    `before`: the child is put in the start order just before that child (a reload adds
    a child at its place in the config, so a rest_for_one successor list keeps its
    meaning); None: at the newest end, as OTP does.  A `before` that is not a child is
    not_found."""

    spec: ChildSpec | None = None
    extra_args: Mapping[str, object] | None = None
    before: str | None = None


@dataclass(frozen=True, slots=True)
class TerminateChildCall:
    """terminate_child by id, or by pid (the only form simple_one_for_one accepts).

    For a pid that is not a child the runtime says whether that process is alive:
    OTP answers ok for a dead pid and not_found for a live one (S30)."""

    target: str | int
    target_alive: bool | None = None


@dataclass(frozen=True, slots=True)
class RestartChildCall:
    id: str


@dataclass(frozen=True, slots=True)
class DeleteChildCall:
    id: str


@dataclass(frozen=True, slots=True)
class ReplaceChildCall:
    """Give child `key` a new spec, keeping its key, its place in the start order and its
    generation count (a reload's changed child; OTP's code_change plus a restart).

    restart=True and the child runs: it is stopped by its *current* shutdown rules, then
    started with `spec` (the next generation), and the answer comes once it is started:
    Ok(pid).  If the new spec does not start, the old spec is started again in its place
    and the answer is ApiError("start_failed", pid=the old spec's new process, detail=the
    error).  Otherwise (restart=False, or the child has no process): the spec is replaced
    in place, nothing is stopped or started, Ok(pid) (a child with no process whose new
    spec is temporary is dropped, as OTP keeps no stopped temporary child).  No restart
    intensity is charged.

    `args`: None means spec.args, except for a simple_one_for_one instance, which keeps
    its own (the template's merged with its start_child extra args)."""

    key: str
    spec: ChildSpec
    args: Mapping[str, object] | None = None
    restart: bool = True


@dataclass(frozen=True, slots=True)
class UpdateSpecCall:
    """OTP's code_change for a supervisor: take `spec`'s flags (strategy, intensity, period,
    auto_shutdown) and, for simple_one_for_one, its template, in place.  No child is
    started, stopped or restarted, and no child's spec changes (ReplaceChildCall does
    that).  Children named in spec.children take the relative order they have there, in
    the slots such children hold; others (started by start_child) keep theirs.  A change
    to or from simple_one_for_one is refused: ApiError("invalid_change")."""

    spec: SupervisorSpec


ApiCall = StartChildCall | TerminateChildCall | RestartChildCall | DeleteChildCall | ReplaceChildCall | UpdateSpecCall


@dataclass(frozen=True, slots=True)
class Ok:
    """Success; `pid` is the started child's pid (None after `ignore`, or for calls that start nothing)."""

    pid: Pid | None = None


@dataclass(frozen=True, slots=True)
class ApiError:
    """A refused call, in OTP's words.

    reason: "already_started" (pid set), "already_present", "not_found", "running",
    "restarting", "simple_one_for_one", "invalid_child_spec" (detail: the problems),
    "start_failed" (detail: the start's error), "invalid_change" (detail: why a spec
    cannot be taken in place), or "noproc" (detail: the exit reason) when the
    supervisor stopped before it could serve the call.
    """

    reason: str
    pid: Pid | None = None
    detail: object = None


ApiResult = Ok | ApiError


# ---------------------------------------------------------------------------
# Events: what happened (the runtime tells the supervisor)


@dataclass(frozen=True, slots=True)
class InitRequested:
    """Start the initial children (R1, R8)."""


@dataclass(frozen=True, slots=True)
class ChildStarted:
    """The awaited Spawn for `key` said ready."""

    key: ChildKey
    pid: Pid


@dataclass(frozen=True, slots=True)
class ChildStartFailed:
    """The awaited Spawn failed: init raised, died before ready, or timed out."""

    key: ChildKey
    reason: object


@dataclass(frozen=True, slots=True)
class ChildIgnored:
    """The awaited Spawn's init returned "ignore": nothing was started."""

    key: ChildKey


@dataclass(frozen=True, slots=True)
class ChildExited:
    """A child process died.  An exit of a pid that is not the child's current one is ignored."""

    key: ChildKey
    pid: Pid
    reason: ExitReason


@dataclass(frozen=True, slots=True)
class TimerFired:
    """A timer this supervisor set with SetTimer; stale keys are ignored."""

    key: tuple[object, ...]


@dataclass(frozen=True, slots=True)
class StopRequested:
    """The parent (or the node) stops this supervisor: children stop newest-first, then Exit(reason)."""

    reason: ExitReason


@dataclass(frozen=True, slots=True)
class ApiRequest:
    """A dynamic-API call; answered by exactly one Reply(ref, ...)."""

    ref: int
    call: ApiCall


Event = (
    InitRequested
    | ChildStarted
    | ChildStartFailed
    | ChildIgnored
    | ChildExited
    | TimerFired
    | StopRequested
    | ApiRequest
)


@dataclass(frozen=True, slots=True)
class TryAgainRestart:
    """OTP's try_again_restart: a failed restart posts this to the END of its own queue (R7).

    Internal: it only ever lives in SupervisorState.deferred; the runtime never sends it."""

    key: ChildKey


# ---------------------------------------------------------------------------
# Actions: what to do (the supervisor tells the runtime)


@dataclass(frozen=True, slots=True)
class Spawn:
    """Start an incarnation of `key`; answer with ChildStarted / ChildStartFailed / ChildIgnored.

    generation is 1 for the first Spawn of a key and grows by one with every later Spawn."""

    key: ChildKey
    spec: ChildSpec
    args: Mapping[str, object]
    generation: int


@dataclass(frozen=True, slots=True)
class AskStop:
    """The polite stop request: SIGTERM, or StopRequested(shutdown) for a nested supervisor."""

    key: ChildKey
    pid: Pid


@dataclass(frozen=True, slots=True)
class Kill:
    """SIGKILL; for a nested supervisor, kill its whole subtree.  Answer with ChildExited(killed)."""

    key: ChildKey
    pid: Pid


@dataclass(frozen=True, slots=True)
class SetTimer:
    """Send TimerFired(key) after `delay` seconds.  Setting an existing key replaces that timer."""

    key: tuple[object, ...]
    delay: float


@dataclass(frozen=True, slots=True)
class CancelTimer:
    """Forget the timer `key`: no TimerFired(key) may follow (a late one is ignored anyway)."""

    key: tuple[object, ...]


class ReportKind(enum.Enum):
    STARTED = "started"
    IGNORED = "ignored"
    EXITED = "exited"  # every child exit the supervisor processes, with its reason
    CHILD_TERMINATED = "child_terminated"  # OTP's error report, exactly where R3 says "reported"
    RESTARTING = "restarting"  # just before a restart; detail {"delay": s} under a backoff
    START_ERROR = "start_error"
    SHUTDOWN_ERROR = "shutdown_error"  # R9 / R10; simple_one_for_one adds detail {"count": n}
    REACHED_MAX_RESTART_INTENSITY = "reached_max_restart_intensity"
    AUTO_SHUTDOWN = "auto_shutdown"


@dataclass(frozen=True, slots=True)
class Report:
    """A supervisor report with fixed fields (see node/eventlog.py for how the node writes them)."""

    kind: ReportKind
    key: ChildKey | None
    pid: Pid | None
    generation: int | None
    reason: object | None
    detail: Mapping[str, object] | None = None


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer to ApiRequest(ref, ...)."""

    ref: int
    result: ApiResult


@dataclass(frozen=True, slots=True)
class Ready:
    """All initial children are up: the supervisor counts as started."""


@dataclass(frozen=True, slots=True)
class Exit:
    """All children are stopped; the supervisor ends with `reason`."""

    reason: ExitReason


Action = Spawn | AskStop | Kill | SetTimer | CancelTimer | Report | Reply | Ready | Exit
