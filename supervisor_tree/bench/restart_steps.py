"""Where a restart's time goes: the steps between a SIGKILL and the new incarnation's first answer.

Owns reading the marks three processes leave (CLOCK_MONOTONIC ns, one clock for every
process of a host) and turning them into one figure per step:

* the benchmark's own: "kill" (just before os.kill), "resolved" (resolve returned the new
  incarnation), "answered" (its first call answered);
* the node's, carried in the new incarnation's "started" report (`detail.mono_ns`,
  node/records.py `WorkerRec.marks`): "woke" (its loop woke on the old one's pidfd),
  "reaped", "spawning" (its supervisor decided to start the new one), "ready_seen";
* the worker's, answered by its control op ``marks`` (worker/standby.py `MARKS`):
  "activated" (it read the request), "sockets" (mailbox and control at their endpoints),
  "ready" (just before it said so).

    steps = Steps()
    steps.add(collect(client, events, "p", generation, {"kill": t0, "resolved": t1, "answered": t2}))
    steps.measurements("restart")   # one latency row per step, in µs

It never kills or times anything itself.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import zmq

from supervisor_tree.bench.harness import BenchError, Histogram, Measurement, Trial, measure_latency
from supervisor_tree.client import Client

__all__ = ["STEPS", "Steps", "collect"]

# (row name, from mark, to mark), in the order a restart goes through them
STEPS: tuple[tuple[str, str, str], ...] = (
    ("kill -> node woke on the pidfd", "kill", "woke"),
    ("node woke -> reaped", "woke", "reaped"),
    ("reaped -> restart decided", "reaped", "spawning"),
    ("decided -> standby read its request", "spawning", "activated"),
    ("activated -> sockets at endpoints", "activated", "sockets"),
    ("sockets -> ready sent (import, init)", "sockets", "ready"),
    ("ready sent -> node read it", "ready", "ready_seen"),
    ("node read ready -> client resolved", "ready_seen", "resolved"),
    ("resolved -> first call answered", "resolved", "answered"),
)
EVENT_WAIT_S = 2.0  # for the "started" report, published just after the waiting resolve was answered


def collect(client: Client, events: zmq.Socket[bytes], worker_id: str, generation: int,
            ours: dict[str, int]) -> dict[str, int]:
    """Every mark of the restart that started `worker_id`'s incarnation `generation` (not timed)."""
    marks = dict(ours)
    marks.update(started_marks(events, {worker_id: generation})[worker_id])
    worker = client.control_worker(worker_id, "marks", {})
    if not isinstance(worker, dict):
        raise BenchError(f"worker {worker_id!r} answered its marks with {type(worker).__name__}")
    marks.update({k: int(v) for k, v in worker.items()})
    return marks


def started_marks(events: zmq.Socket[bytes], wanted: dict[str, int]) -> dict[str, dict[str, int]]:
    """The node's marks (`started` reports' detail.mono_ns) of each wanted child id -> generation."""
    found: dict[str, dict[str, int]] = {}
    deadline = time.monotonic() + EVENT_WAIT_S
    while len(found) < len(wanted) and (left := deadline - time.monotonic()) > 0 and events.poll(int(left * 1000) + 1):
        rec = json.loads(events.recv())
        child = rec.get("child")
        if rec.get("event") == "started" and child in wanted and rec.get("generation") == wanted[child]:
            detail = rec.get("detail") or {}
            found[child] = {k: int(v) for k, v in (detail.get("mono_ns") or {}).items()}
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise BenchError(f"no 'started' report of {', '.join(missing)} within {EVENT_WAIT_S:g} s")
    return found


def step_rows(rounds: list[dict[str, list[int]]], names: list[str], of: str,
              note_of: Callable[[str], str]) -> list[Measurement]:
    """One latency row per step (median of the rounds' p50s), named "OF: STEP"; `note_of(step)` its note."""
    out = []
    for name in names:
        trials = []
        for r in rounds:
            if r[name]:
                h = Histogram()
                h.record_many([max(0, s) for s in r[name]])
                trials.append(Trial(len(r[name]), 1.0, h))
        if trials:
            out.append(measure_latency(f"{of}: {name}", trials, note=note_of(name)))
    return out


@dataclass
class Steps:
    """Per round, per step: the samples (ns).  A restart missing a mark is counted, not guessed."""

    rounds: list[dict[str, list[int]]] = field(default_factory=list)
    incomplete: int = 0

    def new_round(self) -> None:
        self.rounds.append({name: [] for name, _, _ in STEPS})

    def add(self, marks: dict[str, int]) -> None:
        if not all(a in marks and b in marks for _, a, b in STEPS):
            self.incomplete += 1
            return
        for name, a, b in STEPS:
            self.rounds[-1][name].append(marks[b] - marks[a])

    def measurements(self, of: str) -> list[Measurement]:
        """One latency row per step (median of the rounds' p50s), named "OF: STEP"."""
        note = (f"one step of {of} (marks of the bench, the node and the worker on one monotonic clock); "
                f"steps add up to about {of}'s p50" + (f"; {self.incomplete} restarts without every mark"
                                                      if self.incomplete else ""))
        return step_rows(self.rounds, [name for name, _, _ in STEPS], of, lambda _: note)
