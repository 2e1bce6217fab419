"""The node's life: `check`, `start` (foreground or --detach), `stop`."""

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
from supervisor_tree.wire import rundir


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
@click.option("--timeout", type=SECONDS, default=120.0, show_default=True, help="With --detach: how long to wait for the tree.")
@click.option("--notify-fd", type=int, default=None, hidden=True)
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=None,
              help="Serve Prometheus metrics on 127.0.0.1:PORT/metrics (overrides [metrics] port).")
@run_dir_option
def start(config: str | None, detach: bool, timeout: float, notify_fd: int | None, metrics_port: int | None,
          run_dir: str | None) -> None:
    """Start the tree of CONFIG (no CONFIG: the built-in default tree)."""
    spec = load_spec(config)
    directory = Path(run_dir or os.environ.get("SUPERVISE_RUN_DIR") or rundir.default_run_dir(config))
    if rundir.is_locked(directory):
        fail(f"a node is already running in {directory} (`supervise stop --run-dir {directory}` first)", EXIT_FAILED)
    port = metrics_port or (spec.extra.get("metrics") or {}).get("port")
    if port:
        _check_port_free(int(port))
    if detach:
        code = _start_detached(config, directory, timeout, metrics_port)
        if code == EXIT_OK and port:
            if not _wait_listening(int(port), 15.0):
                fail(f"the tree started, but its metrics did not come up on 127.0.0.1:{port}; see {directory / 'node.log'}")
            click.echo(f"metrics on http://127.0.0.1:{port}/metrics")
        sys.exit(code)
    _run_foreground(spec, directory, notify_fd, port)


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
    from supervisor_tree.node.node import Node
    from supervisor_tree.spec import ExitKind

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    companions: list[subprocess.Popen[bytes]] = []

    def on_started(ok: bool, reason: str) -> None:
        if ok and metrics_port:
            companions.append(_spawn_metrics(spec, directory, metrics_port))
        if ok:
            logging.getLogger("supervisor_tree").info(
                "tree %r started; run dir %s; `supervise status --run-dir %s`; Ctrl-C stops it", spec.name, directory, directory
            )
        if notify_fd is not None:
            os.write(notify_fd, ("started\n" if ok else f"failed: {reason}\n").encode())
            os.close(notify_fd)

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
    stopped_on_request = node.stopping and reason.kind in (ExitKind.SHUTDOWN, ExitKind.NORMAL)
    if stopped_on_request:
        logging.getLogger("supervisor_tree").info("node stopped: %s", reason)
        sys.exit(EXIT_OK)
    fail(f"the tree stopped: {reason}" + ("" if node.started else " (it never finished starting)"), EXIT_FAILED)


def _child_ids(tree: Any) -> list[str]:
    """Every child id of a supervisor spec, nested ones included."""
    return [i for c in tree.children for i in [c.id, *(_child_ids(c.supervisor) if c.supervisor else [])]]


def _start_detached(config: str | None, directory: Path, timeout: float, metrics_port: int | None = None) -> int:
    rundir.ensure(directory)
    read_fd, write_fd = os.pipe()
    cmd = [sys.executable, "-m", "supervisor_tree.cli", "start", "--run-dir", str(directory), "--notify-fd", str(write_fd)]
    if metrics_port:
        cmd += ["--metrics-port", str(metrics_port)]
    if config:
        cmd.insert(4, os.path.abspath(config))
    log = open(directory / "node.log", "ab")
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
                    click.echo(f"started (pid {proc.pid}); run dir {directory}")
                    return EXIT_OK
                tail = _log_tail(directory)
                click.echo(f"supervise: the tree failed to start: {line.removeprefix('failed: ') or 'node exited'}", err=True)
                if tail:
                    click.echo(tail, err=True)
                proc.wait(timeout=30)
                return EXIT_FAILED
        click.echo(f"supervise: the tree did not start within {timeout:g}s; see {directory / 'node.log'}", err=True)
        return EXIT_TIMEOUT


def _log_tail(directory: Path, lines: int = 8) -> str:
    try:
        return "\n".join((directory / "node.log").read_text().splitlines()[-lines:])
    except OSError:
        return ""




@click.command(short_help="Stop the tree gracefully.")
@click.option("--timeout", type=SECONDS, default=600.0, show_default=True, help="Seconds to wait for the tree to stop.")
@run_dir_option
@config_option
def stop(timeout: float, run_dir: str | None, config: str | None) -> None:
    """Stop the tree gracefully: reverse start order, honouring shutdown timeouts."""
    ctx = Ctx(run_dir, config)
    with ctx.client() as c:
        value = run_client(lambda: c.stop(timeout))
    deadline = time.monotonic() + 10
    while rundir.is_locked(ctx.run_dir) and time.monotonic() < deadline:
        time.sleep(0.02)  # the node releases its lock a moment after answering
    click.echo(f"stopped ({value.get('reason')})")


COMMANDS = [check, start, stop]
