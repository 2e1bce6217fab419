"""`supervise chaos` (faults under load, healed, reported, gated) and `supervise tune-retry`.

    $ supervise chaos --duration 60 --rate 5 --faults kill,stop,exception --seed 7 --max-lost 0
    $ supervise chaos app.toml --targets 'db*' --faults kill --dry-run
    $ supervise chaos --replay chaos-7.jsonl

Exit codes: 0 the run passed (steady state regained, the tree survived, every blast
radius as predicted, every gate met); 1 it did not; 2 bad options or a bad log;
130 interrupted (Ctrl-C: the tree was healed and the report printed first).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console

from supervisor_tree.cli.common import EXIT_FAILED, EXIT_USAGE, fail, run_dir_option
from supervisor_tree.client import ClientError

__all__ = ["COMMANDS"]

EXIT_INTERRUPTED = 130


@click.command(short_help="Inject faults under load; check, heal and report.")
@click.argument("config", required=False)
@click.option("--duration", type=float, default=30.0, show_default=True, help="Seconds of fault injection.")
@click.option("--rate", type=float, default=1.0, show_default=True, help="Faults per second (Poisson arrivals).")
@click.option("--targets", default="*", show_default=True, help="Worker ids to hit: comma-separated globs.")
@click.option("--faults", default="kill", show_default=True,
              help="kill,term,stop,exception,slow[:ms],drop[:probability],slow_start[:s],fail_start[:n]")
@click.option("--seed", type=int, default=None, help="The schedule's seed (default: a random one, printed first).")
@click.option("--load", "load", default="auto", show_default=True,
              help="components | echo | none | module:function (auto: components when the tree has them, else echo).")
@click.option("--load-rate", type=float, default=400.0, show_default=True, help="Requests per second, all loaders.")
@click.option("--load-threads", type=int, default=4, show_default=True)
@click.option("--max-down", type=float, default=0.5, show_default=True, help="Most workers down at once, a fraction.")
@click.option("--allow-tree-death", is_flag=True,
              help="Inject faults predicted to take the root past its intensity (the tree stops).")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the report as JSON here.")
@click.option("--log", "log_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The decision log (JSON lines; default ./chaos-SEED.jsonl).")
@click.option("--dry-run", is_flag=True, help="Print the schedule and each predicted blast radius; inject nothing.")
@click.option("--replay", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Run the decisions of a log again (its seed, rate, duration, faults and targets).")
@click.option("--max-lost", type=int, default=None, help="Gate: at most this many lost requests.")
@click.option("--max-recovery-ms", type=float, default=None, help="Gate: recovery p99 at most this (ms).")
@click.option("--min-success", type=float, default=None, help="Gate: at least this percent of requests succeeded.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of tables.")
@run_dir_option
def chaos(config: str | None, duration: float, rate: float, targets: str, faults: str, seed: int | None, load: str,
          load_rate: float, load_threads: int, max_down: float, allow_tree_death: bool, report_path: Path | None, log_path: Path | None,
          dry_run: bool, replay: Path | None, max_lost: int | None, max_recovery_ms: float | None,
          min_success: float | None, as_json: bool, run_dir: str | None) -> None:
    """Inject faults into a running tree (CONFIG's, or the default tree) under load, heal it, and report.

    Starts the tree when none runs (and stops it at the end).  Checks the steady state
    before and after, predicts each fault's blast radius from the tree and OTP's rules
    and checks it, counts every request by sequence number, and exits 1 when a gate is
    missed, a blast radius differs, or the tree did not heal.
    """
    from supervisor_tree.chaos.load import LoadError
    from supervisor_tree.chaos.report import Gates
    from supervisor_tree.chaos.run import ChaosAborted, ChaosOptions, run_chaos
    from supervisor_tree.chaos.schedule import LogError
    from supervisor_tree.chaos.tree import TreeError

    for name, value, ok in (("--duration", duration, duration > 0), ("--rate", rate, rate >= 0),
                            ("--max-down", max_down, 0 < max_down <= 1), ("--load-rate", load_rate, load_rate > 0),
                            ("--load-threads", load_threads, 1 <= load_threads <= 64)):
        if not ok:
            fail(f"{name} {value:g} is out of range (duration > 0, rate >= 0, 0 < max-down <= 1, load-rate > 0, "
                 "1 <= load-threads <= 64)", EXIT_USAGE)
    options = ChaosOptions(config=config, run_dir=run_dir, duration=duration, rate=rate, targets=targets,
                           faults=faults, seed=seed, load=load, load_rate=load_rate, load_threads=load_threads,
                           max_down=max_down, allow_tree_death=allow_tree_death, report=report_path, log=log_path, dry_run=dry_run, replay=replay,
                           gates=Gates(max_lost, max_recovery_ms, min_success), progress=not as_json)
    console = Console(stderr=as_json, width=None if sys.stdout.isatty() else 132)
    try:
        report = run_chaos(options, console)
    except (ValueError, LogError, LoadError) as exc:
        fail(str(exc), EXIT_USAGE)
    except (ChaosAborted, TreeError, ClientError) as exc:
        fail(f"chaos: {exc}", EXIT_FAILED)
    if dry_run:
        return
    data = report.to_json()
    if report_path is not None:
        report_path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    if as_json:
        click.echo(json.dumps(data, default=str))
    else:
        report.render(console)
    if report.interrupted:
        sys.exit(EXIT_INTERRUPTED)
    if not report.passed:
        sys.exit(EXIT_FAILED)


@click.command("tune-retry", short_help="Sweep retry policies under faults; recommend one.")
@click.argument("worker")
@click.argument("config", required=False)
@click.option("--faults", default="kill", show_default=True, help="As chaos's --faults (e.g. kill,drop:0.05).")
@click.option("--fault-rate", type=float, default=1.0, show_default=True, help="Faults per second on WORKER.")
@click.option("--grid", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A TOML table of arrays: attempts, wait, initial, max, multiplier, jitter, deadline, "
                   "per_attempt_timeout, retry_on, budget (default: a 32-policy grid).")
@click.option("--budget", type=float, default=120.0, show_default=True, help="Seconds for the whole sweep.")
@click.option("--target", default="success>=99.9%,p99<=50ms", show_default=True,
              help="What a policy must meet: success, p50, p99, amplification, recovery with >= or <=.")
@click.option("--seed", type=int, default=0, show_default=True, help="The fault schedule's seed (the same for every policy).")
@click.option("--load", "load", default=None, help="components | echo | module:function (default: WORKER's own workload).")
@click.option("--load-rate", type=float, default=200.0, show_default=True)
@click.option("--apply", is_flag=True, help="Set the recommended policy on the running tree.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write every measured point as JSON here.")
@run_dir_option
def tune_retry(worker: str, config: str | None, faults: str, fault_rate: float, grid: Path | None, budget: float,
               target: str, seed: int, load: str | None, load_rate: float, apply: bool, report_path: Path | None,
               run_dir: str | None) -> None:
    """Sweep retry policies for WORKER under injected faults and recommend the cheapest that meets --target.

    Every policy is measured with real calls to the real worker while the same seeded
    faults hit it; prints the frontier, the TOML to paste, and (with --apply) sets it live.
    Exit 1 when no policy meets the target.
    """
    from supervisor_tree.chaos.tree import TreeError
    from supervisor_tree.chaos.tuning import TuneOptions, parse_target, render, tune

    try:
        parse_target(target)
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)
    if budget <= 0 or fault_rate < 0 or load_rate <= 0:
        fail("--budget and --load-rate must be > 0, --fault-rate >= 0", EXIT_USAGE)
    options = TuneOptions(worker=worker, config=config, run_dir=run_dir, faults=faults, fault_rate=fault_rate,
                          grid=grid, budget=budget, target=target, seed=seed, load=load, load_rate=load_rate, apply=apply)
    console = Console(width=None if sys.stdout.isatty() else 150)
    try:
        result = tune(options, console)
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)
    except (TreeError, ClientError) as exc:
        fail(f"tune-retry: {exc}", EXIT_FAILED)
    render(result, options, console)
    if report_path is not None:
        report_path.write_text(json.dumps({
            "worker": worker, "target": target, "sampled": result.sampled, "full_failure": result.full_failure,
            "recommended": result.recommended.fields if result.recommended else None, "toml": result.toml,
            "points": [{"policy": p.fields, **p.measures(), "requests": p.requests, "refused": p.refused,
                        "frontier": p in result.frontier} for p in result.points]}, indent=2) + "\n")
    if result.recommended is None:
        sys.exit(EXIT_FAILED)


COMMANDS = [chaos, tune_retry]
