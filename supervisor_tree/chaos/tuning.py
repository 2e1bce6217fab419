"""Retry-policy tuning from measurements: a grid of policies, each measured under the same injected faults.

Owns `supervise tune-retry WORKER`: for each policy of the grid it sets the policy live
on WORKER (every caller's), drives the worker's own workload at it for one slice of the
budget while the same seeded fault schedule hits WORKER (so every policy meets the
same faults at the same moments), and measures success rate, p50/p99 latency, load
amplification (attempts per request, from the node's retry figures) and recovery
time after a crash.  It keeps the Pareto frontier (success up, p99 down, amplification
down), recommends the cheapest frontier policy that meets `--target` (least
amplification to 0.01, then fewest attempts, then lowest p99), checks it once more at 100 %
failure (every message dropped: the budget must hold amplification to 1 + ratio, plus
its floor), prints it as the TOML to paste, and sets it live with `--apply` (else the
worker's policy goes back to what it was).  A grid larger than the budget allows is
sampled (seeded), and the report says so.

    result = tune(TuneOptions(worker="session", faults="kill,drop:0.05", fault_rate=1.0, budget=120), console)
    result.recommended, result.toml
"""

from __future__ import annotations

import itertools
import random
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from supervisor_tree.chaos import blast
from supervisor_tree.chaos.load import Load, Op, _echo, ops_for
from supervisor_tree.chaos.report import percentiles
from supervisor_tree.chaos.run import ChaosOptions, Injections, follow_schedule
from supervisor_tree.chaos.schedule import Decision, FaultKind, Schedule, parse_faults, plan
from supervisor_tree.chaos.tree import ChaosTree
from supervisor_tree.chaos.watch import EventWatch
from supervisor_tree.client import Client
from supervisor_tree.config.retry import RETRY_KEYS, policy_from_mapping, policy_table
from supervisor_tree.spec import RetryBudget

__all__ = ["TuneOptions", "Point", "TuneResult", "tune", "parse_target", "load_grid", "DEFAULT_GRID"]

MIN_SLICE = 3.0  # s of measurement per policy, at least
DEFAULT_GRID: dict[str, list[object]] = {
    "attempts": [1, 2, 3, 5], "wait": ["fixed", "decorrelated"], "initial": [0.005, 0.02], "max": [0.25],
    "per_attempt_timeout": [0.1, 0.5], "deadline": [2.0], "budget": [0.2],
}
_TARGET = re.compile(r"^\s*(success|p50|p99|amplification|recovery)\s*(>=|<=)\s*([0-9.]+)\s*(%|ms|x)?\s*$")


@dataclass(frozen=True, slots=True)
class TuneOptions:
    worker: str
    config: str | None = None
    run_dir: str | None = None
    faults: str = "kill"
    fault_rate: float = 1.0
    grid: Path | None = None
    budget: float = 120.0
    target: str = "success>=99.9%,p99<=50ms"
    seed: int = 0
    load: str | None = None  # default: the worker's own workload (components / echo)
    load_rate: float = 200.0
    apply: bool = False


@dataclass(slots=True)
class Point:
    fields: dict[str, object]  # the policy's keys (config form) plus "budget"
    success: float = 0.0
    p50: float | None = None
    p99: float | None = None
    amplification: float = 1.0
    recovery: float | None = None  # ms, p50 over the slice's crashes
    requests: int = 0
    refused: int = 0

    def measures(self) -> dict[str, float | None]:
        return {"success": self.success, "p50": self.p50, "p99": self.p99, "amplification": self.amplification,
                "recovery": self.recovery}

    def label(self) -> str:
        f = self.fields
        return (f"{f['attempts']}x {f['wait']} {f['initial']}s..{f.get('max')}s"
                + (f" attempt {f['per_attempt_timeout']}s" if f.get("per_attempt_timeout") else "")
                + (f" deadline {f['deadline']}s" if f.get("deadline") else "") + f" budget {f['budget']}")


@dataclass(slots=True)
class TuneResult:
    points: list[Point]
    frontier: list[Point]
    recommended: Point | None
    sampled: str = ""
    full_failure: dict[str, float] = field(default_factory=dict)
    toml: str = ""


def parse_target(text: str) -> list[tuple[str, str, float]]:
    """`success>=99.9%,p99<=50ms` -> [("success", ">=", 99.9), ("p99", "<=", 50.0)]."""
    out = []
    for part in text.split(","):
        m = _TARGET.match(part)
        if not m:
            raise ValueError(f"--target: cannot read {part.strip()!r}; e.g. success>=99.9%,p99<=50ms,amplification<=1.2")
        out.append((m[1], m[2], float(m[3])))
    return out


def meets(point: Point, target: list[tuple[str, str, float]]) -> bool:
    values = point.measures()
    for name, op, limit in target:
        value = values[name]
        if value is None:
            if name == "recovery":
                continue  # no crash in its slice: nothing to hold against it
            return False
        if (op == ">=" and value < limit) or (op == "<=" and value > limit):
            return False
    return True


def load_grid(path: Path | None) -> list[dict[str, object]]:
    """The grid's points: the cartesian product of each key's values (a TOML table of arrays)."""
    grid: dict[str, Any] = dict(DEFAULT_GRID)
    if path is not None:
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"--grid {path}: {exc}") from None
        unknown = sorted(set(data) - set(RETRY_KEYS) - {"budget"})
        if unknown:
            raise ValueError(f"--grid {path}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(RETRY_KEYS)}, budget")
        grid = {k: v if isinstance(v, list) else [v] for k, v in data.items()}
        grid.setdefault("budget", [0.2])
    keys = sorted(grid)
    points = [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]
    for p in points:
        fields = {k: v for k, v in p.items() if k != "budget"}
        policy_from_mapping(fields, f"--grid {path or 'default'}")  # ValueError: the config's own message
        if not isinstance(p["budget"], (int, float)) or p["budget"] < 0:
            raise ValueError(f"--grid {path or 'default'}: budget must be a number >= 0; got {p['budget']!r}")
    return points


def _frontier(points: list[Point]) -> list[Point]:
    def worse(a: Point, b: Point) -> bool:  # b dominates a
        ap99, bp99 = a.p99 if a.p99 is not None else float("inf"), b.p99 if b.p99 is not None else float("inf")
        no_worse = b.success >= a.success and bp99 <= ap99 and b.amplification <= a.amplification
        better = b.success > a.success or bp99 < ap99 or b.amplification < a.amplification
        return no_worse and better

    return [a for a in points if not any(worse(a, b) for b in points if b is not a)]


def _ops(worker: str, load: str | None, status: dict[str, Any], workers: list[str]) -> list[Op]:
    if load is None:
        known = [op for op in ops_for("components", workers, status) if op.worker == worker] if worker in (
            "registry", "session", "queue", "pool") else []
        return known or [Op(f"{worker}.echo", worker, _echo(worker))]
    return ops_for(load, workers, status, (worker,))


def _set(client: Client, worker: str, fields: dict[str, object]) -> None:
    policy = {k: v for k, v in fields.items() if k != "budget"}
    client.control("retry_set", callee=worker, caller=None, policy=policy, off=False,
                   budget={"ratio": fields["budget"]}, reset=True)


def _measure(options: TuneOptions, tree: ChaosTree, client: Client, fields: dict[str, object], n: int,
             slice_s: float, decisions: list[Decision], console: Console, threads: int = 2) -> Point:
    _set(client, options.worker, fields)
    status = client.status()
    workers = blast.TreeModel.from_status(status).workers()
    caller = f"tune{n}"
    load = Load(tree.run_dir, _ops(options.worker, options.load, status, workers), threads, options.load_rate, caller)
    schedule = Schedule(options.seed, options.fault_rate, slice_s, tuple({d.fault for d in decisions}),
                        (options.worker,), tuple(decisions))
    with EventWatch(tree.run_dir) as watch:
        run = Injections(ChaosOptions(max_down=1.0), tree, client, watch)
        load.start()
        follow_schedule(run, schedule, len(workers), False, console)
        outcomes = run.finish()
        run.injector.heal([options.worker])
        figures = load.stop()
    pairs = [p for p in client.status().get("retries", {}).get("pairs", []) if str(p["caller"]).startswith(caller)]
    requests = sum(int(p["requests"]) for p in pairs)
    attempts = sum(int(p["attempts"]) for p in pairs)
    lat = percentiles([v / 1000 for v in figures.latencies_us])
    rec = percentiles([o.recovery_ms for o in outcomes if o.recovery_ms is not None])
    return Point(fields, round(figures.success_pct, 3), lat["p50"], lat["p99"],
                 round(attempts / requests, 4) if requests else 1.0, rec["p50"], figures.sent,
                 sum(int(p["refused"]) for p in pairs))


def tune(options: TuneOptions, console: Console) -> TuneResult:
    target = parse_target(options.target)
    kinds, params = parse_faults(options.faults)
    points = load_grid(options.grid)
    sampled = ""
    fit = max(1, int(options.budget // MIN_SLICE))
    if len(points) > fit:
        sampled = (f"the grid has {len(points)} policies; {options.budget:g}s at {MIN_SLICE:g}s each measures {fit}: "
                   f"sampled {fit} (seed {options.seed})")
        points = random.Random(options.seed).sample(points, fit)
    slice_s = max(MIN_SLICE, options.budget / len(points))
    with ChaosTree(options.config, options.run_dir) as tree, tree.client("tune-retry") as client:
        model = blast.TreeModel.from_status(client.status())
        if options.worker not in model.worker_sup:
            raise ValueError(f"tune-retry: no worker {options.worker!r} in this tree; workers: "
                             f"{', '.join(sorted(model.worker_sup))}")
        before = next((p for p in client.control("retry_show")["pairs"] if p["callee"] == options.worker
                       and p["caller"] == "*"), None)
        decisions = _decisions(options, kinds, params, slice_s)
        if sampled:
            console.print(f"tune-retry: {sampled}")
        console.print(f"tune-retry {options.worker}: {len(points)} policies x {slice_s:.1f}s under {options.faults} "
                      f"at {options.fault_rate:g}/s (seed {options.seed}); target {options.target}")
        result = TuneResult([], [], None, sampled)
        try:
            for n, fields in enumerate(points):
                point = _measure(options, tree, client, fields, n, slice_s, decisions, console)
                result.points.append(point)
                console.print(f"  {n + 1:>3}/{len(points)} {point.label():<62} success {point.success:7.3f}% "
                              f"p99 {point.p99} ms  amp {point.amplification:.3f}")
            result.frontier = _frontier(result.points)
            # cheapest: the least amplification measured (to 0.01: below that it is noise), then the
            # fewest attempts (the most it can cost when everything fails), then the lowest p99
            fits = sorted((p for p in result.frontier if meets(p, target)),
                          key=lambda p: (round(p.amplification, 2), int(p.fields["attempts"]), p.p99 or 0.0))  # type: ignore[call-overload]
            result.recommended = best = fits[0] if fits else None
            if best is not None:
                result.full_failure = _full_failure(options, tree, client, best, len(points), console)
                result.toml = _toml(best)
        finally:
            _restore(client, options, before, result.recommended if options.apply else None)
    return result


def _full_failure(options: TuneOptions, tree: ChaosTree, client: Client, best: Point, n: int,
                  console: Console) -> dict[str, float]:
    """The recommended policy with every message dropped: what the budget lets through.

    The budget (set afresh, so its window holds only this phase) allows retries up to
    ratio x requests + min_per_s x its window (the floor is there from the start): that
    bound, as attempts per request, is `allowed`.
    """
    seconds = 2 * MIN_SLICE
    drop = [Decision(0, 0.0, FaultKind.DROP, options.worker, {"probability": 1.0, "duration": seconds})]
    worst = _measure(options, tree, client, best.fields, n, seconds, drop, console, threads=8)
    budget = RetryBudget(ratio=float(best.fields["budget"]))  # type: ignore[arg-type]
    requests = max(1, worst.requests)
    allowed = 1 + (budget.ratio * requests + budget.min_per_s * budget.window) / requests
    return {"amplification": worst.amplification, "allowed": round(allowed, 4), "budget_ratio": budget.ratio,
            "requests": worst.requests, "refused": worst.refused,
            "within": float(worst.amplification <= allowed + 0.01)}


def _decisions(options: TuneOptions, kinds: tuple[FaultKind, ...], params: dict[FaultKind, dict[str, float]],
               slice_s: float) -> list[Decision]:
    """slow and drop hold for the whole slice (a known failure rate); the others arrive at --fault-rate."""
    held = [k for k in kinds if not k.restarts]
    events = [k for k in kinds if k.restarts]
    out = [Decision(i, 0.0, k, options.worker, {**params.get(k, {}), "duration": slice_s}) for i, k in enumerate(held)]
    if events:
        for d in plan(options.seed, options.fault_rate, slice_s, events, (options.worker,), params).decisions:
            out.append(Decision(len(out), d.at, d.fault, d.target, d.params))
    return out


def _restore(client: Client, options: TuneOptions, before: dict[str, Any] | None, best: Point | None) -> None:
    if best is not None:
        _set(client, options.worker, best.fields)
        return
    client.control("retry_set", callee=options.worker, caller=None, policy={}, off=False, budget={}, reset=True)
    if before is not None and str(before["source"]).startswith("live") and before["retry"]:
        client.control("retry_set", callee=options.worker, caller=None, policy=before["retry"], off=False, budget={},
                       reset=False)


def _toml(point: Point) -> str:
    fields = {k: v for k, v in point.fields.items() if k != "budget"}
    table = policy_table(policy_from_mapping(fields, "tune-retry"))

    def value(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return f'"{v}"'
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return f"{v:g}" if isinstance(v, float) else str(v)

    retry = ", ".join(f"{k} = {value(v)}" for k, v in table.items())
    return f"retry = {{ {retry} }}\nretry_budget = {{ ratio = {value(float(point.fields['budget']))} }}"  # type: ignore[arg-type]


def render(result: TuneResult, options: TuneOptions, console: Console) -> None:
    table = Table(title=f"tune-retry {options.worker}: the frontier (success up, p99 down, amplification down)",
                  title_justify="left")
    for col in ("POLICY", "SUCCESS %", "P50 ms", "P99 ms", "AMPLIFICATION", "RECOVERY p50 ms", "REFUSED", "TARGET"):
        table.add_column(col, justify="left" if col == "POLICY" else "right")
    target = parse_target(options.target)
    for p in sorted(result.frontier, key=lambda p: (p.amplification, -p.success)):
        table.add_row(("* " if p is result.recommended else "") + p.label(), f"{p.success:.3f}", str(p.p50),
                      str(p.p99), f"{p.amplification:.3f}", "-" if p.recovery is None else str(p.recovery), str(p.refused),
                      "meets" if meets(p, target) else "-")
    console.print(table)
    if result.recommended is None:
        console.print(f"no measured policy meets {options.target}; the frontier above is what the faults allow")
        return
    ff = result.full_failure
    console.print(f"recommended: {result.recommended.label()}")
    console.print(f"at 100% failure (every message dropped, {ff['requests']:g} requests): amplification "
                  f"{ff['amplification']:.3f}, the budget allows {ff['allowed']:.3f} ({ff['budget_ratio']:.0%} of "
                  f"requests + its floor; {ff['refused']:g} retries refused): "
                  + ("within its budget" if ff["within"] else "[red]OVER ITS BUDGET[/]"))
    console.print("paste into the child's table of WORKER in the config:".replace("WORKER", options.worker))
    console.print(result.toml, markup=False, highlight=False, soft_wrap=True)
    console.print("applied to the running tree (supervise retry show)" if options.apply else
                  "not applied (--apply sets it on the running tree); the worker's policy is back to what it was")
