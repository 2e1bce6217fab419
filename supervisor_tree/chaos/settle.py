"""After one injection: time to detect, time to recover, and the blast radius checked against its prediction.

Owns following one fault to its end, in a thread of its own with its own Client: the
node's report of the exit (detection), every worker the prediction restarts answering
again from a new incarnation (recovery: "the replacement served its first request"),
then what the reports show restarted and escalated, compared with the prediction
(blast.compare).  Reports about workers another fault in flight may touch are left
to that fault.

    outcome = settle(Flight(...), watch, client, others=lambda: set())
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from supervisor_tree.chaos.blast import Observed, Prediction, TreeModel, compare
from supervisor_tree.chaos.faults import Injected
from supervisor_tree.chaos.report import FaultOutcome
from supervisor_tree.chaos.schedule import Decision, FaultKind
from supervisor_tree.chaos.watch import Event, EventWatch
from supervisor_tree.client import Client, ClientError

__all__ = ["Flight", "settle", "SETTLE_S", "QUIET_S"]

SETTLE_S = 20.0  # s for a fault to be detected and its restarts answered (a SIGSTOP takes the heartbeat deadline)
QUIET_S = 0.05  # s a matching observation must stay so (more reports of the same decision may follow)
PATIENCE_S = 1.5  # s without a new report before a difference from the prediction is the verdict


@dataclass(slots=True)
class Flight:
    """One fault between its injection and its verdict."""

    decision: Decision
    injected: Injected
    model: TreeModel  # the tree just before the injection
    predictions: list[Prediction]
    mark: int  # EventWatch position at injection
    beside: list[set[str]]  # the regions of the faults in flight when it was injected
    holds: set[str]  # what no other fault may touch while this one is in flight

    def region(self) -> set[str]:
        """What its reports may be about: none for a slow or a drop (they restart nothing)."""
        if not self.decision.fault.restarts:
            return set()
        out: set[str] = {self.decision.target}
        for p in self.predictions:
            out |= p.region()
        return out

    def charges(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.predictions:
            for sup, n in p.charged.items():
                out[sup] = max(out.get(sup, 0), n)
        return out

    def down(self) -> set[str]:
        out: set[str] = {self.decision.target} if self.decision.fault.restarts else set()
        for p in self.predictions:
            out |= p.restarted
        return out


def _exit_of(target: str, generation: int) -> Callable[[Event], bool]:
    return lambda e: (e["event"] in ("exited", "hung") and e.get("child") == target
                      and e.get("generation") == generation)


Others = Callable[[], list[tuple[float, set[str]]]]  # (when another fault was injected, wall clock; its region)


def settle(flight: Flight, watch: EventWatch, client: Client, others: Others) -> FaultOutcome:
    d, inj = flight.decision, flight.injected
    outcome = FaultOutcome(d.i, d.fault.value, d.target, d.at, "injected",
                           predicted=" | ".join(p.describe() for p in flight.predictions))
    if not d.fault.restarts:
        return _no_restart(flight, watch, outcome, others)
    deadline = inj.mono + SETTLE_S + d.params.get("delay", 0.0)
    exited = watch.wait(_exit_of(d.target, inj.generation), max(0.0, deadline - time.monotonic()), flight.mark)
    if exited is None:
        outcome.status = "not_triggered" if d.fault in (FaultKind.EXCEPTION, FaultKind.TERM) else "injected"
        outcome.reason = f"no exit of {d.target}#{inj.generation} within {SETTLE_S:g}s"
        if outcome.status == "injected":
            outcome.blast_ok, outcome.blast_detail = False, outcome.reason
        return outcome
    outcome.detect_ms = round((float(exited["ts"]) - inj.at) * 1000, 3)
    must = set.intersection(*(p.restarted for p in flight.predictions)) if flight.predictions else set()
    dies = any(p.tree_dies for p in flight.predictions)
    recovered = _recover(client, watch, flight, must, deadline) if not dies else None
    if recovered is not None:
        outcome.recovery_ms = round((recovered - inj.mono) * 1000, 3)
    problem = _judge(flight, watch, client, others, deadline)
    outcome.blast_ok = problem is None
    outcome.blast_detail = problem or ""
    if recovered is None and not dies and must:
        outcome.blast_ok = False
        outcome.blast_detail = f"not recovered within {SETTLE_S:g}s; " + outcome.blast_detail
    if not outcome.blast_ok:
        outcome.evidence = _evidence(watch.since(flight.mark), flight.injected.at)
    return outcome


def _evidence(events: list[Event], since: float) -> list[str]:
    """The supervisor reports a mismatch was judged on, one line each (the report carries them)."""
    out = []
    for e in events:
        if e["event"] in ("exited", "started", "restarting", "reached_max_restart_intensity", "start_error", "hung",
                          "supervisor_exited") and float(e.get("ts") or 0) >= since - 0.5:
            who = f"{e.get('supervisor')}/{e.get('child')}#{e.get('generation')}" if e.get("child") else e.get("supervisor")
            out.append(f"{float(e['ts']) - since:+.3f}s {e['event']} {who} {e.get('reason') or ''}".rstrip())
    return out[:40]


def _judge(flight: Flight, watch: EventWatch, client: Client, others: Others, deadline: float) -> str | None:
    """Compare what the reports show with the prediction until they match and stay so for QUIET_S, or
    until nothing new has come for PATIENCE_S (or the deadline): then the difference is the verdict."""
    quiet_until = None
    last_news = time.monotonic()
    while True:
        seen = watch.mark()
        problem = compare(flight.predictions, _observed(flight, watch.since(flight.mark), others(), client))
        now = time.monotonic()
        if problem is None:
            quiet_until = quiet_until or now + QUIET_S
            if now >= quiet_until:
                return None
        else:
            quiet_until = None
            if now - last_news >= PATIENCE_S or now >= deadline:
                return problem
        if watch.wait(lambda e: True, min(QUIET_S, max(0.0, deadline - now)), seen) is not None:
            last_news = time.monotonic()


def _recover(client: Client, watch: EventWatch, flight: Flight, workers: set[str], deadline: float) -> float | None:
    """When every worker in `workers` has a new incarnation that answered (monotonic), or None by the deadline.

    A pool's member (a simple_one_for_one child) counts as recovered once started: its
    manager may let it go at once, which is the manager's business.
    """
    model = flight.model
    for worker in sorted(workers):
        before = model.generation(worker)
        left = max(0.01, deadline - time.monotonic())
        if model.dynamic(worker):
            started = watch.wait(lambda e, w=worker, g=before: e["event"] == "started" and e.get("child") == w  # type: ignore[misc]
                                 and int(e.get("generation") or 0) > g, left, flight.mark)
            if started is None:
                return None
            continue
        try:
            client.resolve(worker, after_generation=before, timeout=left)
            client.control_worker(worker, "ping", {}, timeout=max(0.01, deadline - time.monotonic()))
        except ClientError:
            return None
    return time.monotonic()


def _observed(flight: Flight, events: list[Event], others: list[tuple[float, set[str]]], client: Client) -> Observed:
    """What the reports since the injection show, leaving out what faults injected later (or in flight) touch.

    Reports are told apart by the node's timestamps (the same clock as the injection's),
    not by when they reached this process: a busy machine delivers them late.
    """
    model, target = flight.model, flight.decision.target
    restarted: set[str] = set()
    escalated: list[str] = []
    died = False
    for e in events:
        ts = float(e.get("ts") or 0)
        if ts < flight.injected.at:
            continue  # reported before this fault: it arrived late
        child, sup = e.get("child"), e.get("supervisor")
        key = sup if e["event"] == "reached_max_restart_intensity" else child  # a worker's, or a window's
        theirs = any(ts >= at and key in region for at, region in others)
        if e["event"] == "started" and isinstance(child, str) and child in model.worker_sup and not theirs:
            if model.dynamic(child) and child != target:
                continue  # a pool's member: its manager's business
            if int(e.get("generation") or 0) > model.generation(child):
                restarted.add(child)
        elif e["event"] == "reached_max_restart_intensity" and sup not in escalated and not theirs:
            escalated.append(str(sup))
        elif e["event"] == "supervisor_exited" and sup == "root":
            died = True
    return Observed(frozenset(restarted), tuple(escalated), died or not client.node_running())


def _no_restart(flight: Flight, watch: EventWatch, outcome: FaultOutcome, others: Others) -> FaultOutcome:
    """slow and drop: nothing may restart while they last (a drop may make callers time out, never the worker die)."""
    d = flight.decision
    end = flight.injected.mono + d.params.get("duration", 0.5) + QUIET_S
    pause = end - time.monotonic()
    if pause > 0:
        time.sleep(pause)  # the fault is in effect for its duration: nothing to wait on but that
    died = watch.wait(_exit_of(d.target, flight.injected.generation), 0, flight.mark)
    if died is not None and any(float(died["ts"]) >= at and d.target in region for at, region in others()):
        died = None  # another fault (a kill under this drop) ended it: that fault's business
    if died is not None and str(died.get("reason", "")).startswith(("shutdown", "{shutdown")):
        died = None  # asked to stop (a pool letting a member go): not something a slow or a drop does
    outcome.blast_ok = died is None
    outcome.blast_detail = "" if died is None else f"{d.target} exited ({died.get('reason')}) under a {d.fault.value} fault"
    return outcome
