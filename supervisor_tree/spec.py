"""Typed specifications: what a tree *is*, before anything runs.

Owns the closed sets of OTP's vocabulary (strategies, restart types, shutdown
values), the frozen child and supervisor specs, exit reasons, and one small
validator per spec field.  No I/O, no processes, no ZeroMQ.

    >>> from supervisor_tree.spec import ChildSpec, SupervisorSpec, Restart
    >>> counter = ChildSpec(id="counter", start="myapp:Counter", restart=Restart.TRANSIENT)
    >>> tree = SupervisorSpec(children=(counter,))
    >>> tree.strategy.value
    'one_for_one'

Defaults are OTP's (R14): one_for_one, intensity 1, period 5, auto_shutdown
never; children permanent workers, significant false, shutdown 5000 ms for a
worker and infinity for a supervisor.
"""

from __future__ import annotations

import enum
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

# the retry vocabulary, re-exported: a child's retry, retry_budget and retry_calls use it
from supervisor_tree.retry_spec import RetryBudget as RetryBudget
from supervisor_tree.retry_spec import RetryOn as RetryOn
from supervisor_tree.retry_spec import RetryPolicy as RetryPolicy
from supervisor_tree.retry_spec import RetryWait as RetryWait


class Strategy(enum.Enum):
    ONE_FOR_ONE = "one_for_one"
    ONE_FOR_ALL = "one_for_all"
    REST_FOR_ONE = "rest_for_one"
    SIMPLE_ONE_FOR_ONE = "simple_one_for_one"


class Restart(enum.Enum):
    PERMANENT = "permanent"
    TRANSIENT = "transient"
    TEMPORARY = "temporary"


class Overflow(enum.Enum):
    """What a worker's mailbox does past its `mailbox_limit` (worker/mailbox.py)."""

    BACKPRESSURE = "backpressure"  # senders wait for room
    REJECT = "reject"  # the newest past the limit are refused: a call gets a MailboxFull error
    DROP_OLDEST = "drop_oldest"  # the oldest past the limit are dropped: a call gets a MailboxFull error


class ChildType(enum.Enum):
    WORKER = "worker"
    SUPERVISOR = "supervisor"


class AutoShutdown(enum.Enum):
    NEVER = "never"
    ANY_SIGNIFICANT = "any_significant"
    ALL_SIGNIFICANT = "all_significant"


class ShutdownKind(enum.Enum):
    BRUTAL_KILL = "brutal_kill"
    TIMEOUT = "timeout"
    INFINITY = "infinity"


@dataclass(frozen=True, slots=True)
class Shutdown:
    """How a child is stopped: SIGKILL at once, ask then kill after `timeout_ms`, or ask and wait."""

    kind: ShutdownKind
    timeout_ms: int = 0

    @classmethod
    def timeout(cls, ms: int) -> Shutdown:
        return cls(ShutdownKind.TIMEOUT, ms)

    @classmethod
    def parse(cls, value: object) -> Shutdown:
        """From config form: an int of milliseconds >= 0, "brutal_kill" or "infinity"."""
        problem = check_shutdown(value)
        if problem:
            raise ValueError(problem)
        if value == "brutal_kill":
            return BRUTAL_KILL
        if value == "infinity":
            return INFINITY
        assert isinstance(value, int)
        return cls.timeout(value)

    def __str__(self) -> str:
        return str(self.timeout_ms) if self.kind is ShutdownKind.TIMEOUT else self.kind.value


# A worker's /proc/PID/oom_score_adj unless its spec says otherwise: the kernel's OOM killer
# picks a worker (restarted by its supervisor) before the node and the fork server (which keep theirs).
WORKER_OOM_SCORE_ADJ = 500

BRUTAL_KILL = Shutdown(ShutdownKind.BRUTAL_KILL)
INFINITY = Shutdown(ShutdownKind.INFINITY)
WORKER_SHUTDOWN_DEFAULT = Shutdown.timeout(5000)
DEFAULT_MAX_CONCURRENCY = 1000  # an asyncio worker's calls in flight when its spec sets no max_concurrency


@dataclass(frozen=True, slots=True)
class Backoff:
    """Optional delay before restarting a child (an extension; OTP restarts at once).

    The n-th consecutive restart of a child waits ``min(cap, initial * factor**(n-1))``
    seconds, times a random factor in [0.5, 1.0] when `jitter`.  The count resets once
    the child has run for `reset_after` seconds.  Intensity is still charged per restart.
    """

    initial: float = 0.05
    factor: float = 2.0
    cap: float = 5.0
    jitter: bool = False
    reset_after: float = 30.0


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A worker beats every `interval` s; `misses` beats in a row missed means it hung."""

    interval: float = 0.5
    misses: int = 4

    @property
    def deadline(self) -> float:
        return self.interval * self.misses


# A start target: "package.module:Class", or the class / factory itself (shipped with cloudpickle).
StartTarget = str | Callable[..., object]


class ReadyKind(enum.Enum):
    """How an external program (a port) says it is ready: at once, a TCP port accepting, or a line of output."""

    EXEC = "exec"  # ready once the program has been executed (no `ready` given)
    TCP = "tcp"  # ready once HOST:PORT accepts a connection
    STDOUT = "stdout"  # ready once a line of its stdout (or stderr) contains the text


@dataclass(frozen=True, slots=True)
class Ready:
    kind: ReadyKind = ReadyKind.EXEC
    target: str = ""  # "127.0.0.1:6380" for tcp, the text to look for for stdout

    def __str__(self) -> str:
        return self.kind.value if self.kind is ReadyKind.EXEC else f"{self.kind.value} {self.target!r}"


@dataclass(frozen=True, slots=True)
class Command:
    """An external program as a child (OTP's port): argv, environment, directory, how to stop it, readiness.

    `env` is added to the node's environment; `cwd` None keeps the node's directory;
    `stop_signal` (a signal name such as "TERM") goes to the program's whole process
    group when its supervisor stops it.
    """

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    stop_signal: str = "TERM"
    ready: Ready = Ready()

    def __str__(self) -> str:
        return " ".join(self.argv)


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """One child of a supervisor.  `id` is unique in the whole tree (it names the worker)."""

    id: str
    start: StartTarget | None = None  # None only for type supervisor (it has `supervisor`)
    args: Mapping[str, object] = field(default_factory=dict)
    restart: Restart = Restart.PERMANENT
    shutdown: Shutdown | None = None  # None: the type's default (5000 ms worker, infinity supervisor)
    type: ChildType = ChildType.WORKER
    significant: bool = False
    supervisor: SupervisorSpec | None = None  # the nested tree, for type supervisor
    backoff: Backoff | None = None
    retry: RetryPolicy | None = None  # how callers retry calls to this child (callee side)
    retry_budget: RetryBudget | None = None  # None: RetryBudget()'s defaults
    retry_calls: Mapping[str, RetryPolicy] = field(default_factory=dict)  # callee id -> this child's own policy for it
    heartbeat: Heartbeat | None = None  # None: the node's default
    start_timeout: float = 30.0  # seconds for init to say ready; then it is a start error
    command: Command | None = None  # an external program instead of `start` (a port)
    max_concurrency: int | None = None  # an asyncio worker's calls in flight at most (None: DEFAULT_MAX_CONCURRENCY)
    mailbox_limit: int | None = None  # messages waiting in the worker's mailbox; None: ZeroMQ's high-water marks
    mailbox_overflow: Overflow = Overflow.BACKPRESSURE
    oom_score_adj: int = WORKER_OOM_SCORE_ADJ  # -1000..1000, the worker process's (Linux)
    resources: Mapping[str, float] | None = None  # backend = "ray": what the worker's actor asks of the cluster
    node_affinity: str | None = None  # backend = "ray": the Ray node (hex id) the actor must run on

    @property
    def effective_shutdown(self) -> Shutdown:
        if self.shutdown is not None:
            return self.shutdown
        return INFINITY if self.type is ChildType.SUPERVISOR else WORKER_SHUTDOWN_DEFAULT

    @property
    def is_supervisor(self) -> bool:
        return self.type is ChildType.SUPERVISOR

    @property
    def is_port(self) -> bool:
        """An external program (`command`), not a Python worker."""
        return self.command is not None


@dataclass(frozen=True, slots=True)
class SupervisorSpec:
    """A supervisor's flags and its children in start order."""

    strategy: Strategy = Strategy.ONE_FOR_ONE
    intensity: int = 1
    period: int = 5
    auto_shutdown: AutoShutdown = AutoShutdown.NEVER
    children: tuple[ChildSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """A whole node: the root supervisor plus node-wide settings."""

    tree: SupervisorSpec
    name: str = "supervisor_tree"
    source: str | None = None  # the config file it came from, if any
    config_dir: str | None = None  # put on workers' sys.path
    heartbeat: Heartbeat = Heartbeat()
    preload: tuple[str, ...] = ()  # modules the fork server imports before forking
    extra: Mapping[str, object] = field(default_factory=dict)  # other validated tables ([profile], ...)


# ---------------------------------------------------------------------------
# Exit reasons (otp-scenarios.md section 1)


class ExitKind(enum.Enum):
    NORMAL = "normal"  # clean return / exit code 0
    SHUTDOWN = "shutdown"  # exited after a stop request
    SHUTDOWN_WITH = "shutdown_with"  # deliberate stop carrying a detail: {shutdown, Term}
    KILLED = "killed"  # SIGKILL
    SIGNALLED = "signalled"  # another fatal signal
    EXIT_CODE = "exit_code"  # non-zero exit status
    ERROR = "error"  # an uncaught exception, or an error reason the worker chose
    HUNG = "hung"  # missed heartbeats
    NODE_LOST = "node_lost"  # the host it ran on left the cluster (backend = "ray"): abnormal, as a crash is


@dataclass(frozen=True, slots=True)
class ExitReason:
    kind: ExitKind
    detail: str | None = None

    @property
    def is_normal(self) -> bool:
        """normal, shutdown and {shutdown, _}: the reasons a transient child is not restarted for."""
        return self.kind in (ExitKind.NORMAL, ExitKind.SHUTDOWN, ExitKind.SHUTDOWN_WITH)

    def __str__(self) -> str:
        match self.kind:
            case ExitKind.NORMAL | ExitKind.SHUTDOWN | ExitKind.KILLED:
                return str(self.kind.value)
            case ExitKind.SHUTDOWN_WITH:
                return f"{{shutdown,{self.detail}}}"
            case ExitKind.SIGNALLED:
                return f"{{signal,{self.detail}}}"
            case ExitKind.EXIT_CODE:
                return f"{{exit_code,{self.detail}}}"
            case ExitKind.ERROR:
                return f"{{error,{self.detail}}}"
            case ExitKind.HUNG | ExitKind.NODE_LOST:
                return f"{{{self.kind.value},{self.detail}}}" if self.detail else self.kind.value

    def to_json(self) -> str:
        return str(self)


NORMAL = ExitReason(ExitKind.NORMAL)
SHUTDOWN = ExitReason(ExitKind.SHUTDOWN)
KILLED = ExitReason(ExitKind.KILLED)


def shutdown_with(detail: object) -> ExitReason:
    return ExitReason(ExitKind.SHUTDOWN_WITH, str(detail))


def error(detail: object) -> ExitReason:
    return ExitReason(ExitKind.ERROR, str(detail))


# ---------------------------------------------------------------------------
# One validator per field.  Each returns None when the value is fine, else the
# message "<field> must be <what is allowed>; got <value>".


def _got(value: object) -> str:
    return repr(value) if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_enum(name: str, value: object, enum_type: type[enum.Enum]) -> str | None:
    allowed = [m.value for m in enum_type]
    if value in allowed:
        return None
    return f"{name} must be one of {', '.join(allowed)}; got {_got(value)}"


def check_shutdown(value: object) -> str | None:
    if value in ("brutal_kill", "infinity") or (_is_int(value) and value >= 0):  # type: ignore[operator]
        return None
    return f'shutdown must be milliseconds >= 0, "brutal_kill" or "infinity"; got {_got(value)}'


def check_intensity(value: object) -> str | None:
    if _is_int(value) and value >= 0:  # type: ignore[operator]
        return None
    return f"intensity must be an integer >= 0; got {_got(value)}"


def check_period(value: object) -> str | None:
    if _is_int(value) and value >= 1:  # type: ignore[operator]
        return None
    return f"period must be an integer >= 1 (seconds); got {_got(value)}"


def check_id(value: object) -> str | None:
    if isinstance(value, str) and value and all(c.isalnum() or c in "_-." for c in value):
        return None
    return f"id must be a non-empty string of letters, digits, '_', '-' or '.'; got {_got(value)}"


def check_start(value: object) -> str | None:
    if callable(value):
        return None
    if isinstance(value, str) and value.count(":") == 1 and all(value.split(":")):
        return None
    return f'start must be "module:Class" (or a class); got {_got(value)}'


def check_command(value: object) -> str | None:
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value) and value[0]:
        return None
    return f'command must be a non-empty array of strings, the program first (["redis-server", "--port", "6380"]); got {_got(value)}'


def check_signal(value: object) -> str | None:
    """A signal name, with or without SIG: "TERM", "SIGINT", "QUIT", ..."""
    if isinstance(value, str) and value:
        name = value.upper() if value.upper().startswith("SIG") else "SIG" + value.upper()
        if name in signal.Signals.__members__:
            return None
    return f'stop_signal must be a signal name such as "TERM", "INT" or "QUIT"; got {_got(value)}'


def signal_number(name: str) -> int:
    """The number of a signal name as `check_signal` accepts it."""
    upper = name.upper()
    return int(signal.Signals[upper if upper.startswith("SIG") else "SIG" + upper])


def check_max_concurrency(value: object) -> str | None:
    if _is_int(value) and value >= 1:  # type: ignore[operator]
        return None
    return f"max_concurrency must be an integer >= 1 (calls in flight at once in an asyncio worker); got {_got(value)}"
def check_oom_score_adj(value: object) -> str | None:
    if _is_int(value) and -1000 <= value <= 1000:  # type: ignore[operator]
        return None
    return f"oom_score_adj must be an integer from -1000 to 1000; got {_got(value)}"


def check_significant(significant: bool, restart: Restart, auto_shutdown: AutoShutdown) -> str | None:
    """R12: significant only when auto_shutdown is not never and the child is not permanent."""
    if not significant:
        return None
    if auto_shutdown is AutoShutdown.NEVER:
        return 'significant = true needs the supervisor\'s auto_shutdown to be "any_significant" or "all_significant"; it is "never"'
    if restart is Restart.PERMANENT:
        return 'significant = true is not allowed on a permanent child (use restart = "transient" or "temporary")'
    return None


def spec_problems(spec: SupervisorSpec) -> list[str]:
    """Every rule broken by an already-typed supervisor spec (the dynamic API uses this).

    config.py checks the TOML form with file and key paths; this checks the typed form.
    """
    problems: list[str] = []
    for check in (check_intensity(spec.intensity), check_period(spec.period)):
        if check:
            problems.append(check)
    if spec.strategy is Strategy.SIMPLE_ONE_FOR_ONE and len(spec.children) != 1:
        problems.append(f"a simple_one_for_one supervisor needs exactly one child spec; got {len(spec.children)}")
    seen: set[str] = set()
    for child in spec.children:
        problems.extend(f'child "{child.id}": {p}' for p in child_problems(child, spec.auto_shutdown))
        if child.id in seen:
            problems.append(f'duplicate child id "{child.id}"')
        seen.add(child.id)
    return problems


def child_problems(child: ChildSpec, auto_shutdown: AutoShutdown = AutoShutdown.NEVER) -> list[str]:
    problems = [
        p
        for p in (
            check_id(child.id),
            check_significant(child.significant, child.restart, auto_shutdown),
        )
        if p
    ]
    if child.is_supervisor:
        if child.supervisor is None:
            problems.append("a child of type supervisor needs its own children (a nested [supervisor] table)")
        else:
            problems.extend(spec_problems(child.supervisor))
    elif child.command is not None:
        if child.start is not None:
            problems.append("a worker has either start (a Python class) or command (a program), not both")
        problems.extend(p for p in (check_command(list(child.command.argv)), check_signal(child.command.stop_signal)) if p)
    elif (p := check_start(child.start)) is not None:
        problems.append(p)
    if not child.is_supervisor and (p := check_oom_score_adj(child.oom_score_adj)) is not None:
        problems.append(p)
    if child.max_concurrency is not None and (p := check_max_concurrency(child.max_concurrency)) is not None:
        problems.append(p)
    if child.shutdown is not None and child.shutdown.kind is ShutdownKind.TIMEOUT and child.shutdown.timeout_ms < 0:
        problems.append(check_shutdown(child.shutdown.timeout_ms) or "")
    return problems
