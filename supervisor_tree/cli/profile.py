"""`supervise profile`: flame graphs of a running tree's workers, their code untouched.

Owns the command line only: parsing, one call into ``remote`` (or ``capture.diff``),
printing, and mapping errors to the CLI's exit codes (0 ok; 1 the capture failed,
the worker died, a worker is unknown; 2 bad usage; 3 no node; 4 timeout).

    supervise profile WORKER [--engine py-spy|yappi] [--duration S] [--rate HZ]
                             [--format svg|speedscope|collapsed|pstats|callgrind] [--output PATH]
    supervise profile --all [...]
    supervise profile diff A B [--output PATH]

The profiling package is imported inside the command, so that other commands start
without loading it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import fields
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from supervisor_tree.cli.common import EXIT_FAILED, EXIT_NO_NODE, EXIT_TIMEOUT, EXIT_USAGE, Ctx, fail

if TYPE_CHECKING:
    from rich.console import Console

    from supervisor_tree.profiling.collapsed import Profile, ProfileMeta

T = TypeVar("T")
EXIT_INTERRUPTED = 130  # as a shell reports SIGINT
FORMATS = ("svg", "speedscope", "collapsed", "pstats", "callgrind")


def _fail(message: str, code: int) -> NoReturn:

    fail(message, code)


def _console() -> Console:
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=max(console.width, 120))


def _guard(fn: Callable[[], T]) -> T:
    """Run ``fn``; one line and the CLI's exit code for whatever goes wrong."""
    from supervisor_tree.client import CallTimeout, ClientError, NodeNotRunning
    from supervisor_tree.profiling.errors import ProfilerError

    try:
        return fn()
    except NodeNotRunning as exc:
        _fail(str(exc), EXIT_NO_NODE)
    except CallTimeout as exc:
        _fail(str(exc), EXIT_TIMEOUT)
    except (ClientError, ProfilerError) as exc:  # WorkerExited too: its message names the partial file
        _fail(str(exc), EXIT_FAILED)
    except KeyboardInterrupt:  # the engines have stopped py-spy / yappi on the way out
        _fail("interrupted; the capture was stopped", EXIT_INTERRUPTED)


def meta_json(meta: ProfileMeta) -> dict[str, object]:
    out: dict[str, object] = {}
    for f in fields(meta):
        value = getattr(meta, f.name)
        out[f.name] = value.value if hasattr(value, "value") else (dict(value) if f.name == "extra" else value)
    return out


def _top_json(profile: Profile, n: int) -> list[dict[str, object]]:
    from supervisor_tree.profiling.collapsed import top_frames

    return [{"frame": f, "self_pct": round(s, 2), "total_pct": round(t, 2)} for f, s, t in top_frames(profile, n)]


def _show(console: Console, path: str, profile: Profile, top: int) -> None:
    from supervisor_tree.profiling.report import hot_frames_table

    console.print(path, highlight=False, soft_wrap=True)
    console.print(profile.meta.describe(), highlight=False, soft_wrap=True)
    if top > 0:
        console.print(hot_frames_table(profile, top))


@click.command("profile", context_settings={"help_option_names": ["-h", "--help"]}, short_help="Write a flame graph of a worker.")
@click.argument("targets", nargs=-1, metavar="WORKER | --all | diff A B")
@click.option("--engine", type=click.Choice(["py-spy", "yappi"]), default="py-spy", show_default=True,
              help="py-spy samples from outside by pid; yappi traces calls inside the worker.")
@click.option("--duration", type=float, default=10.0, show_default=True, help="Seconds to profile.")
@click.option("--rate", type=int, default=100, show_default=True, help="py-spy: samples per second.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="svg", show_default=True,
              help="pstats and callgrind: yappi only.")
@click.option("--output", "-o", default=None,
              help="A file, or a directory (--all: a directory). Default: the node's [profile].dir, else ./profiles.")
@click.option("--all", "all_workers", is_flag=True, help="Every running worker at once, plus a merged graph.")
@click.option("--clock", type=click.Choice(["cpu", "wall"]), default=None,
              help="yappi's clock (default cpu: the heartbeat thread's waits stay out).")
@click.option("--native", is_flag=True, help="py-spy: include native (C) frames.")
@click.option("--idle", is_flag=True, help="py-spy: include idle (waiting) stacks.")
@click.option("--gil", is_flag=True, help="py-spy: only stacks holding the GIL.")
@click.option("--top", type=click.IntRange(min=0), default=10, show_default=True, help="Hot frames to print.")
@click.option("--run-dir", "run_dir", default=None, help="The node's run directory (default: per user and config).")
@click.option("-c", "--config", "config", default=None, help="Locate the node started with this config.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def profile_command(targets: tuple[str, ...], engine: str, duration: float, rate: int, fmt: str,
                    output: str | None, all_workers: bool, clock: str | None, native: bool, idle: bool,
                    gil: bool, top: int, run_dir: str | None, config: str | None, as_json: bool) -> None:
    """Profile WORKER of the running tree (no restart, no code change): writes a flame graph
    and prints its path and hot frames.  `--all`: every worker, plus one merged graph with
    each worker as a root frame.  `diff A B`: a differential flame graph of two captures
    (red: hotter in B, blue: cooler)."""

    if targets[:1] == ("diff",) and len(targets) == 3 and not all_workers:
        _diff(targets[1], targets[2], output, top, run_dir, config, as_json)
        return
    if targets[:1] == ("diff",) and len(targets) != 1:
        _fail("usage: supervise profile diff A B (two .svg or .collapsed files from supervise profile)", EXIT_USAGE)
    if all_workers and targets:
        _fail(f"--all profiles every worker; drop {' '.join(targets)!r} (or drop --all)", EXIT_USAGE)
    if not all_workers and len(targets) != 1:
        _fail("usage: supervise profile WORKER [options] | --all [options] | diff A B", EXIT_USAGE)

    from supervisor_tree.profiling import remote
    from supervisor_tree.profiling.errors import ProfilerError

    flags = {"native": native, "idle": idle, "gil": gil}
    kwargs: dict[str, Any] = dict(engine=engine, duration=duration, rate=rate, fmt=fmt, clock=clock,
                                  **{k: v for k, v in flags.items() if v})
    try:
        remote.capture_options(**kwargs)  # every usage problem, before touching a process
    except ProfilerError as exc:
        _fail(str(exc), EXIT_USAGE)

    with Ctx(run_dir, config).client() as client:
        what = "every worker" if all_workers else f"worker {targets[0]}"
        click.echo(f"profiling {what} with {engine} for {duration:g} s ...", err=True)
        if all_workers:
            _all(client, kwargs, output, top, as_json)
        else:
            result = _guard(lambda: remote.profile(client, targets[0], output=output, **kwargs))
            if as_json:
                click.echo(json.dumps({"path": result.path, "meta": meta_json(result.profile.meta),
                                       "top": _top_json(result.profile, top)}))
            else:
                _show(_console(), result.path, result.profile, top)


def _all(client: Any, kwargs: dict[str, Any], output: str | None, top: int, as_json: bool) -> None:
    from supervisor_tree.profiling import remote
    from supervisor_tree.profiling.report import errors_table

    result = _guard(lambda: remote.profile_all(client, output=output, **kwargs))
    merged = result.profiles.merged
    if as_json:
        click.echo(json.dumps({"paths": result.paths, "merged": result.merged_path, "errors": result.errors,
                               "meta": meta_json(merged.meta), "top": _top_json(merged, top)}))
    else:
        console = _console()
        width = max(len(w) for w in [*result.paths, "merged"])
        for worker_id, path in result.paths.items():
            console.print(f"{worker_id:<{width}}  {path}", highlight=False, soft_wrap=True)
        console.print(f"{'merged':<{width}}  {result.merged_path}", highlight=False, soft_wrap=True)
        console.print(merged.meta.describe(), highlight=False, soft_wrap=True)
        if top > 0:
            from supervisor_tree.profiling.report import hot_frames_table

            console.print(hot_frames_table(merged, top))
        if result.errors:
            from rich.console import Console

            Console(stderr=True, width=console.width).print(errors_table(result.errors))
    if result.errors:
        sys.exit(EXIT_FAILED)


def _diff(path_a: str, path_b: str, output: str | None, top: int, run_dir: str | None,
          config: str | None, as_json: bool) -> None:
    from rich.table import Table

    from supervisor_tree.client import Client, find_run_dir
    from supervisor_tree.profiling import remote
    from supervisor_tree.wire import rundir

    profiles_dir = remote.DEFAULT_PROFILES_DIR
    if output is None:  # the node's [profile].dir when one runs; a diff needs no node
        directory = find_run_dir(run_dir, config)
        if rundir.is_locked(directory):
            with Client(directory, timeout=5.0) as client:
                profiles_dir = remote.profiles_dir_of(client)
    path, before, after = _guard(lambda: remote.diff(path_a, path_b, output, profiles_dir))
    changes = remote.share_changes(before, after, top)
    if as_json:
        click.echo(json.dumps({"path": path, "changes": [
            {"frame": f, "before_pct": round(b, 2), "after_pct": round(a, 2)} for f, b, a in changes]}))
        return
    console = _console()
    console.print(path, highlight=False, soft_wrap=True)
    console.print(f"before: {before.meta.describe()}", highlight=False, soft_wrap=True)
    console.print(f"after:  {after.meta.describe()}", highlight=False, soft_wrap=True)
    if top > 0 and changes:
        table = Table(box=None, header_style="bold", pad_edge=False)
        for col in ("before %", "after %", "change"):
            table.add_column(col, justify="right")
        table.add_column("frame", overflow="fold")
        for frame, b, a in changes:
            table.add_row(f"{b:.1f}", f"{a:.1f}", f"{a - b:+.1f}", frame)
        console.print(table)
