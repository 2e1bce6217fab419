"""Where a one_for_all group restart's time goes: the stops, then the starts one after the other.

Owns turning the marks of one group restart (the benchmark's "kill" and "answered", and
each new incarnation's "started" report, `detail.mono_ns`: "woke"/"reaped" of the
incarnation it replaces, "spawning", "ready_seen") into a few figures, one row each:

* "kill -> victim reaped": the killed child's teardown and the node's reap;
* "victim reaped -> last sibling reaped": the stops of the other children (OTP: in
  reverse start order, each after the previous one's exit);
* "last reaped -> first start decided";
* "one start (decided -> ready seen)": each child's own start, per child;
* "ready seen -> next start decided": the node between two starts, per pair;
* "first start decided -> last ready seen": all the starts;
* "last ready seen -> all answered": resolves and first calls of the bench.

    group = GroupSteps()
    group.new_round()
    group.add(group_marks(events, ids, generations, {"kill": t0, "answered": t1}))
    group.measurements("restart_one_for_all_10")

It never kills or times anything itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import zmq

from supervisor_tree.bench.harness import Measurement
from supervisor_tree.bench.restart_steps import started_marks, step_rows

__all__ = ["GROUP_STEPS", "GroupSteps", "group_marks"]

GROUP_STEPS: tuple[str, ...] = (
    "kill -> victim reaped",
    "victim reaped -> last sibling reaped",
    "last reaped -> first start decided",
    "one start (decided -> ready seen)",
    "ready seen -> next start decided",
    "first start decided -> last ready seen",
    "last ready seen -> all answered",
)


def group_marks(events: zmq.Socket[bytes], ids: list[str], generations: list[int], victim: str,
                ours: dict[str, int]) -> dict[str, list[int]]:
    """Per step, its samples (ns) for one group restart; {} when a mark is missing (not guessed)."""
    marks = started_marks(events, dict(zip(ids, generations, strict=True)))
    if any(not all(k in marks[w] for k in ("reaped", "spawning", "ready_seen")) for w in ids):
        return {}
    reaped = [marks[w]["reaped"] for w in ids]
    first, last = marks[ids[0]], marks[ids[-1]]
    return {
        "kill -> victim reaped": [marks[victim]["reaped"] - ours["kill"]],
        "victim reaped -> last sibling reaped": [max(reaped) - marks[victim]["reaped"]],
        "last reaped -> first start decided": [first["spawning"] - max(reaped)],
        "one start (decided -> ready seen)": [marks[w]["ready_seen"] - marks[w]["spawning"] for w in ids],
        "ready seen -> next start decided": [marks[b]["spawning"] - marks[a]["ready_seen"]
                                             for a, b in zip(ids, ids[1:], strict=False)],
        "first start decided -> last ready seen": [last["ready_seen"] - first["spawning"]],
        "last ready seen -> all answered": [ours["answered"] - last["ready_seen"]],
    }


@dataclass
class GroupSteps:
    """Per round, per step: the samples (ns).  A restart missing a mark is counted, not guessed."""

    rounds: list[dict[str, list[int]]] = field(default_factory=list)
    incomplete: int = 0

    def new_round(self) -> None:
        self.rounds.append({name: [] for name in GROUP_STEPS})

    def add(self, samples: dict[str, list[int]]) -> None:
        if not samples:
            self.incomplete += 1
            return
        for name in GROUP_STEPS:
            self.rounds[-1][name].extend(samples[name])

    def measurements(self, of: str) -> list[Measurement]:
        """One latency row per step (median of the rounds' p50s), named "OF: STEP"."""
        def note_of(name: str) -> str:
            per = " (per child)" if name.startswith(("one start", "ready seen ->")) else ""
            return (f"one step of {of}{per} (marks of the bench and the node on one monotonic clock)"
                    + (f"; {self.incomplete} restarts without every mark" if self.incomplete else ""))

        return step_rows(self.rounds, list(GROUP_STEPS), of, note_of)
