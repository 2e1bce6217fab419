"""`supervise health`: is the tree well?  Exit 0 ok, 1 warn, 2 critical (as monitoring plugins do).

Owns the gates and the checks; the figures come from `snapshot.Sampler`, the memory
slopes from `memwatch.Series` over a short window.  Prints nothing (the CLI does).

    gates = Gates.parse("p99_ms=5,mailbox=1000,slope=1")
    report = check(sampler, gates, window=5.0)
    report.level, [c.line() for c in report.checks]

Checks, each one line with the worker or supervisor it is about:
- every permanent child is running (critical when not), none is restarting or has
  restarted in the last minute (warn: a crash loop can look "running" in one sample);
- every supervisor has intensity headroom left (warn at 0: its next restart escalates);
- call p99 under `p99_ms` (warn);
- mailbox depth under the worker's `mailbox_limit` (critical over it, warn past 80%),
  or under the `mailbox` gate where no limit is configured (warn);
- RSS slope under `slope` MiB/min over the window (warn); a short window sees fast
  leaks only (memwatch.NOISE_MIB): `supervise memwatch` over minutes finds slow ones.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields

from supervisor_tree.observe.memwatch import Series, Watch, over_gate, slopes_of
from supervisor_tree.observe.snapshot import RECENT_S, Sampler, Snapshot

__all__ = ["Level", "Gates", "Check", "Report", "check", "evaluate", "GateError"]


class GateError(ValueError):
    """A --gates value that does not parse; the message names it."""


class Level(enum.IntEnum):
    OK = 0
    WARN = 1
    CRITICAL = 2

    def __str__(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Gates:
    p99_ms: float = 5.0  # the seed's quality gate: p99 < 5 ms
    mailbox: int = 1000  # depth that warns where a worker has no mailbox_limit
    slope: float = 1.0  # MiB/min, the seed's memory growth gate

    @classmethod
    def parse(cls, text: str | None) -> Gates:
        """'p99_ms=5,mailbox=1000,slope=1' (any subset) over the defaults."""
        if not text:
            return cls()
        known = {f.name: f for f in fields(cls)}
        values: dict[str, float | int] = {}
        for part in text.split(","):
            name, sep, raw = part.partition("=")
            name = name.strip()
            if not sep or name not in known:
                raise GateError(f"--gates: {part.strip()!r} is not NAME=NUMBER with NAME one of {', '.join(known)}")
            try:
                number = float(raw)
            except ValueError:
                raise GateError(f"--gates: {name} must be a number; got {raw.strip()!r}") from None
            if number < 0:
                raise GateError(f"--gates: {name} must be >= 0; got {number:g}")
            values[name] = int(number) if known[name].type in (int, "int") else number
        return cls(**values)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Check:
    level: Level
    name: str  # running, restarting, headroom, p99, mailbox, memory
    subject: str  # a worker id, a supervisor path, or "tree"
    detail: str

    def line(self) -> str:
        return f"{str(self.level):8} {self.name:10} {self.subject}: {self.detail}"

    def as_json(self) -> dict[str, object]:
        return {"level": str(self.level), "check": self.name, "subject": self.subject, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class Report:
    checks: tuple[Check, ...]
    workers: int
    window: float

    @property
    def level(self) -> Level:
        return max((c.level for c in self.checks), default=Level.OK)

    def problems(self) -> list[Check]:
        return [c for c in self.checks if c.level is not Level.OK]

    def as_json(self) -> dict[str, object]:
        return {"status": str(self.level), "exit_code": int(self.level), "workers": self.workers,
                "window_s": self.window, "checks": [c.as_json() for c in self.checks]}


def evaluate(snap: Snapshot, gates: Gates, series: Sequence[Series] = (), window: float = 0.0) -> Report:
    """The checks for one snapshot (plus RSS series for the slopes); pure."""
    out: list[Check] = []
    for w in snap.workers:
        if w.state in ("restarting", "starting", "stopping"):  # on its way: a crash loop is caught in the act here
            out.append(Check(Level.WARN, "restarting", w.id, f"{w.state} under {w.supervisor} ({w.restarts} restarts so far)"))
        elif w.state != "running" and w.restart == "permanent":
            out.append(Check(Level.CRITICAL, "running", w.id, f"permanent child is {w.state} under {w.supervisor}"))
        elif w.recent_restarts:
            out.append(Check(Level.WARN, "restarting", w.id, f"restarted {w.recent_restarts} time(s) in the last {RECENT_S:.0f}s"))
        if w.p99_ms is not None and w.p99_ms > gates.p99_ms:
            out.append(Check(Level.WARN, "p99", w.id, f"call p99 {w.p99_ms:.2f} ms over the gate of {gates.p99_ms:g} ms"))
        out.extend(_mailbox(w.id, w.mailbox, w.mailbox_limit, gates))
    for s in snap.supervisors:
        if s.headroom <= 0:
            out.append(Check(Level.WARN, "headroom", s.path,
                             f"{s.restarts} restarts in the last {s.period}s, intensity {s.intensity}: the next one escalates"))
    if snap.stopping:
        out.append(Check(Level.WARN, "running", "tree", "the node is stopping"))
    if snap.tree is None:
        out.append(Check(Level.CRITICAL, "running", "tree", "the root supervisor has exited"))
    out.extend(_memory(series, gates, window))
    if not out:
        out.append(Check(Level.OK, "all", "tree", f"{len(snap.workers)} workers within every gate"))
    return Report(tuple(out), len(snap.workers), window)


def _mailbox(worker: str, depth: int | None, limit: int | None, gates: Gates) -> list[Check]:
    if depth is None:
        return []
    if limit:
        if depth > limit:
            return [Check(Level.CRITICAL, "mailbox", worker, f"{depth} messages waiting, over its mailbox_limit of {limit}")]
        if depth > 0.8 * limit:
            return [Check(Level.WARN, "mailbox", worker, f"{depth} messages waiting, past 80% of its mailbox_limit of {limit}")]
        return []
    if depth > gates.mailbox:
        return [Check(Level.WARN, "mailbox", worker, f"{depth} messages waiting, over the gate of {gates.mailbox} (no mailbox_limit set)")]
    return []


def _memory(series: Sequence[Series], gates: Gates, window: float) -> list[Check]:
    per_worker, _ = slopes_of(series)
    return [Check(Level.WARN, "memory", s.worker, f"RSS grows {slope:.2f} MiB/min over {s.span_s:.0f}s (gate {gates.slope:g} MiB/min)")
            for s, slope in per_worker if over_gate(slope, s.span_s, gates.slope)]


def check(sampler: Sampler, gates: Gates, window: float = 5.0, every: float = 0.5) -> Report:
    """Sample for `window` s (RSS slopes need a window; 0: one sample, no slope check), then evaluate."""
    watch = Watch()
    snap = sampler.sample()
    watch.add(snap)
    end = time.monotonic() + window
    while window > 0 and time.monotonic() < end:
        time.sleep(min(every, max(0.0, end - time.monotonic())))
        snap = sampler.sample()
        watch.add(snap)
    return evaluate(snap, gates, watch.current() if window > 0 else (), window)
