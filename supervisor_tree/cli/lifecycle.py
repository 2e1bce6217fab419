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
    EXIT_USAGE,
    SECONDS,
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


@click.command(short_help="Validate a config; start nothing.")
@click.argument("config", required=False)
def check(config: str | None) -> None:
    """Validate CONFIG without starting anything (exit 2 on any problem)."""
    from supervisor_tree.config.describe import describe

    spec = load_spec(config)
    click.echo(describe(spec))


@click.command(short_help="Start a tree (default: the built-in one).")
@click.argument("config", required=False)
@click.option("--detach", is_flag=True, help="Return once the tree is up (exit 0) or failed to start (exit 1).")
@click.option("--heart", is_flag=True, help="Run a watcher (OTP's heart) that restarts the node when it dies abnormally.")
@click.option("--heart-max-restarts", type=click.IntRange(min=0), default=_HEART.max_restarts, show_default=True,
              help="With --heart: give up after more restarts than this within --heart-period.")
@click.option("--heart-period", type=click.FloatRange(min=1.0), default=_HEART.period, show_default=True,
              help="With --heart: the window (seconds) the restarts are counted in.")
@click.option("--timeout", type=SECONDS, default=120.0, show_default=True, help="With --detach: how long to wait for the tree.")
@click.option("--notify-fd", type=int, default=None, hidden=True)
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=None,
              help="Serve Prometheus metrics on 127.0.0.1:PORT/metrics (overrides [metrics] port).")
@run_dir_option
def start(config: str | None, detach: bool, heart: bool, heart_max_restarts: int, heart_period: float, timeout: float,
          notify_fd: int | None, metrics_port: int | None, run_dir: str | None) -> None:
    """Start the tree of CONFIG (no CONFIG: the built-in default tree)."""
    spec = load_spec(config)
    directory = Path(run_dir or os.environ.get("SUPERVISE_RUN_DIR") or rundir.default_run_dir(config))
    if rundir.is_locked(directory):
        fail(f"a node is already running in {directory} (`supervise stop --run-dir {directory}` first)", EXIT_FAILED)
    if heart_pid(directory) not in (None, os.getppid()):  # a node the heart started passes
        fail(f"a heart is already running in {directory} (`supervise stop --run-dir {directory}` first)", EXIT_FAILED)
    port = metrics_port or (spec.extra.get("metrics") or {}).get("port")
    if port:
        _check_port_free(int(port))
    policy = HeartPolicy(max_restarts=heart_max_restarts, period=heart_period)
    passed_on = ["--metrics-port", str(metrics_port)] if metrics_port else []
    if detach:
        extra = ["--heart", "--heart-max-restarts", str(heart_max_restarts), "--heart-period", str(heart_period)]
        code = _start_detached(config, directory, timeout, (extra if heart else []) + passed_on)
        if code == EXIT_OK and port:
            if not _wait_listening(int(port), 15.0):
                fail(f"the tree started, but its metrics did not come up on 127.0.0.1:{port}; see {directory / 'node.log'}")
            click.echo(f"metrics on http://127.0.0.1:{port}/metrics")
        sys.exit(code)
    if heart:
        sys.exit(_run_heart(spec, config, directory, notify_fd, policy, passed_on))
    _run_foreground(spec, directory, notify_fd, port)


def _tell(notify_fd: int | None, ok: bool, reason: str) -> None:
    """Say how the start went to the `start --detach` that waits on `notify_fd` (once)."""
    if notify_fd is not None:
        os.write(notify_fd, ("started\n" if ok else f"failed: {reason}\n").encode())
        os.close(notify_fd)


def _check_port_free(port: int) -> None:
    """Fail before anything starts when the metrics port is taken (the exporter binds once the tree is up)."""
    import socket

    deadline = time.monotonic() + 2.0  # a node stopped a moment ago may still be letting its endpoint go
    while True:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the HTTP server will (scrapes leave TIME_WAITs)
            try:
                s.bind(("127.0.0.1", port))
                return
            except OSError as exc:
                if time.monotonic() > deadline:
                    fail(f"metrics: cannot listen on 127.0.0.1:{port} ({exc.strerror}); choose another --metrics-port "
                         f"or [metrics] port", EXIT_USAGE)
        time.sleep(0.1)  # nothing tells when a port is let go


def _wait_listening(port: int, timeout: float) -> bool:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
            return True
        except OSError:
            time.sleep(0.05)  # the companion is still starting: nothing to wait on but the port
    return False


def _spawn_metrics(spec: Any, directory: Path, port: int) -> subprocess.Popen[bytes]:
    """The Prometheus endpoint: `supervise metrics` beside the node, started once the tree is up.

    Its own process, so a scrape (psutil for every worker, the exposition text) costs the
    node one `status` request and never its loop's time; it dies with the node
    (PR_SET_PDEATHSIG) and leaves when the node's run directory is released.
    """
    max_workers = int((spec.extra.get("metrics") or {}).get("max_workers") or 500)
    cmd = [sys.executable, "-m", "supervisor_tree.cli", "metrics", "--port", str(port), "--max-workers", str(max_workers),
           "--run-dir", str(directory), "--parent-pid", str(os.getpid())]
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL)


def _run_foreground(spec: Any, directory: Path, notify_fd: int | None, metrics_port: int | None = None) -> NoReturn:
    from supervisor_tree.node.launchers.osproc import set_title
    from supervisor_tree.node.node import Node
    from supervisor_tree.spec import ExitKind

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    set_title(spec.name, "node")

    companions: list[subprocess.Popen[bytes]] = []

    def on_started(ok: bool, reason: str) -> None:
        if ok and metrics_port:
            companions.append(_spawn_metrics(spec, directory, metrics_port))
        if ok:
            logging.getLogger("supervisor_tree").info(
                "tree %r started; run dir %s; `supervise status --run-dir %s`; Ctrl-C stops it", spec.name, directory, directory
            )
        _tell(notify_fd, ok, reason)

    node = Node(spec, directory, on_started=on_started)
    if notify_fd is None:  # the foreground: every worker's lines on stdout too, prefixed and coloured per worker
        node.logs.echo_to(sys.stdout, ids=_child_ids(spec.tree))
    try:
        reason = node.run()
    except RuntimeError as exc:
        fail(str(exc))
    finally:
        for proc in companions:  # the node is gone: so is its metrics endpoint
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    if node.ended_on_request and reason.kind in (ExitKind.SHUTDOWN, ExitKind.NORMAL):
        logging.getLogger("supervisor_tree").info("node stopped: %s", node.ending)
        sys.exit(EXIT_OK)
    fail(f"the node stopped: {node.ending or reason}", EXIT_FAILED)


def _child_ids(tree: Any) -> list[str]:
    """Every child id of a supervisor spec, nested ones included."""
    return [i for c in tree.children for i in [c.id, *(_child_ids(c.supervisor) if c.supervisor else [])]]


def _run_heart(spec: Any, config: str | None, directory: Path, notify_fd: int | None, policy: HeartPolicy,
               passed_on: list[str]) -> int:
    from supervisor_tree.config.load import load_config
    from supervisor_tree.node.heart import Heart
    from supervisor_tree.node.launchers.osproc import set_title

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    set_title(spec.name, "heart")
    rundir.ensure(directory)
    path = os.path.abspath(config) if config else None
    argv = [sys.executable, "-m", "supervisor_tree.cli", "start", "--run-dir", str(directory), *passed_on,
            *([path] if path else [])]
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
    started_at = time.time()  # what the workers' own logs (RUN/logs) hold from this start on
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
                    who = "heart" if "--heart" in extra else "pid"
                    click.echo(f"started ({who} {proc.pid}); run dir {directory}")
                    return EXIT_OK
                proc.wait(timeout=30)
                click.echo(detach_failure(line.removeprefix("failed: "), log_path, log_start, started_at), err=True)
                return EXIT_FAILED
        click.echo(f"supervise: the tree did not start within {timeout:g}s; see {log_path}", err=True)
        return EXIT_TIMEOUT


@click.command(short_help="Stop the tree gracefully.")
@click.option("--timeout", type=SECONDS, default=600.0, show_default=True, help="Seconds to wait for the tree to stop.")
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


@click.command("systemd-unit", short_help="Print a systemd unit that runs the tree.")
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
