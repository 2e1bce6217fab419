"""The fault schedule: which fault, on which worker, when — decided by a seed alone, written as JSON lines.

Owns the fault vocabulary (`FaultKind`), one `Decision` per injection, the seeded
generator (`plan`: Poisson arrivals at `rate` per second over `duration`, kinds and
targets drawn uniformly), and the decision log (`write_log`, `read_log`) that
`supervise chaos --replay LOG` runs again.  It never looks at the running tree: the
same seed, options and target list give the same log, byte for byte.  What became
of a decision (injected, skipped and why) is the report's business, not the log's.

    >>> s = plan(seed=7, rate=2.0, duration=3.0, kinds=(FaultKind.KILL,), targets=("a", "b"))
    >>> [(round(d.at, 3), d.fault.value, d.target) for d in s.decisions][:2]
    [(0.196, 'kill', 'b'), (0.722, 'kill', 'a')]

Log format: a header line {"log": "supervisor_tree chaos decisions", "version": 1, "seed",
"rate", "duration", "faults", "targets"}, then one line per decision {"i", "at", "fault",
"target", "params"} (`at`: seconds from the start of the injection phase).
"""

from __future__ import annotations

import enum
import fnmatch
import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["FaultKind", "Decision", "Schedule", "plan", "write_log", "read_log", "parse_faults", "match_targets",
           "LogError"]

LOG_NAME = "supervisor_tree chaos decisions"
LOG_VERSION = 1


class FaultKind(enum.StrEnum):
    KILL = "kill"  # SIGKILL
    TERM = "term"  # SIGTERM: the worker stops with reason shutdown (a transient child is not restarted)
    STOP = "stop"  # SIGSTOP: a hang, caught by missed heartbeats
    EXCEPTION = "exception"  # the next handler raises
    SLOW = "slow"  # replies delayed by `ms` for `duration` s
    DROP = "drop"  # mailbox messages dropped with `probability` for `duration` s
    SLOW_START = "slow_start"  # SIGKILL, then the restart's init waits `delay` s
    FAIL_START = "fail_start"  # SIGKILL, then the next `fails` starts fail (intensity is charged)

    @property
    def restarts(self) -> bool:
        """Whether the fault ends the worker's incarnation (so a restart, and a blast radius, follow)."""
        return self not in (FaultKind.SLOW, FaultKind.DROP)


DEFAULT_PARAMS: dict[FaultKind, dict[str, float]] = {
    FaultKind.SLOW: {"ms": 50.0, "duration": 1.0},
    FaultKind.DROP: {"probability": 0.5, "duration": 0.5},
    FaultKind.SLOW_START: {"delay": 0.3},
    FaultKind.FAIL_START: {"fails": 1},
}


class LogError(ValueError):
    """A decision log that cannot be replayed (the message names the file, the line and what is wrong)."""


@dataclass(frozen=True, slots=True)
class Decision:
    i: int
    at: float  # s from the start of the injection phase
    fault: FaultKind
    target: str
    params: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {"i": self.i, "at": round(self.at, 6), "fault": self.fault.value, "target": self.target,
                "params": self.params}


@dataclass(frozen=True, slots=True)
class Schedule:
    seed: int
    rate: float
    duration: float
    kinds: tuple[FaultKind, ...]
    targets: tuple[str, ...]
    decisions: tuple[Decision, ...]

    def header(self) -> dict[str, object]:
        return {"log": LOG_NAME, "version": LOG_VERSION, "seed": self.seed, "rate": self.rate,
                "duration": self.duration, "faults": [k.value for k in self.kinds], "targets": list(self.targets)}


def parse_faults(text: str, params: dict[str, float] | None = None) -> tuple[tuple[FaultKind, ...], dict[FaultKind, dict[str, float]]]:
    """`kill,stop,slow:80,drop:0.2` -> the kinds, and each kind's parameters (the number after ':' is
    slow's ms, drop's probability, slow_start's delay, fail_start's fails)."""
    kinds: list[FaultKind] = []
    out = {k: dict(v) for k, v in DEFAULT_PARAMS.items()}
    first = {FaultKind.SLOW: "ms", FaultKind.DROP: "probability", FaultKind.SLOW_START: "delay",
             FaultKind.FAIL_START: "fails"}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, _, value = part.partition(":")
        try:
            kind = FaultKind(name)
        except ValueError:
            raise ValueError(f"--faults: unknown fault {name!r}; known: {', '.join(k.value for k in FaultKind)}") from None
        if value:
            if kind not in first:
                raise ValueError(f"--faults: {kind.value} takes no value; got {part!r}")
            try:
                number = float(value)
            except ValueError:
                raise ValueError(f"--faults: {part!r}: {value!r} is not a number ({first[kind]})") from None
            if number < 0 or (kind is FaultKind.DROP and number > 1):
                raise ValueError(f"--faults: {part!r}: {first[kind]} must be >= 0" + (" and <= 1" if kind is FaultKind.DROP else ""))
            out[kind][first[kind]] = number
        if kind not in kinds:
            kinds.append(kind)
    if not kinds:
        raise ValueError("--faults: name at least one fault: " + ", ".join(k.value for k in FaultKind))
    return tuple(kinds), out


def match_targets(pattern: str, workers: Iterable[str]) -> tuple[str, ...]:
    """The workers matching a comma-separated list of globs, sorted (so the schedule does not depend on order)."""
    globs = [g.strip() for g in pattern.split(",") if g.strip()]
    return tuple(sorted(w for w in set(workers) if any(fnmatch.fnmatchcase(w, g) for g in globs)))


def plan(seed: int, rate: float, duration: float, kinds: Sequence[FaultKind], targets: Sequence[str],
         params: dict[FaultKind, dict[str, float]] | None = None) -> Schedule:
    """Poisson arrivals at `rate`/s over `duration` s; each picks a kind and a target uniformly."""
    rng = random.Random(seed)
    chosen = params or DEFAULT_PARAMS
    decisions: list[Decision] = []
    at = 0.0
    while rate > 0 and targets:
        at += rng.expovariate(rate)
        if at >= duration:
            break
        kind = kinds[rng.randrange(len(kinds))]
        target = targets[rng.randrange(len(targets))]
        decisions.append(Decision(len(decisions), round(at, 6), kind, target, dict(chosen.get(kind, {}))))
    return Schedule(seed, rate, duration, tuple(kinds), tuple(targets), tuple(decisions))


def write_log(schedule: Schedule, path: Path) -> None:
    with open(path, "w") as f:
        f.write(json.dumps(schedule.header()) + "\n")
        for d in schedule.decisions:
            f.write(json.dumps(d.to_json()) + "\n")


def read_log(path: Path) -> Schedule:
    try:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
    except OSError as exc:
        raise LogError(f"{path}: cannot read the decision log ({exc.strerror})") from None
    try:
        header = json.loads(lines[0]) if lines else {}
    except json.JSONDecodeError as exc:
        raise LogError(f"{path}: line 1: not JSON ({exc.msg})") from None
    if header.get("log") != LOG_NAME or header.get("version") != LOG_VERSION:
        raise LogError(f"{path}: line 1: not a chaos decision log (expected {LOG_NAME!r} version {LOG_VERSION})")
    decisions = []
    for n, line in enumerate(lines[1:], start=2):
        try:
            d = json.loads(line)
            decisions.append(Decision(int(d["i"]), float(d["at"]), FaultKind(d["fault"]), str(d["target"]),
                                      {str(k): float(v) for k, v in d.get("params", {}).items()}))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise LogError(f"{path}: line {n}: not a decision ({type(exc).__name__}: {exc})") from None
    return Schedule(int(header["seed"]), float(header["rate"]), float(header["duration"]),
                    tuple(FaultKind(k) for k in header["faults"]), tuple(header["targets"]), tuple(decisions))
