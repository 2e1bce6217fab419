"""Watching a running tree: `top`, `health`, `queues`, `memwatch` (observe/ does the work)."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from supervisor_tree.cli.common import (
    EXIT_FAILED,
    EXIT_USAGE,
    Ctx,
    config_option,
    emit,
    fail,
    json_option,
    run_client,
    run_dir_option,
)
from supervisor_tree.client import Client
from supervisor_tree.observe import health as health_mod
from supervisor_tree.observe import memwatch as mw
from supervisor_tree.observe.queues import deepest
from supervisor_tree.observe.snapshot import Sampler
from supervisor_tree.observe.top import SORTS, fmt_bytes, run_live, table


@contextlib.contextmanager
def _sampler(run_dir: str | None, config: str | None) -> Iterator[tuple[Client, Sampler]]:
    with Ctx(run_dir, config).client() as c:
        yield c, Sampler(c)


def _positive(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and value <= 0:
        raise click.BadParameter(f"must be a number of seconds > 0; got {value:g}")
    return value


# ---------------------------------------------------------------------- top


@click.command(short_help="Show workers by CPU, memory and load.")
@click.option("--sort", type=click.Choice(sorted(SORTS)), default="cpu", show_default=True, help="Order of the rows (keys switch it live).")
@click.option("--limit", "-n", type=click.IntRange(min=1), default=None, help="Show this many rows.")
@click.option("--interval", default=1.0, show_default=True, callback=_positive, help="Seconds between refreshes.")
@click.option("--once", is_flag=True, help="Two samples one interval apart, print, exit (CPU and rates need two).")
@click.option("--duration", type=float, default=None, callback=_positive, hidden=True)
@run_dir_option
@config_option
@json_option
def top(sort: str, limit: int | None, interval: float, once: bool, duration: float | None,
        run_dir: str | None, config: str | None, as_json: bool) -> None:
    """Workers by CPU, memory, mailbox depth, call rate, p99, restarts; live (q quits) or --once [--json]."""
    with _sampler(run_dir, config) as (_, sampler):
        if not once and not as_json:
            run_client(lambda: run_live(sampler, sort, limit, interval, duration=duration))
            return
        run_client(sampler.sample)
        time.sleep(interval)  # CPU % and call rates are over this interval
        snap = run_client(sampler.sample)
    if as_json:
        from supervisor_tree.observe.top import sort_rows

        rows = sort_rows(snap.workers, sort)[:limit] if limit else sort_rows(snap.workers, sort)
        emit(snap.as_json() | {"sort": sort, "workers": [w.as_json() for w in rows]}, True)
        return
    Console(width=max(160, Console().width)).print(table(snap, sort, limit))


# ---------------------------------------------------------------------- health


@click.command(short_help="Check the tree's health (exit 0, 1, 2).")
@click.option("--gates", default=None, help="Override gates: p99_ms=5,mailbox=1000,slope=1 (MiB/min).")
@click.option("--window", default=5.0, show_default=True, help="Seconds of RSS samples for the memory slope (0: skip it).")
@run_dir_option
@config_option
@json_option
def health(gates: str | None, window: float, run_dir: str | None, config: str | None, as_json: bool) -> None:
    """Exit 0 ok, 1 warn, 2 critical: children running, none restarting, p99, mailboxes, memory slope."""
    try:
        parsed = health_mod.Gates.parse(gates)
    except health_mod.GateError as exc:
        fail(str(exc), EXIT_USAGE)
    if window < 0:
        fail(f"--window must be >= 0 seconds; got {window:g}", EXIT_USAGE)
    directory = Ctx(run_dir, config).run_dir
    from supervisor_tree.wire import rundir

    if not rundir.is_locked(directory):  # monitoring convention: no node is critical
        if as_json:
            emit({"status": "critical", "exit_code": 2, "checks": [{"level": "critical", "check": "running", "subject": "tree", "detail": f"no node is running in {directory}"}]}, True)
        else:
            click.echo(f"critical running   tree: no node is running in {directory}")
        sys.exit(2)
    with _sampler(run_dir, config) as (_, sampler):
        report = run_client(lambda: health_mod.check(sampler, parsed, window))
    if as_json:
        emit(report.as_json(), True)
    else:
        for c in report.checks:
            click.echo(c.line())
        click.echo(f"{report.level}: {report.workers} workers, {len(report.problems())} problem(s)")
    sys.exit(int(report.level))


# ---------------------------------------------------------------------- queues


@click.command(short_help="Show the deepest mailboxes and queues.")
@click.option("--top", "top_n", type=click.IntRange(min=1), default=10, show_default=True, help="How many queues.")
@run_dir_option
@config_option
@json_option
def queues(top_n: int, run_dir: str | None, config: str | None, as_json: bool) -> None:
    """The deepest mailboxes and queue components: depth, limit, fill, overflow policy, what it lost, high water.

    LOST: messages a mailbox_limit refused (dropped or rejected), or puts a full queue refused.
    HIGH: a queue's high-water mark; a mailbox's largest batch since the last heartbeat.
    """
    with _sampler(run_dir, config) as (_, sampler):
        rows = deepest(run_client(sampler.sample), top_n)
    if as_json:
        emit([r.as_json() for r in rows], True)
        return
    t = Table(title=f"deepest {len(rows)} queues", title_justify="left")
    for col in ("WORKER", "KIND", "DEPTH", "LIMIT", "FILL", "POLICY", "LOST", "HIGH"):
        t.add_column(col, justify="left" if col in ("WORKER", "KIND", "POLICY") else "right")
    for r in rows:
        t.add_row(r.worker, r.kind, str(r.depth), str(r.limit or "-"), "-" if r.fill is None else f"{r.fill:.0%}",
                  r.policy or "-", str(r.lost), "-" if r.high_water is None else str(r.high_water))
    Console(width=max(120, Console().width)).print(t)


# ---------------------------------------------------------------------- memwatch


@click.command(short_help="Watch each worker's memory for leaks.")
@click.option("--interval", default=5.0, show_default=True, callback=_positive, help="Seconds between samples.")
@click.option("--duration", type=float, default=None, callback=_positive, help="Stop after this many seconds (default: Ctrl-C).")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, writable=True), default=None, help="Write every sample: time, elapsed_s, worker, generation, pid, rss_mib.")
@click.option("--gate", default=1.0, show_default=True, help="Flag slopes over this many MiB/min.")
@click.option("--snapshot", "snapshot_of", default=None, metavar="WORKER", help="Instead: tracemalloc's top allocation sites of WORKER over --duration (default 10 s).")
@click.option("--top", "top_n", type=click.IntRange(min=1), default=10, show_default=True, help="With --snapshot: how many sites.")
@run_dir_option
@config_option
@json_option
def memwatch(interval: float, duration: float | None, csv_path: str | None, gate: float, snapshot_of: str | None,
             top_n: int, run_dir: str | None, config: str | None, as_json: bool) -> None:
    """RSS per worker over time, a least-squares slope each (a restart starts a new series); exit 1 if one passes --gate."""
    if snapshot_of:
        with Ctx(run_dir, config).client() as c:
            value = run_client(lambda: mw.allocation_sites(c, snapshot_of, duration or 10.0, top_n))
        _print_sites(snapshot_of, value, as_json)
        return
    watch = mw.Watch()
    sink_file = open(csv_path, "w", newline="") if csv_path else None  # closed in the finally below
    sink = mw.CsvSink(sink_file) if sink_file else None
    end = None if duration is None else time.monotonic() + duration
    try:
        with _sampler(run_dir, config) as (_, sampler):
            while True:
                snap = run_client(sampler.sample)
                added = watch.add(snap)
                if sink is not None:
                    sink.write(snap.at, added)
                if not as_json:
                    click.echo(_progress_line(snap.at, watch, gate))
                if end is not None and time.monotonic() + interval > end + 1e-3:
                    break
                time.sleep(interval)  # the sampling period
    except KeyboardInterrupt:
        pass
    finally:
        if sink_file is not None:
            sink_file.close()
    flagged = _summary(watch, gate, as_json)
    sys.exit(EXIT_FAILED if flagged else 0)


def _progress_line(at: float, watch: mw.Watch, gate: float) -> str:
    current = watch.current()
    per, tree = mw.slopes_of(current)
    total = sum(s.points[-1][1] for s in current if s.points)
    over = [f"{s.worker} {v:+.2f}" for s, v in per if mw.over_gate(v, s.span_s, gate)]
    slope = "-" if tree is None else f"{tree:+.2f} MiB/min"
    return (f"{time.strftime('%H:%M:%S', time.localtime(at))}  {len(current)} workers  {fmt_bytes(total)}  tree slope {slope}"
            + (f"  over {gate:g} MiB/min: {', '.join(over)}" if over else ""))


def _summary(watch: mw.Watch, gate: float, as_json: bool) -> list[str]:
    per, tree = mw.slopes_of(watch.current())
    flagged = [s.worker for s, v in per if mw.over_gate(v, s.span_s, gate)]
    if as_json:
        emit({"gate_mib_per_min": gate, "tree_slope_mib_per_min": tree, "flagged": flagged,
              "workers": [{"worker": s.worker, "generation": s.generation, "pid": s.pid, "samples": len(s.points),
                           "rss_mib": s.last_mib, "slope_mib_per_min": v, "restarts_seen": watch.restarts(s.worker)}
                          for s, v in per]}, True)
        return flagged
    t = Table(title=f"RSS slopes (least squares; gate {gate:g} MiB/min; tree {'-' if tree is None else f'{tree:+.3f}'} MiB/min)",
              title_justify="left")
    for col in ("WORKER", "GEN", "PID", "SAMPLES", "RSS", "SLOPE MiB/min", ""):
        t.add_column(col, justify="left" if col in ("WORKER", "") else "right")
    for s, v in sorted(per, key=lambda p: -(p[1] or 0.0)):
        flag = "[red]over the gate[/]" if mw.over_gate(v, s.span_s, gate) else ("" if v is not None else "[dim]too few samples[/]")
        t.add_row(s.worker, str(s.generation), str(s.pid), str(len(s.points)), fmt_bytes(s.points[-1][1] if s.points else None),
                  "-" if v is None else f"{v:+.3f}", flag)
    Console(width=max(110, Console().width)).print(t)
    click.echo(f"flagged: {', '.join(flagged)}" if flagged else f"no worker grows faster than {gate:g} MiB/min")
    return flagged


def _print_sites(worker: str, value: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit(value | {"worker": worker}, True)
        return
    click.echo(f"{worker}: top allocation sites by growth (traced now {fmt_bytes(value.get('traced'))}, peak {fmt_bytes(value.get('peak'))})")
    for s in value.get("sites", []):
        click.echo(f"  {s['size_diff'] / 1024:+10.1f} KiB  {s['count_diff']:+7d} blocks  {s['site']}")


COMMANDS = [top, health, queues, memwatch]
