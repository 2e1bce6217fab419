"""A fake runtime for the pure supervisor: it plays the node's part in tests.

It keeps fake pids, answers Spawn (ready, or an injected failure or ignore, at once
or after a simulated delay), answers AskStop the way each child is told to behave,
runs nested supervisors as machines of their own, fires timers on a simulated
clock, and records a trace in the notation of otp-scenarios.md:

    >>> from supervisor_tree.spec import ChildSpec, SupervisorSpec, error
    >>> spec = SupervisorSpec(intensity=10, period=10, children=(ChildSpec(id="a", start="m:A"),))
    >>> rt = FakeRuntime(spec).start()
    >>> rt.crash("a", error("crash"))
    >>> rt.lines()
    ['start a#1', 'start sup#1', 'exit a#1 reason=crash', 'log[child_terminated] a#1 reason=crash', 'start a#2']
    >>> rt.children(), rt.counts()
    ('[a=running(a#2)]', 'specs=1 active=1 supervisors=0 workers=1')

Trace lines come from the machine's actions (Report, Ready, Exit) except those a
child produces itself: `start_fail X` (its start returned an error) and
`signal X#n reason=shutdown` (it traps exits and got the stop request).  `X#n` is
the n-th incarnation that came up, counted by name as the scenarios do; it is not
the Spawn generation (failed attempts count there).  RESTARTING and AUTO_SHUTDOWN
reports have no line (OTP logs neither); every action is kept in `actions`.

After every decide the driver checks the invariants of otp/state.py
(`check_invariants`), so every scenario also tests them.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from supervisor_tree.otp import supervisor as sv
from supervisor_tree.otp.state import AwaitStart, AwaitStop, AwaitStopAll
from supervisor_tree.spec import (
    KILLED,
    SHUTDOWN,
    AutoShutdown,
    Backoff,
    ChildSpec,
    ChildType,
    ExitKind,
    ExitReason,
    Restart,
    Shutdown,
    Strategy,
    SupervisorSpec,
)

# ---------------------------------------------------------------------- building trees


def worker(
    id: str,
    restart: Restart = Restart.PERMANENT,
    shutdown: int | str = 1000,
    *,
    significant: bool = False,
    backoff: Backoff | None = None,
    args: Mapping[str, object] | None = None,
) -> ChildSpec:
    """A worker spec as the scenarios write it: shutdown in ms, "brutal_kill" or "infinity"."""
    return ChildSpec(
        id=id,
        start="otp_ref:start_worker",
        args=dict(args or {}),
        restart=restart,
        shutdown=Shutdown.parse(shutdown),
        significant=significant,
        backoff=backoff,
    )


def nested(id: str, spec: SupervisorSpec, restart: Restart = Restart.PERMANENT) -> ChildSpec:
    """A child of type supervisor (shutdown infinity, the default)."""
    return ChildSpec(id=id, type=ChildType.SUPERVISOR, supervisor=spec, restart=restart)


def tree(
    *children: ChildSpec,
    strategy: Strategy = Strategy.ONE_FOR_ONE,
    intensity: int = 10,
    period: int = 10,
    auto_shutdown: AutoShutdown = AutoShutdown.NEVER,
) -> SupervisorSpec:
    flags = {"strategy": strategy, "intensity": intensity, "period": period, "auto_shutdown": auto_shutdown}
    return SupervisorSpec(children=children, **flags)  # type: ignore[arg-type]


def otp_trace(block: str) -> list[str]:
    """The lines of an "Observed trace" block that the machine and its children produce:
    numbering, `[setup]`, inject / call / snapshot / count_children / comment lines dropped."""
    lines = []
    for raw in block.strip().splitlines():
        text = raw.strip()
        if text[:1].isdigit():
            text = text.split(".", 1)[1].strip()
        text = text.removeprefix("[setup] ")
        if text.startswith(("inject:", "call:", "snapshot", "count_children", "caller received", "(")):
            continue
        lines.append(text)
    return lines


# ---------------------------------------------------------------------- the fake runtime


@dataclass(frozen=True)
class Traps:
    """A child that traps exits: on AskStop it shows `signal`, then exits with `reason`
    `after` seconds later (reason None: it never exits by itself)."""

    after: float = 0.0
    reason: ExitReason | None = SHUTDOWN


NEVER_EXITS = Traps(reason=None)


class SupHandle:
    """The 'pid' of a nested supervisor, like runtime.SupHandle."""

    __slots__ = ("path", "label")

    def __init__(self, path: str, label: str) -> None:
        self.path = path
        self.label = label

    def __repr__(self) -> str:
        return f"<{self.label}>"


@dataclass
class Proc:
    pid: object
    path: str  # the supervisor that owns it
    key: str
    name: str
    label: str
    alive: bool = True


def fmt_reason(reason: object) -> str:
    """OTP's spelling: error("crash") is the bare reason `crash` of the scenarios."""
    if isinstance(reason, ExitReason) and reason.kind is ExitKind.ERROR and reason.detail is not None:
        return reason.detail
    return str(reason)


class FakeRuntime:
    def __init__(self, spec: SupervisorSpec, name: str = "sup", *, now: float = 0.0, checks: bool = True) -> None:
        self.name = name
        self.now = now
        self.checks = checks
        self.machines: dict[str, sv.SupervisorState] = {name: sv.init_state(spec, name)}
        self.finals: dict[str, sv.SupervisorState] = {}
        self.parents: dict[str, tuple[str, str]] = {}  # nested path -> (parent path, key)
        self.handles: dict[str, SupHandle] = {}
        self.queue: deque[tuple[str, sv.Event]] = deque()
        self.heap: list[tuple[float, int, Callable[[], None]]] = []
        self.timers: dict[tuple[str, tuple[object, ...]], int] = {}
        self.procs: dict[object, Proc] = {}
        self.names: dict[tuple[str, str], str] = {}
        self.incarnations: Counter[str] = Counter()
        self.start_results: dict[str, list[str]] = {}  # name -> ["error" | "ignore" | "ok", ...]
        self.start_delay: dict[str, float] = {}
        self.on_stop: dict[str, Traps] = {}
        self.trace: list[tuple[float, str]] = []
        self.actions: list[tuple[str, sv.Action]] = []
        self.replies: dict[int, sv.ApiResult] = {}
        self.exits: dict[str, ExitReason] = {}
        self.seen_exits: set[object] = set()  # pids whose ChildExited reached their supervisor
        self.asked: set[object] = set()  # pids sent AskStop
        self._seq = itertools.count()
        self._pids = itertools.count(1001)
        self._refs = itertools.count(1)

    # ------------------------------------------------------------------ driving

    def start(self) -> FakeRuntime:
        self.send(self.name, sv.InitRequested())
        self.run()
        return self

    def send(self, path: str, event: sv.Event) -> None:
        self.queue.append((path, event))

    def run(self) -> None:
        """Deliver queued events (and everything they cause) without moving the clock."""
        while self.queue:
            path, event = self.queue.popleft()
            state = self.machines.get(path)
            if state is None:
                continue  # it exited or was killed
            if isinstance(event, sv.ChildExited):
                self.seen_exits.add(event.pid)
            new, actions = sv.decide(state, event, self.now)
            self.machines[path] = new
            if self.checks:
                check_invariants(new)
                if not moves_order(state, event):
                    check_order(state, new)
            for action in actions:
                self.actions.append((path, action))
                self._execute(path, action)

    def advance(self, seconds: float) -> None:
        """Move the clock forward, firing due timers, slow exits and delayed start answers in time order."""
        self._run_until(self.now + seconds)

    def settle(self, limit: float = 3600.0) -> None:
        """Run until nothing is scheduled any more (or `limit` simulated seconds went by)."""
        end = self.now + limit
        self.run()
        while self.heap and self.heap[0][0] <= end:
            self._run_until(self.heap[0][0])

    def _run_until(self, end: float) -> None:
        self.run()
        while self.heap and self.heap[0][0] <= end:
            when, _, fn = heapq.heappop(self.heap)
            self.now = max(self.now, when)
            fn()
            self.run()
        self.now = max(self.now, end)

    def _at(self, delay: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self.heap, (self.now + delay, next(self._seq), fn))

    # ------------------------------------------------------------------ injections

    def fail_starts(self, name: str, *results: str) -> None:
        """The next starts of `name` return these, in order ("error", "ignore" or "ok")."""
        self.start_results.setdefault(name, []).extend(results)

    def crash(self, who: str, reason: ExitReason) -> None:
        """`who` (a name: its newest live incarnation, or a label like "b#2") exits by itself."""
        self.die(self.pid_of(who), reason)
        self.run()

    def pid_of(self, who: str) -> object:
        live = [p for p in self.procs.values() if p.alive and (p.label == who or p.name == who)]
        assert live, f"no live {who!r}"
        return live[-1].pid

    def die(self, pid: object, reason: ExitReason) -> None:
        proc = self.procs[pid]
        if not proc.alive:
            return
        proc.alive = False
        self.send(proc.path, sv.ChildExited(proc.key, pid, reason))

    def call(self, call: sv.ApiCall, path: str | None = None) -> sv.ApiResult | None:
        """Send an API request and run; its reply, or None when it is still deferred."""
        ref = next(self._refs)
        self.send(path or self.name, sv.ApiRequest(ref, call))
        self.run()
        return self.replies.get(ref)

    def stop(self, reason: ExitReason = SHUTDOWN, path: str | None = None) -> None:
        self.send(path or self.name, sv.StopRequested(reason))
        self.run()

    # ------------------------------------------------------------------ carrying out actions

    def _execute(self, path: str, action: sv.Action) -> None:
        match action:
            case sv.Spawn(key=key, spec=spec, args=args):
                self._spawn(path, key, spec, args)
            case sv.AskStop(key=key, pid=pid):
                self._ask_stop(path, key, pid)
            case sv.Kill(key=key, pid=pid):
                self._kill(path, key, pid)
            case sv.SetTimer(key=key, delay=delay):
                self._set_timer(path, key, delay)
            case sv.CancelTimer(key=key):
                self.timers.pop((path, key), None)
            case sv.Report():
                self._report(path, action)
            case sv.Reply(ref=ref, result=result):
                assert ref not in self.replies, f"second reply to {ref}"
                self.replies[ref] = result
            case sv.Ready():
                self._ready(path)
            case sv.Exit(reason=reason):
                self._exited(path, reason)
            case _:
                raise AssertionError(f"unknown action {action!r}")

    def _spawn(self, path: str, key: str, spec: ChildSpec, args: Mapping[str, object]) -> None:
        state = self.machines[path]
        waiting = state.plan.waiting if state.plan else None
        assert isinstance(waiting, AwaitStart) and waiting.key == key, "Spawn without awaiting it"
        name = str(args.get("name", spec.id)) if state.is_simple else spec.id
        self.names[(path, key)] = name
        planned = self.start_results.get(name)
        result = planned.pop(0) if planned else "ok"
        if spec.is_supervisor and result == "ok":
            assert spec.supervisor is not None
            sub = f"{path}/{key}"
            self.machines[sub] = sv.init_state(spec.supervisor, sub)
            self.parents[sub] = (path, key)
            self.handles.pop(sub, None)
            self.send(sub, sv.InitRequested())
            return

        def answer() -> None:
            if result == "error":
                self._line(f"start_fail {name}")
                self.send(path, sv.ChildStartFailed(key, f"{{start_failed,{name}}}"))
            elif result == "ignore":
                self.send(path, sv.ChildIgnored(key))
            else:
                pid = next(self._pids)
                self.incarnations[name] += 1
                self.procs[pid] = Proc(pid, path, key, name, f"{name}#{self.incarnations[name]}")
                self.send(path, sv.ChildStarted(key, pid))

        delay = self.start_delay.get(name, 0.0)
        if delay:
            self._at(delay, answer)
        else:
            answer()

    def _ask_stop(self, path: str, key: str, pid: object) -> None:
        proc = self.procs[pid]
        assert proc.path == path and proc.key == key, f"AskStop to {proc}"
        assert pid not in self.seen_exits, f"AskStop to {proc.label}, whose exit the supervisor has seen"
        self.asked.add(pid)
        if not proc.alive:
            return  # it died on its own; that exit is on its way
        if isinstance(pid, SupHandle):
            self.send(pid.path, sv.StopRequested(SHUTDOWN))
            return
        behaviour = self.on_stop.get(proc.name)
        if behaviour is None:  # does not trap exits: dies at once
            self.die(pid, SHUTDOWN)
            return
        self._line(f"signal {proc.label} reason=shutdown")
        reason = behaviour.reason
        if reason is None:
            return
        if behaviour.after:
            self._at(behaviour.after, lambda: self.die(pid, reason))
        else:
            self.die(pid, reason)

    def _kill(self, path: str, key: str, pid: object) -> None:
        proc = self.procs[pid]
        assert proc.path == path and proc.key == key, f"Kill to {proc}"
        assert pid not in self.seen_exits, f"Kill to {proc.label}, whose exit the supervisor has seen"
        if not proc.alive:
            return
        if isinstance(pid, SupHandle):  # the whole subtree dies at once, no orderly stop (S20)
            doomed = [p for p in self.machines if p == pid.path or p.startswith(pid.path + "/")]
            for p in doomed:
                self.finals[p] = self.machines.pop(p)
            for other in self.procs.values():
                if other.alive and other.path in doomed:
                    other.alive = False
                    self._line(f"exit {other.label} reason=killed")
        self.die(pid, KILLED)

    def _set_timer(self, path: str, key: tuple[object, ...], delay: float) -> None:
        token = next(self._seq)
        self.timers[(path, key)] = token

        def fire() -> None:
            if self.timers.get((path, key)) == token:
                del self.timers[(path, key)]
                self.send(path, sv.TimerFired(key))

        self._at(delay, fire)

    def _ready(self, path: str) -> None:
        if path == self.name:
            self._line(f"start {self.name}#1")
            return
        parent, key = self.parents[path]
        name = self.names[(parent, key)]
        self.incarnations[name] += 1
        handle = SupHandle(path, f"{name}#{self.incarnations[name]}")
        self.handles[path] = handle
        self.procs[handle] = Proc(handle, parent, key, name, handle.label)
        self.send(parent, sv.ChildStarted(key, handle))

    def _exited(self, path: str, reason: ExitReason) -> None:
        self.exits[path] = reason
        self.finals[path] = self.machines.pop(path)
        leftovers = [p.label for p in self.procs.values() if p.alive and p.path == path]
        assert not leftovers, f"{path} exited with live children {leftovers}"
        if path == self.name:
            self._line(f"exit {self.name}#1 reason={fmt_reason(reason)}")
            return
        parent, key = self.parents[path]
        handle = self.handles.get(path)
        if handle is None:  # it never became ready: its start failed
            self.send(parent, sv.ChildStartFailed(key, reason))
        else:
            self.die(handle, reason)

    def _report(self, path: str, rep: sv.Report) -> None:
        who = self._label(rep.pid) if rep.pid is not None else self.names.get((path, rep.key or ""), str(rep.key))
        why = fmt_reason(rep.reason)
        match rep.kind:
            case sv.ReportKind.STARTED:
                self._line(f"start {who}")
            case sv.ReportKind.IGNORED:
                self._line(f"start_ignore {who}")
            case sv.ReportKind.EXITED:
                self._line(f"exit {who} reason={why}")
            case sv.ReportKind.CHILD_TERMINATED:
                self._line(f"log[child_terminated] {who} reason={why}")
            case sv.ReportKind.START_ERROR:
                self._line(f"log[start_error] {who} reason={why}")
            case sv.ReportKind.SHUTDOWN_ERROR if rep.key is None:
                assert rep.detail is not None
                self._line(f"log[shutdown_error] nb_children={rep.detail['count']} reason={why}")
            case sv.ReportKind.SHUTDOWN_ERROR:
                self._line(f"log[shutdown_error] {who} reason={why}")
            case sv.ReportKind.REACHED_MAX_RESTART_INTENSITY:
                self._line(f"log[shutdown] {who} reason=reached_max_restart_intensity")
            case sv.ReportKind.RESTARTING | sv.ReportKind.AUTO_SHUTDOWN:
                pass
            case _:
                raise AssertionError(f"unknown report {rep!r}")

    def _label(self, pid: object) -> str:
        proc = self.procs.get(pid)
        return proc.label if proc is not None else str(pid)

    def _line(self, text: str) -> None:
        self.trace.append((self.now, text))

    def unstick(self) -> None:
        """Children that ignored a stop request exit at last (so every plan can finish)."""
        for pid in list(self.asked):
            if self.procs[pid].alive:
                self.die(pid, SHUTDOWN)
        self.run()

    # ------------------------------------------------------------------ looking

    def state(self, path: str | None = None) -> sv.SupervisorState:
        path = path or self.name
        return self.machines[path] if path in self.machines else self.finals[path]

    def lines(self, since: int = 0) -> list[str]:
        return [text for _, text in self.trace[since:]]

    def timed(self, origin: float, since: int = 0) -> list[str]:
        """Lines with the scenarios' "[+Nms]" prefix: ms after `origin`, rounded to 50 ms."""
        return [f"[+{round((t - origin) * 20) * 50}ms] {text}" for t, text in self.trace[since:]]

    def children(self, path: str | None = None) -> str:
        """which_children in the scenarios' notation, e.g. [c=running(c#1), b=not_running]."""
        state = self.state(path)
        items = []
        for info in sv.which_children(state):
            ident = "undefined" if info.id is None else info.id
            if info.status in (sv.ChildStatus.RUNNING, sv.ChildStatus.STOPPING):
                text = f"{ident}={info.status.value}({self._label(info.pid)})"
            else:
                text = f"{ident}={info.status.value}"
            items.append(text + ("[sup]" if info.type is ChildType.SUPERVISOR else ""))
        if state.is_simple:
            items.sort()  # OTP's order is unspecified for them; the scenarios sort by name
        return "[" + ", ".join(items) + "]"

    def counts(self, path: str | None = None) -> str:
        c = sv.count_children(self.state(path))
        return f"specs={c.specs} active={c.active} supervisors={c.supervisors} workers={c.workers}"

    def report_kinds(self, path: str | None = None) -> list[str]:
        path = path or self.name
        return [a.kind.value for p, a in self.actions if p == path and isinstance(a, sv.Report)]


# ---------------------------------------------------------------------- invariants


def check_invariants(state: sv.SupervisorState) -> None:
    """What must hold after every decide (otp/state.py's invariants)."""
    kids = state.children
    keys = [c.key for c in kids]
    assert len(set(keys)) == len(keys), f"duplicate keys {keys}"
    waiting = state.plan.waiting if state.plan else None
    starting = [c.key for c in kids if c.status is sv.ChildStatus.STARTING]
    stopping = [c.key for c in kids if c.status is sv.ChildStatus.STOPPING]
    assert len(starting) <= 1 and not (starting and stopping), f"{starting} starting, {stopping} stopping"
    if not state.is_simple:
        assert len(stopping) <= 1, f"more than one pending stop: {stopping}"
    if starting:
        assert isinstance(waiting, AwaitStart) and waiting.key == starting[0]
    if isinstance(waiting, AwaitStop):
        assert stopping == [waiting.key] and state.child(waiting.key).pid == waiting.pid  # type: ignore[union-attr]
    elif isinstance(waiting, AwaitStopAll):
        assert sorted(stopping) == sorted(k for k, _ in waiting.pending)
    else:
        assert not stopping, f"stopping {stopping} without a stop in flight"
    for c in kids:
        has_process = c.status in (sv.ChildStatus.RUNNING, sv.ChildStatus.STOPPING)
        assert (c.pid is not None) == has_process, f"{c.key}: {c.status} with pid {c.pid}"
        assert c.timer is None or c.status is sv.ChildStatus.RESTARTING, f"{c.key}: timer while {c.status}"
        if state.is_simple:
            assert c.status is not sv.ChildStatus.NOT_RUNNING, "simple_one_for_one keeps no stopped instance"
        if state.phase is sv.Phase.RUNNING and c.spec.restart is Restart.TEMPORARY:
            assert c.status is not sv.ChildStatus.NOT_RUNNING, f"temporary {c.key} kept stopped"
    if state.plan is None:
        assert state.phase in (sv.Phase.NEW, sv.Phase.RUNNING, sv.Phase.EXITED), state.phase
    if state.phase is sv.Phase.EXITED:
        assert state.plan is None and not state.deferred and state.exit_reason is not None
        assert not any(c.pid is not None for c in kids), "exited with live children"
    counts = sv.count_children(state)
    infos = sv.which_children(state)
    assert [i.key for i in infos] == keys[::-1], "which_children is not newest-first"
    assert counts.active == sum(1 for i in infos if i.status in (sv.ChildStatus.RUNNING, sv.ChildStatus.STOPPING))
    assert counts.supervisors + counts.workers == len(infos)
    assert counts.specs == (1 if state.is_simple else len(infos))


def moves_order(state: sv.SupervisorState, event: sv.Event) -> bool:
    """Whether handling `event` (and what it releases from `deferred`) may reorder children or add
    one in the middle: a code_change, or a start_child with `before` (tested in test_supervisor_changes)."""
    for item in (event, *state.deferred):
        if isinstance(item, sv.ApiRequest):
            call = item.call
            if isinstance(call, sv.UpdateSpecCall) or (isinstance(call, sv.StartChildCall) and call.before):
                return True
    return False


def check_order(before: sv.SupervisorState, after: sv.SupervisorState) -> None:
    """Children stay in start order: a step may replace a child in place, remove one, or add
    one at the newest end.  (A stopped spec may be deleted and added again in one step:
    then it moves to the end, which is allowed.)"""
    prev = {c.key: c for c in before.children}
    new_keys = [c.key for c in after.children]
    movable = {k for k, c in prev.items() if c.status is sv.ChildStatus.NOT_RUNNING}
    kept = [k for k in new_keys if k in prev and k not in movable]
    assert kept == [k for k in prev if k in kept], f"order changed: {list(prev)} -> {new_keys}"
    fresh = [i for i, k in enumerate(new_keys) if k not in prev]
    if fresh and kept:
        assert min(fresh) > max(new_keys.index(k) for k in kept), f"added in the middle: {new_keys}"
