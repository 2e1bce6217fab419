"""Property-style: random trees under random event sequences never break an invariant.

Seeded random.Random, so a failure names its seed and replays exactly.  After every
decide the driver checks otp/state.py's invariants (children in start order,
at most one start or stop in flight, count_children consistent with
which_children, ...) and that the machine never asks a process it knows is dead to
stop.  At the end every API call has exactly one reply and a stopped supervisor
leaves no live child.
"""

from __future__ import annotations

import random

import pytest

from supervisor_tree.otp import supervisor as sv
from supervisor_tree.spec import (
    KILLED,
    NORMAL,
    SHUTDOWN,
    AutoShutdown,
    Backoff,
    ChildSpec,
    ExitKind,
    ExitReason,
    Restart,
    Strategy,
    SupervisorSpec,
    error,
    shutdown_with,
)
from tests.unit.driver import NEVER_EXITS, FakeRuntime, Traps, tree, worker

REASONS = [NORMAL, SHUTDOWN, shutdown_with("done"), KILLED, error("crash"), ExitReason(ExitKind.EXIT_CODE, "3")]
BEHAVIOURS = [None, NEVER_EXITS, Traps(after=0.2), Traps(reason=NORMAL), Traps(reason=error("late"))]


def random_child(rng: random.Random, cid: str, auto: AutoShutdown) -> ChildSpec:
    restart = rng.choice(list(Restart))
    significant = auto is not AutoShutdown.NEVER and restart is not Restart.PERMANENT and rng.random() < 0.5
    backoff = None
    if rng.random() < 0.3:
        backoff = Backoff(initial=0.05, factor=2.0, cap=0.4, jitter=rng.random() < 0.5, reset_after=1.0)
    shutdowns: list[int | str] = [100, 500, "brutal_kill", "infinity"]
    shutdown = rng.choice(shutdowns)
    return worker(cid, restart, shutdown, significant=significant, backoff=backoff)


def random_tree(rng: random.Random) -> SupervisorSpec:
    strategy = rng.choice(list(Strategy))
    auto = rng.choice(list(AutoShutdown))
    if strategy is Strategy.SIMPLE_ONE_FOR_ONE:
        children: tuple[ChildSpec, ...] = (random_child(rng, "dyn", auto),)
    else:
        children = tuple(random_child(rng, f"c{i}", auto) for i in range(rng.randint(1, 4)))
    intensity, period = rng.randint(0, 10), rng.randint(1, 5)
    return tree(*children, strategy=strategy, intensity=intensity, period=period, auto_shutdown=auto)


def step(rt: FakeRuntime, rng: random.Random, refs: list[int]) -> None:
    simple = rt.state().is_simple
    names = ["x1", "x2", "x3"] if simple else ["c0", "c1", "c2", "c3", "n1", "n2"]
    op = rng.choices(
        ["crash", "advance", "start", "terminate", "restart", "delete", "fail", "behave", "slow", "stop", "replace", "update"],
        weights=[4, 6, 3, 3, 2, 2, 2, 3, 2, 0.2, 2, 1],
    )[0]
    match op:
        case "crash":
            live = [p for p in rt.procs.values() if p.alive and p.path == rt.name]
            if live:
                rt.crash(rng.choice(live).label, rng.choice(REASONS))
        case "advance":
            rt.advance(rng.choice([0.01, 0.1, 0.3, 1.0, 2.5]))
        case "start":
            if simple:
                call: sv.ApiCall = sv.StartChildCall(extra_args={"name": rng.choice(names)})
            else:
                auto = rt.state().spec.auto_shutdown
                before = rng.choice([None, None, *names])
                call = sv.StartChildCall(random_child(rng, rng.choice(names), auto), before=before)
            refs.append(api(rt, call))
        case "replace":  # a reload's changed child: a new spec, restarted at its place or taken in place
            keys = [c.key for c in rt.state().children] + ["dyn"]
            key = rng.choice(keys)
            spec = random_child(rng, "dyn" if simple else key, rt.state().spec.auto_shutdown)
            refs.append(api(rt, sv.ReplaceChildCall(key, spec, restart=rng.random() < 0.8)))
        case "update":  # a reload's new flags and order (sometimes a refused change to or from simple_one_for_one)
            flags = rt.state().spec
            strategy = rng.choice(list(Strategy)) if rng.random() < 0.2 else flags.strategy
            if strategy is Strategy.SIMPLE_ONE_FOR_ONE:
                kids: tuple[ChildSpec, ...] = (random_child(rng, "dyn", flags.auto_shutdown),)
            else:
                kids = tuple(random_child(rng, n, flags.auto_shutdown) for n in rng.sample(names, rng.randint(1, min(4, len(names)))))
            spec = tree(*kids, strategy=strategy, intensity=rng.randint(0, 10), period=rng.randint(1, 5),
                        auto_shutdown=flags.auto_shutdown)
            refs.append(api(rt, sv.UpdateSpecCall(spec)))
        case "terminate":
            pids = [p.pid for p in rt.procs.values() if p.path == rt.name]
            if simple and pids and rng.random() < 0.8:
                pid = rng.choice(pids)
                call = sv.TerminateChildCall(pid, target_alive=rt.procs[pid].alive)  # type: ignore[arg-type]
            else:
                call = sv.TerminateChildCall(rng.choice(names + ["dyn"]))
            refs.append(api(rt, call))
        case "restart":
            refs.append(api(rt, sv.RestartChildCall(rng.choice(names + ["dyn"]))))
        case "delete":
            refs.append(api(rt, sv.DeleteChildCall(rng.choice(names + ["dyn"]))))
        case "fail":
            rt.fail_starts(rng.choice(names), rng.choice(["error", "ignore"]))
        case "behave":
            behaviour = rng.choice(BEHAVIOURS)
            name = rng.choice(names)
            if behaviour is None:
                rt.on_stop.pop(name, None)
            else:
                rt.on_stop[name] = behaviour
        case "slow":
            rt.start_delay[rng.choice(names)] = rng.choice([0.0, 0.05, 0.2])
        case "stop":
            rt.stop(rng.choice([SHUTDOWN, shutdown_with("bye")]))


def api(rt: FakeRuntime, call: sv.ApiCall) -> int:
    ref = next(rt._refs)
    rt.send(rt.name, sv.ApiRequest(ref, call))
    rt.run()
    return ref


@pytest.mark.parametrize("seed", range(300))
def test_random_sequences_keep_the_invariants(seed: int) -> None:
    rng = random.Random(seed)
    rt = FakeRuntime(random_tree(rng))
    for name in rng.sample(["c0", "c1", "x1"], 1):
        if rng.random() < 0.3:
            rt.fail_starts(name, "ignore")
    rt.start()
    refs: list[int] = []
    for _ in range(rng.randint(20, 80)):
        if rt.state().phase is sv.Phase.EXITED:
            break
        step(rt, rng, refs)
    # finish: stubborn children give in, then the parent stops the supervisor
    for _ in range(5):
        rt.unstick()
        rt.settle(limit=60.0)
    if rt.state().phase is not sv.Phase.EXITED:
        rt.stop()
        for _ in range(5):
            rt.unstick()
            rt.settle(limit=60.0)
    state = rt.state()
    assert state.phase is sv.Phase.EXITED, f"seed {seed}: stuck in {state.phase} waiting on {state.plan}"
    assert sorted(rt.replies) == sorted(refs), f"seed {seed}: unanswered {set(refs) - set(rt.replies)}"
    assert not [p.label for p in rt.procs.values() if p.alive], f"seed {seed}: live children after exit"
    kinds = [type(a).__name__ for _, a in rt.actions]
    assert kinds.count("Exit") == 1 and kinds.count("Ready") <= 1
    assert all(k == "Reply" for k in kinds[kinds.index("Exit") + 1 :]), f"seed {seed}: actions after Exit"
    if "Ready" in kinds:
        assert kinds.index("Ready") < kinds.index("Exit")
