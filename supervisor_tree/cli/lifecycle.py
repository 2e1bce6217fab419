"""The node's life: `check`, `start` (foreground, --detach, --heart), `stop`, `systemd-unit`."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import click

from supervisor_tree.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_TIMEOUT,
    Ctx,
    config_option,
    fail,
    load_spec,
    run_client,
    run_dir_option,
)
from supervisor_tree.cli.endings import detach_failure
from supervisor_tree.node.heart import STAND_DOWN, HeartPolicy, heart_pid
from supervisor_tree.wire import rundir

_HEART = HeartPolicy()  # the defaults


@click.command()
@click.argument("config", required=False)
def check(config: str | None) -> None:
    """Validate CONFIG without starting anything (exit 2 on any problem)."""
    from supervisor_tree.config.describe import describe

    spec = load_spec(config)
    click.echo(describe(spec))


@click.command()
@click.argument("config", required=False)
@click.option("--detach", is_flag=True, help="Return once the tree is up (exit 0) or failed to start (exit 1).")
@click.option("--heart", is_flag=True, help="Run a watcher (OTP's heart) that restarts the node when it dies abnormally.")
@click.option("--heart-max-restarts", type=click.IntRange(min=0), default=_HEART.max_restarts, show_default=True,
              help="With --heart: give up after more restarts than this within --heart-period.")
@click.option("--heart-period", type=click.FloatRange(min=1.0), default=_HEART.period, show_default=True,
              help="With --heart: the window (seconds) the restarts are counted in.")
@click.option("--timeout", default=120.0, show_default=True, help="With --detach: how long to wait for the tree.")
@click.option("--notify-fd", type=int, default=None, hidden=True)
@run_dir_option
def start(config: str | None, detach: bool, heart: bool, heart_max_restarts: int, heart_period: float, timeout: float,
          notify_fd: int | None, run_dir: str | None) -> None:
    """Start the tree of CONFIG (no CONFIG: the built-in default tree)."""
    spec = load_spec(config)
    directory = Path(run_dir or os.environ.get("SUPERVISE_RUN_DIR") or rundir.default_run_dir(config))
    if rundir.is_locked(directory):
        fail(f"a node is already running in {directory} (`supervise stop --run-dir {directory}` first)", EXIT_FAILED)
    if heart_pid(directory) not in (None, os.getppid()):  # a node the heart started passes
        fail(f"a heart is already running in {directory} (`supervise stop --run-dir {directory}` first)", EXIT_FAILED)
    policy = HeartPolicy(max_restarts=heart_max_restarts, period=heart_period)
    if detach:
        extra = ["--heart", "--heart-max-restarts", str(heart_max_restarts), "--heart-period", str(heart_period)]
        sys.exit(_start_detached(config, directory, timeout, extra if heart else []))
    if heart:
        sys.exit(_run_heart(spec, config, directory, notify_fd, policy))
    _run_foreground(spec, directory, notify_fd)


def _tell(notify_fd: int | None, ok: bool, reason: str) -> None:
    """Say how the start went to the `start --detach` that waits on `notify_fd` (once)."""
    if notify_fd is not None:
        os.write(notify_fd, ("started\n" if ok else f"failed: {reason}\n").encode())
        os.close(notify_fd)


def _run_foreground(spec: Any, directory: Path, notify_fd: int | None) -> NoReturn:
    from supervisor_tree.node.launchers.osproc import set_title
    from supervisor_tree.node.node import Node
    from supervisor_tree.spec import ExitKind

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    set_title(spec.name, "node")

    def on_started(ok: bool, reason: str) -> None:
        if ok:
            logging.getLogger("supervisor_tree").info(
                "tree %r started; run dir %s; `supervise status --run-dir %s`; Ctrl-C stops it", spec.name, directory, directory
            )
        _tell(notify_fd, ok, reason)

    node = Node(spec, directory, on_started=on_started)
    try:
        reason = node.run()
    except RuntimeError as exc:
        fail(str(exc))
    if node.ended_on_request and reason.kind in (ExitKind.SHUTDOWN, ExitKind.NORMAL):
        logging.getLogger("supervisor_tree").info("node stopped: %s", node.ending)
        sys.exit(EXIT_OK)
    fail(f"the node stopped: {node.ending or reason}", EXIT_FAILED)


def _run_heart(spec: Any, config: str | None, directory: Path, notify_fd: int | None, policy: HeartPolicy) -> int:
    from supervisor_tree.config.load import load_config
    from supervisor_tree.node.heart import Heart
    from supervisor_tree.node.launchers.osproc import set_title

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    set_title(spec.name, "heart")
    rundir.ensure(directory)
    path = os.path.abspath(config) if config else None
    argv = [sys.executable, "-m", "supervisor_tree.cli", "start", "--run-dir", str(directory), *([path] if path else [])]
    heart = Heart(argv, directory, config=path, policy=policy, check_config=load_config)
    return heart.run(on_first_start=lambda ok, reason: _tell(notify_fd, ok, reason))


def _start_detached(config: str | None, directory: Path, timeout: float, extra: list[str]) -> int:
    rundir.ensure(directory)
    read_fd, write_fd = os.pipe()
    cmd = [sys.executable, "-m", "supervisor_tree.cli", "start", "--run-dir", str(directory), "--notify-fd", str(write_fd),
           *extra]
    if config:
        cmd.insert(4, os.path.abspath(config))
    log_path = directory / "node.log"
    log_start = log_path.stat().st_size if log_path.exists() else 0
    log = open(log_path, "ab")
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, pass_fds=(write_fd,), start_new_session=True)
    os.close(write_fd)
    log.close()
    deadline = time.monotonic() + timeout
    with os.fdopen(read_fd) as pipe:
        import select

        while time.monotonic() < deadline:
            ready, _, _ = select.select([pipe], [], [], 0.2)
            if ready:
                line = pipe.readline().strip()
                if line == "started":
                    who = "heart" if extra else "pid"
                    click.echo(f"started ({who} {proc.pid}); run dir {directory}")
                    return EXIT_OK
                proc.wait(timeout=30)
                click.echo(detach_failure(line.removeprefix("failed: "), log_path, log_start), err=True)
                return EXIT_FAILED
        click.echo(f"supervise: the tree did not start within {timeout:g}s; see {log_path}", err=True)
        return EXIT_TIMEOUT


@click.command()
@click.option("--timeout", default=600.0, show_default=True, help="Seconds to wait for the tree to stop.")
@run_dir_option
@config_option
def stop(timeout: float, run_dir: str | None, config: str | None) -> None:
    """Stop the tree gracefully: reverse start order, honouring shutdown timeouts (and its heart, if any)."""
    ctx = Ctx(run_dir, config)
    heart = heart_pid(ctx.run_dir)
    if heart is not None:
        os.kill(heart, STAND_DOWN)  # no more restarts; it exits with the node we stop below
        if not rundir.is_locked(ctx.run_dir):
            _wait(lambda: heart_pid(ctx.run_dir) is None, 10.0)
            click.echo("stopped (the heart was waiting to restart the node)")
            return
    with ctx.client() as c:
        value = run_client(lambda: c.stop(timeout))
    _wait(lambda: not rundir.is_locked(ctx.run_dir), 10.0)  # the node releases its lock a moment after answering
    if heart is not None:
        _wait(lambda: heart_pid(ctx.run_dir) is None, 10.0)
    click.echo(f"stopped ({value.get('reason')})" + (" with its heart" if heart is not None else ""))


def _wait(done: Any, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not done() and time.monotonic() < deadline:
        time.sleep(0.02)  # another process lets go of a lock: nothing to wait on but time


@click.command("systemd-unit")
@click.argument("config")
@click.option("--user", default=None, help="The unit's User= (default: none: root for a system unit).")
@click.option("--watchdog-sec", type=click.IntRange(min=1), default=30, show_default=True,
              help="WatchdogSec=: systemd restarts a node whose loop stops answering for this long.")
@run_dir_option
def systemd_unit(config: str, user: str | None, watchdog_sec: int, run_dir: str | None) -> None:
    """Print a systemd unit (Type=notify, watchdog, Restart=on-failure) that runs the tree of CONFIG.

    `supervise systemd-unit app.toml > /etc/systemd/system/app.service`, then
    `systemctl daemon-reload && systemctl enable --now app`.
    """
    from supervisor_tree.cli.endings import stop_timeout
    from supervisor_tree.node.systemd import unit_file

    spec = load_spec(config)
    path = os.path.abspath(config)
    runtime = None if run_dir else f"supervise-{spec.name}"
    directory = run_dir or f"/run/{runtime}"
    click.echo(unit_file(name=spec.name, exec_start=[sys.executable, "-m", "supervisor_tree.cli", "start", path,
                                                     "--run-dir", directory],
                         working_directory=os.path.dirname(path), watchdog_sec=watchdog_sec,
                         stop_timeout_sec=stop_timeout(spec.tree), user=user, source=path,
                         runtime_directory=runtime), nl=False)


COMMANDS = [check, start, stop, systemd_unit]
