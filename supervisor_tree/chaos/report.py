"""The chaos report: what was injected, what the tree did, what the load saw; as a table and as JSON; the gates.

Owns the report's record (`ChaosReport`), its percentiles, its rendering (rich tables,
one screen) and the gates given on the command line (`Gates`: --max-lost,
--max-recovery-ms, --min-success), each judged against the report; any gate missed,
a blast-radius mismatch, a steady state not regained or a dead tree makes the run fail.

    report.render(console)
    report.to_json()          # what --report PATH writes
    report.passed             # False -> `supervise chaos` exits 1
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from supervisor_tree.chaos.load import LoadFigures
from supervisor_tree.chaos.steady import SteadyState

__all__ = ["FaultOutcome", "Gates", "GateResult", "ChaosReport", "percentiles"]


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50, p99 and max (nearest rank), None when there is nothing to rank."""
    if not values:
        return {"p50": None, "p99": None, "max": None, "n": 0}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]

    return {"p50": round(rank(0.50), 3), "p99": round(rank(0.99), 3), "max": round(ordered[-1], 3), "n": len(ordered)}


@dataclass(slots=True)
class FaultOutcome:
    i: int
    fault: str
    target: str
    at: float  # s from the start of the injection phase (as decided)
    status: str  # injected | skipped | not_triggered
    reason: str = ""  # why skipped / not triggered
    detect_ms: float | None = None  # injection -> the node's "exited" (or "hung") report
    recovery_ms: float | None = None  # injection -> every restarted worker's new incarnation answered
    predicted: str = ""
    blast_ok: bool | None = None
    blast_detail: str = ""
    evidence: list[str] = field(default_factory=list)  # for a mismatch: the reports it was judged on

    def as_dict(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__slots__}


@dataclass(frozen=True, slots=True)
class GateResult:
    gate: str
    limit: float
    value: float
    ok: bool


@dataclass(frozen=True, slots=True)
class Gates:
    max_lost: int | None = None
    max_recovery_ms: float | None = None  # on the recoveries' p99
    min_success: float | None = None  # percent of requests

    def judge(self, report: ChaosReport) -> list[GateResult]:
        out = []
        if self.max_lost is not None:
            lost = report.load.lost
            out.append(GateResult("max-lost", self.max_lost, lost, lost <= self.max_lost))
        if self.max_recovery_ms is not None:
            p99 = percentiles([o.recovery_ms for o in report.outcomes if o.recovery_ms is not None])["p99"]
            value = p99 if p99 is not None else 0.0
            out.append(GateResult("max-recovery-ms (p99)", self.max_recovery_ms, value, value <= self.max_recovery_ms))
        if self.min_success is not None:
            pct = report.load.success_pct
            out.append(GateResult("min-success (%)", self.min_success, round(pct, 3), pct >= self.min_success))
        return out


@dataclass(slots=True)
class ChaosReport:
    seed: int
    duration: float
    rate: float
    faults: list[str]
    targets: list[str]
    tree: str
    run_dir: str
    decision_log: str
    steady_before: SteadyState
    steady_after: SteadyState | None = None
    outcomes: list[FaultOutcome] = field(default_factory=list)
    supervisors: dict[str, dict[str, int]] = field(default_factory=dict)
    survived: bool = True
    load: LoadFigures = field(default_factory=LoadFigures)
    retry_figures: dict[str, int] = field(default_factory=dict)
    healed: list[str] = field(default_factory=list)
    interrupted: bool = False
    elapsed: float = 0.0
    gates: list[GateResult] = field(default_factory=list)

    @property
    def mismatches(self) -> list[FaultOutcome]:
        return [o for o in self.outcomes if o.blast_ok is False]

    @property
    def passed(self) -> bool:
        steady = self.steady_after is not None and self.steady_after.ok
        return steady and self.survived and not self.mismatches and all(g.ok for g in self.gates)

    def summary(self) -> str:
        """A few lines for an assertion message: the verdict and what made it."""
        lines = [f"chaos seed {self.seed}: {'passed' if self.passed else 'FAILED'}; tree survived: {self.survived}"]
        after = self.steady_after
        if after is None or not after.ok:
            lines.append("steady state after: " + ("not checked" if after is None else "; ".join(after.problems)))
        lines += [f"blast radius mismatch #{o.i} {o.fault} {o.target}: {o.blast_detail}" for o in self.mismatches]
        lines += [f"gate {g.gate} missed: {g.value:g} (limit {g.limit:g})" for g in self.gates if not g.ok]
        ld = self.load
        lines.append(f"requests: sent {ld.sent}, succeeded {ld.succeeded}, failed {ld.failed}, lost {ld.lost}, "
                     f"duplicated {ld.duplicated}")
        return "\n".join(lines)

    def by_kind(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for kind in sorted({o.fault for o in self.outcomes}):
            mine = [o for o in self.outcomes if o.fault == kind]
            injected = [o for o in mine if o.status == "injected"]
            out[kind] = {
                "decided": len(mine), "injected": len(injected),
                "skipped": sum(o.status == "skipped" for o in mine),
                "not_triggered": sum(o.status == "not_triggered" for o in mine),
                "detect_ms": percentiles([o.detect_ms for o in injected if o.detect_ms is not None]),
                "recovery_ms": percentiles([o.recovery_ms for o in injected if o.recovery_ms is not None]),
                "blast_ok": sum(o.blast_ok is True for o in injected),
                "blast_mismatch": sum(o.blast_ok is False for o in injected),
                "targets": dict(Counter(o.target for o in injected).most_common()),
            }
        return out

    def to_json(self) -> dict[str, object]:
        lat = percentiles([v / 1000 for v in self.load.latencies_us])
        skipped = Counter(o.reason.split(":")[0] for o in self.outcomes if o.status == "skipped")
        return {
            "seed": self.seed, "duration_s": self.duration, "rate_per_s": self.rate, "faults": self.faults,
            "targets": self.targets, "tree": self.tree, "run_dir": self.run_dir, "decision_log": self.decision_log,
            "elapsed_s": round(self.elapsed, 3), "interrupted": self.interrupted, "passed": self.passed,
            "steady_state": {"before": self.steady_before.as_dict(),
                             "after": self.steady_after.as_dict() if self.steady_after else None},
            "survived": self.survived, "by_fault": self.by_kind(), "skipped_because": dict(skipped),
            "supervisors": self.supervisors, "requests": {**self.load.as_dict(), "latency_ms": lat},
            "retries": self.retry_figures, "healed": self.healed,
            "blast_mismatches": [o.as_dict() for o in self.mismatches],
            "gates": [{"gate": g.gate, "limit": g.limit, "value": g.value, "ok": g.ok} for g in self.gates],
            "outcomes": [o.as_dict() for o in self.outcomes],
        }

    # -- the table --

    def render(self, console: Console) -> None:
        console.print(f"[bold]chaos[/] seed {self.seed} · {self.duration:g}s at {self.rate:g} faults/s · "
                      f"faults {','.join(self.faults)} · {len(self.targets)} targets · tree {self.tree}"
                      + ("  [yellow](interrupted: Ctrl-C)[/]" if self.interrupted else ""))
        table = Table(title="faults", title_justify="left")
        for col in ("FAULT", "INJECTED", "SKIPPED", "DETECT p50/p99/max ms", "RECOVERY p50/p99/max ms", "BLAST OK",
                    "MISMATCH"):
            table.add_column(col, justify="left" if col == "FAULT" else "right")
        for kind, k in self.by_kind().items():
            table.add_row(kind, str(k["injected"]), str(k["skipped"] + k["not_triggered"]), _ppm(k["detect_ms"]),
                          _ppm(k["recovery_ms"]), str(k["blast_ok"]), str(k["blast_mismatch"]))
        console.print(table)
        sups = Table(title="supervisors", title_justify="left")
        for col in ("SUPERVISOR", "RESTARTS", "START ERRORS", "ESCALATIONS"):
            sups.add_column(col, justify="left" if col == "SUPERVISOR" else "right")
        for path, c in sorted(self.supervisors.items()):
            sups.add_row(path, str(c.get("restarting", 0)), str(c.get("start_error", 0)),
                         str(c.get("reached_max_restart_intensity", 0)))
        console.print(sups)
        ld = self.load
        lat = percentiles([v / 1000 for v in ld.latencies_us])
        console.print(f"requests: sent {ld.sent}, succeeded {ld.succeeded} ({ld.success_pct:.3f}%), retried {ld.retried}, "
                      f"failed {ld.failed}, [bold]lost {ld.lost}, duplicated {ld.duplicated}[/]; latency ms "
                      f"p50 {lat['p50']} p99 {lat['p99']} max {lat['max']}")
        for reason, n in ld.failures.most_common(6):
            console.print(f"  {n:>6}  {reason}")
        if self.retry_figures:
            f = self.retry_figures
            amp = (f.get("attempts", 0) / f["requests"]) if f.get("requests") and f.get("attempts") else 1.0
            console.print(f"retries (the load's calls): {f.get('retries', 0)} retries, {f.get('recovered', 0)} recovered, "
                          f"{f.get('gave_up', 0)} gave up, {f.get('refused', 0)} refused by budgets; "
                          f"attempts per retried-policy request {amp:.3f}")
        for o in self.mismatches[:10]:
            console.print(f"[red]blast radius mismatch[/] #{o.i} {o.fault} {o.target}: {o.blast_detail}")
        after = self.steady_after
        console.print(f"tree survived: {'yes' if self.survived else '[red]no[/]'} · steady state before: "
                      f"{'ok' if self.steady_before.ok else 'NO'} · after: "
                      + ("ok" if after and after.ok else "[red]NO[/] " + "; ".join(after.problems[:5] if after else ["not checked"])))
        for g in self.gates:
            console.print(f"gate {g.gate} <= {g.limit:g}: {g.value:g} " if g.gate != "min-success (%)" else
                          f"gate {g.gate} >= {g.limit:g}: {g.value:g} ", end="")
            console.print("[green]ok[/]" if g.ok else "[red]MISSED[/]")
        console.print(f"decision log: {self.decision_log} · {'[green]PASSED[/]' if self.passed else '[red]FAILED[/]'}")


def _ppm(p: dict[str, float | None]) -> str:
    if not p.get("n"):
        return "-"
    return f"{p['p50']:.1f} / {p['p99']:.1f} / {p['max']:.1f}"
