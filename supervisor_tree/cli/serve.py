"""Long-running companions of a tree: `metrics` (Prometheus), `dashboard` (web), `console` (REPL)."""

from __future__ import annotations

import time
from pathlib import Path

import click

from supervisor_tree.cli.common import EXIT_NO_NODE, EXIT_USAGE, Ctx, config_option, fail, run_client, run_dir_option
from supervisor_tree.wire import rundir


def _live_run_dir(run_dir: str | None, config: str | None) -> Path:
    directory = Ctx(run_dir, config).run_dir
    if not rundir.is_locked(directory):
        fail(f"no node is running in {directory} (start one with `supervise start`, or pass --run-dir)", EXIT_NO_NODE)
    return directory


@click.command(short_help="Serve Prometheus metrics of the tree.")
@click.option("--port", type=click.IntRange(0, 65535), default=9464, show_default=True, help="127.0.0.1 port (0: any free port).")
@click.option("--max-workers", type=click.IntRange(min=1), default=500, show_default=True, help="Per-worker series cap; the rest sum into worker=\"_other\".")
@click.option("--duration", type=float, default=None, hidden=True)
@click.option("--parent-pid", type=int, default=None, hidden=True)  # started by `supervise start`: die with it
@run_dir_option
@config_option
def metrics(port: int, max_workers: int, duration: float | None, parent_pid: int | None, run_dir: str | None,
            config: str | None) -> None:
    """Serve Prometheus metrics of a running tree on 127.0.0.1:PORT/metrics until Ctrl-C or the node stops.

    (`supervise start --metrics-port PORT` or `[metrics] port` serves them from the node's own process.)
    """
    from supervisor_tree.observe.metrics import Exporter, die_with_parent

    if parent_pid is not None:
        die_with_parent(parent_pid)
    directory = _live_run_dir(run_dir, config)
    exporter = Exporter(directory, port, max_workers)
    try:
        bound = exporter.start()
    except OSError as exc:
        fail(str(exc), EXIT_USAGE)
    click.echo(f"metrics on http://127.0.0.1:{bound}/metrics (node in {directory}); Ctrl-C stops", err=True)
    end = None if duration is None else time.monotonic() + duration
    try:
        while rundir.is_locked(directory) and (end is None or time.monotonic() < end):
            time.sleep(0.5)  # nothing to wait on: the server runs in its thread; we watch the node's lock
    except KeyboardInterrupt:
        pass
    finally:
        exporter.close()


@click.command(short_help="Serve a live web page of the tree.")
@click.option("--port", type=click.IntRange(0, 65535), default=7420, show_default=True, help="127.0.0.1 port (0: any free port).")
@click.option("--interval", type=float, default=1.0, show_default=True, help="Seconds between samples of the tree.")
@click.option("--profiles-dir", type=click.Path(file_okay=False), default=None, help="Where the page's flame graphs go (default: the node's [profile].dir).")
@run_dir_option
@config_option
def dashboard(port: int, interval: float, profiles_dir: str | None, run_dir: str | None, config: str | None) -> None:
    """A web page on 127.0.0.1: the tree live, workers' figures with sparklines, events, kill and profile buttons."""
    import asyncio

    from aiohttp import web

    from supervisor_tree.observe.dashboard import Dashboard

    if interval <= 0:
        fail(f"--interval must be > 0 seconds; got {interval:g}", EXIT_USAGE)
    directory = _live_run_dir(run_dir, config)
    board = Dashboard(directory, interval, Path(profiles_dir).resolve() if profiles_dir else None)

    async def serve() -> None:
        runner = web.AppRunner(board.app(), handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            fail(f"dashboard: cannot listen on 127.0.0.1:{port} ({exc.strerror}); choose another --port", EXIT_USAGE)
        bound = runner.addresses[0][1]
        click.echo(f"dashboard on http://127.0.0.1:{bound}/ (node in {directory}); Ctrl-C stops", err=True)
        try:
            while rundir.is_locked(directory):
                await asyncio.sleep(0.5)  # the node's lock is the only sign it stopped
            click.echo("the node stopped; dashboard closing", err=True)
        finally:
            await runner.cleanup()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


@click.command(short_help="Open a Python REPL attached to the tree.")
@click.option("--plain", is_flag=True, help="The standard library's REPL even when IPython is installed.")
@run_dir_option
@config_option
def console(plain: bool, run_dir: str | None, config: str | None) -> None:
    """A Python REPL attached to the running tree: tree(), info(id), call, cast, kill, profile(id), top()."""
    from supervisor_tree.observe.console import interact

    with Ctx(run_dir, config).client() as c:
        run_client(lambda: interact(c, plain))


COMMANDS = [metrics, dashboard, console]
