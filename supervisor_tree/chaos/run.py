"""A chaos run from start to report: steady state, load, faults on schedule, healing, steady state again.

Owns the order of a run and its safety rules:

1. attach to the tree, or start it (tree.py); print the seed; plan the schedule (or read
   the --replay log) and write the decision log;
2. check the steady state (steady.py); a tree not steady before the run is not tested;
3. start the load (load.py) and the event watch (watch.py);
4. at each decision's time: take the tree's status, skip what would break a safety rule
   (a target no longer in the tree; a region another fault in flight may still touch;
   more than --max-down of the workers down at once), predict the blast radius
   (blast.py), inject (faults.py), and follow it in a thread (settle.py);
5. at the end, or on Ctrl-C: stop injecting, wait for the faults in flight, heal
   (clear faults, wake stopped workers), wait for the steady state, stop the load;
6. the report (report.py), the gates; stop the tree if this run started it.

Faults only ever reach processes through the node (by worker id) or the worker's own
control socket: nothing outside the tree can be signalled.

    report = run_chaos(ChaosOptions(duration=10, rate=2, faults="kill,stop"), Console())
"""

from __future__ import annotations

import random
import threading
import time
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from supervisor_tree.chaos import blast
from supervisor_tree.chaos.faults import Injector, NotInjected
from supervisor_tree.chaos.load import Load, ops_for
from supervisor_tree.chaos.report import ChaosReport, FaultOutcome, Gates
from supervisor_tree.chaos.schedule import (
    Decision,
    FaultKind,
    Schedule,
    match_targets,
    parse_faults,
    plan,
    read_log,
    write_log,
)
from supervisor_tree.chaos.settle import Flight, settle
from supervisor_tree.chaos.steady import check, wait_steady
from supervisor_tree.chaos.tree import ChaosTree
from supervisor_tree.chaos.watch import EventWatch
from supervisor_tree.client import Client, ClientError

__all__ = ["ChaosOptions", "run_chaos", "ChaosAborted", "Injections", "follow_schedule"]

HEAL_S = 60.0  # s for the tree to be steady again after the last fault


class ChaosAborted(Exception):
    """The run could not start (no steady state, bad targets, ...): the message says why."""


@dataclass(frozen=True, slots=True)
class ChaosOptions:
    config: str | None = None
    run_dir: str | None = None
    duration: float = 30.0
    rate: float = 1.0
    targets: str = "*"
    faults: str = "kill"
    seed: int | None = None
    load: str = "auto"  # components (when the tree has them) else echo; none; module:function
    load_rate: float = 400.0
    load_threads: int = 4
    max_down: float = 0.5
    allow_tree_death: bool = False  # inject even a fault predicted to take the root past its intensity
    report: Path | None = None
    log: Path | None = None
    dry_run: bool = False
    replay: Path | None = None
    gates: Gates = field(default_factory=Gates)
    progress: bool = True


def _abnormal(kind: FaultKind) -> bool:
    return kind is not FaultKind.TERM  # SIGTERM: the worker stops with reason shutdown


def _predict(model: blast.TreeModel, d: Decision) -> list[blast.Prediction]:
    if not d.fault.restarts:
        return []
    fails = int(d.params.get("fails", 0)) if d.fault is FaultKind.FAIL_START else 0
    late = 4 if d.fault is FaultKind.STOP else 2  # seconds the exit may land after the snapshot
    return blast.predictions(model, d.target, abnormal=_abnormal(d.fault), failing_starts=fails, delays=range(late + 1))


class Injections:
    """The state of one run's injection phase (the in-flight faults and the verdicts)."""

    def __init__(self, options: ChaosOptions, tree: ChaosTree, client: Client, watch: EventWatch) -> None:
        self.options, self.tree, self.client, self.watch = options, tree, client, watch
        self.injector = Injector(client)
        self.flights: dict[int, Flight] = {}  # in flight
        self.history: list[Flight] = []  # every fault injected
        self.lock = threading.Lock()
        self.outcomes: list[FaultOutcome] = []
        self.futures: list[Future[FaultOutcome]] = []
        self.pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="chaos-settle")

    def others(self, me: Flight) -> list[tuple[float, set[str]]]:
        """The faults whose reports `me` must leave alone: those in flight when it was injected (their
        regions are disjoint from its own), and those injected after it (from their injection on)."""
        with self.lock:
            later = [(f.injected.at, f.region()) for f in self.history if f.decision.i > me.decision.i]
        return later + [(0.0, region) for region in me.beside]

    def _follow(self, flight: Flight) -> FaultOutcome:
        c = self.client.clone()  # one per fault: a Client is not thread-safe, and keeps a socket per incarnation
        try:
            return settle(flight, self.watch, c, lambda: self.others(flight))
        except Exception as exc:  # noqa: BLE001 - a bug in the check: reported as a failed check, the run goes on
            d = flight.decision
            return FaultOutcome(d.i, d.fault.value, d.target, d.at, "injected", blast_ok=False,
                                blast_detail=f"chaos could not check this fault: {_where(exc)}")
        finally:
            c.close()
            with self.lock:
                self.flights.pop(flight.decision.i, None)

    def _holds(self, model: blast.TreeModel, d: Decision, predictions: list[blast.Prediction]) -> set[str]:
        """What this fault locks: what it restarts, and a supervisor's window when the outcome depends on
        how the charges of faults in flight and its own add up (an escalation, or no headroom to spare)."""
        if not d.fault.restarts:
            return set()  # a slow or a drop restarts nothing: other faults may hit its worker meanwhile
        holds = {d.target}.union(*(p.core() for p in predictions))
        pending: dict[str, int] = {}
        for f in self.flights.values():
            for sup, n in f.charges().items():
                pending[sup] = pending.get(sup, 0) + n
        for p in predictions:
            for sup, n in p.charged.items():
                if p.escalated or pending.get(sup, 0) + n > model.sups[sup].headroom():
                    holds.add(sup)
        return holds

    def skip(self, d: Decision, reason: str) -> None:
        self.outcomes.append(FaultOutcome(d.i, d.fault.value, d.target, d.at, "skipped", reason))

    def one(self, d: Decision, n_workers: int) -> None:
        try:
            model = blast.TreeModel.from_status(self.client.status())
        except ClientError as exc:
            return self.skip(d, f"node: {exc}")
        if d.target not in model.worker_sup:
            return self.skip(d, f"gone: {d.target} is not a running worker of the tree now")
        predictions = _predict(model, d)
        touches = {d.target}.union(*(p.region() for p in predictions))
        down = {d.target}.union(*(p.restarted for p in predictions)) if d.fault.restarts else set()
        if any(p.tree_dies for p in predictions) and not self.options.allow_tree_death:
            return self.skip(d, "tree: the root would give up (its intensity); --allow-tree-death to inject it")
        with self.lock:
            holds = self._holds(model, d, predictions)
            busy = next((i for i, f in self.flights.items()
                         if (f.decision.fault.restarts and holds & f.region()) or f.holds & touches), None)
            in_flight_down = set().union(*(f.down() for f in self.flights.values()))
        if busy is not None:
            return self.skip(d, f"busy: its blast radius overlaps fault #{busy}, still settling")
        if len(in_flight_down | down) > self.options.max_down * n_workers:
            return self.skip(d, f"max-down: {len(in_flight_down | down)} of {n_workers} workers would be down "
                                f"(--max-down {self.options.max_down:g})")
        mark = self.watch.mark()
        try:
            injected = self.injector.inject(d, model.generation(d.target))
        except NotInjected as exc:
            return self.skip(d, f"refused: {exc}")
        with self.lock:
            flight = Flight(d, injected, model, predictions, mark, [f.region() for f in self.flights.values()], holds)
            self.flights[d.i] = flight
            self.history.append(flight)
        self.futures.append(self.pool.submit(self._follow, flight))

    def finish(self) -> list[FaultOutcome]:
        for fut in self.futures:
            self.outcomes.append(fut.result())
        self.pool.shutdown(wait=True)
        return sorted(self.outcomes, key=lambda o: o.i)


def _where(exc: BaseException) -> str:
    """`ValueError: ... (settle.py:123)`: enough to find the bug from a report."""
    frames = traceback.extract_tb(exc.__traceback__)
    last = f" ({Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{last}"


def _schedule(options: ChaosOptions, workers: list[str], seed: int) -> Schedule:
    if options.replay is not None:
        return read_log(options.replay)
    kinds, params = parse_faults(options.faults)
    targets = match_targets(options.targets, workers)
    if not targets:
        raise ValueError(f"--targets {options.targets!r} matches no worker of the tree; workers: {', '.join(sorted(workers))}")
    return plan(seed, options.rate, options.duration, kinds, targets, params)


def run_chaos(options: ChaosOptions, console: Console) -> ChaosReport:
    if options.replay is None:
        parse_faults(options.faults)  # bad options fail before any tree is started
        seed = options.seed if options.seed is not None else random.SystemRandom().randrange(2**32)
    else:
        seed = read_log(options.replay).seed
    console.print(f"chaos: seed {seed}" + (f" (replaying {options.replay})" if options.replay else ""))
    with ChaosTree(options.config, options.run_dir) as tree, tree.client() as client:
        status = client.status()
        model = blast.TreeModel.from_status(status)
        schedule = _schedule(options, model.workers(), seed)
        log = options.log or Path(f"chaos-{schedule.seed}.jsonl")
        write_log(schedule, log)
        console.print(f"tree {status['node']['name']} ({'started' if tree.started else 'attached'}; run dir "
                      f"{tree.run_dir}); {len(schedule.decisions)} decisions over {schedule.duration:g}s; log {log}")
        report = ChaosReport(schedule.seed, schedule.duration, schedule.rate, [k.value for k in schedule.kinds],
                             list(schedule.targets), str(status["node"]["name"]), str(tree.run_dir), str(log),
                             check(client))
        if options.dry_run:
            _dry_run(schedule, model, console)
            return report
        if not report.steady_before.ok:
            raise ChaosAborted("the tree is not in a steady state before the run: " + "; ".join(report.steady_before.problems))
        _inject_under_load(options, schedule, tree, client, report, console)
    return report


def _dry_run(schedule: Schedule, model: blast.TreeModel, console: Console) -> None:
    for d in schedule.decisions:
        predicted = " | ".join(p.describe() for p in _predict(model, d)) or "no restart"
        console.print(f"#{d.i:<4} t={d.at:8.3f}s {d.fault.value:<10} {d.target:<16} -> {predicted}")


def _inject_under_load(options: ChaosOptions, schedule: Schedule, tree: ChaosTree, client: Client,
                       report: ChaosReport, console: Console) -> None:
    status = client.status()
    workers = blast.TreeModel.from_status(status).workers()
    load_name = options.load if options.load != "auto" else (
        "components" if {"registry", "session", "queue", "pool"} & set(workers) else "echo")
    load = Load(tree.run_dir, ops_for(load_name, workers, status, schedule.targets), options.load_threads,
                options.load_rate)
    started = time.monotonic()
    with EventWatch(tree.run_dir) as watch:
        mark = watch.mark()
        run = Injections(options, tree, client, watch)
        load.start()
        try:
            follow_schedule(run, schedule, len(workers), options.progress, console)
        except KeyboardInterrupt:
            report.interrupted = True
            console.print("chaos: interrupted: no more faults; healing the tree")
        finally:  # whatever happened: the faults in flight judged, the tree healed, the load stopped
            try:
                report.outcomes = run.finish()
                report.healed = run.injector.heal(workers)
                report.steady_after = wait_steady(client, HEAL_S)
            finally:
                report.load = load.stop()
        report.supervisors = {sup: dict(c) for sup, c in watch.counts(mark).items()}
    report.survived = tree.running() and report.steady_after is not None and not any(
        "root supervisor has exited" in p for p in report.steady_after.problems)
    report.retry_figures = _load_retry_figures(client)
    report.elapsed = time.monotonic() - started
    report.gates = options.gates.judge(report)


def follow_schedule(run: Injections, schedule: Schedule, n_workers: int, show: bool, console: Console) -> None:
    t0 = time.monotonic()
    with Progress(TextColumn("chaos"), BarColumn(), TextColumn("{task.fields[note]}"), TimeRemainingColumn(),
                  console=console, disable=not show, transient=True) as progress:
        task = progress.add_task("faults", total=schedule.duration, note="")
        for d in schedule.decisions:
            while (pause := t0 + d.at - time.monotonic()) > 0:
                time.sleep(min(pause, 0.25))  # the schedule's clock: each decision has its time
                progress.update(task, completed=min(schedule.duration, time.monotonic() - t0))
            try:
                run.one(d, n_workers)
            except ClientError as exc:
                run.skip(d, f"node: {exc}")
            except Exception as exc:  # noqa: BLE001 - a bug in the prediction: reported, the run goes on
                run.skip(d, f"chaos could not prepare this fault: {_where(exc)}")
            injected = len(run.futures)
            progress.update(task, completed=min(schedule.duration, time.monotonic() - t0),
                            note=f"{injected} injected, {len(run.outcomes)} skipped")
        while (pause := t0 + schedule.duration - time.monotonic()) > 0:
            time.sleep(min(pause, 0.25))
            progress.update(task, completed=min(schedule.duration, time.monotonic() - t0))


def _load_retry_figures(client: Client) -> dict[str, int]:
    """The node's per-pair retry figures, summed over the load's callers."""
    try:
        pairs = client.status().get("retries", {}).get("pairs", [])
    except ClientError:
        return {}
    total: dict[str, int] = {}
    for p in pairs:
        if str(p.get("caller", "")).startswith("chaos-load-"):
            for k, v in p.items():
                if isinstance(v, int):
                    total[k] = total.get(k, 0) + v
    return total

