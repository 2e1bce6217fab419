"""`supervise`: the command line.  Parses, calls the library, maps errors to exit codes.

Exit codes: 0 ok; 1 the operation failed (an OTP error result such as not_found,
a worker's error answer, a callee that died, a tree that failed); 2 bad usage,
bad config or bad JSON; 3 no node is running in the run directory; 4 timeout.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import click

from . import rundir
from .client import (
    CalleeExited,
    CallError,
    CallTimeout,
    Client,
    ClientError,
    ControlRefused,
    NodeNotRunning,
    find_run_dir,
)
from .events import format_text, read_events

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NO_NODE, EXIT_TIMEOUT = 0, 1, 2, 3, 4


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    click.echo(f"supervise: {message}", err=True)
    sys.exit(code)


def emit(value: object, as_json: bool, text: str | None = None) -> None:
    if as_json:
        click.echo(json.dumps(value, default=str))
    else:
        click.echo(text if text is not None else json.dumps(value, default=str, indent=2))


def parse_json(what: str, raw: str) -> object:
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        fail(f"{what} is not valid JSON ({exc.msg} at column {exc.colno}): {raw!r}", EXIT_USAGE)


class Ctx:
    def __init__(self, run_dir: str | None, config: str | None) -> None:
        self.run_dir_opt = run_dir
        self.config = config

    @property
    def run_dir(self) -> Path:
        return find_run_dir(self.run_dir_opt, self.config)

    def client(self, timeout: float = 10.0) -> Client:
        run_dir = self.run_dir
        if not rundir.is_locked(run_dir):
            fail(f"no node is running in {run_dir} (start one with `supervise start`, or pass --run-dir)", EXIT_NO_NODE)
        return Client(run_dir, timeout=timeout)


def run_client(fn: Any) -> Any:
    """Map client errors to exit codes with one clear line."""
    try:
        return fn()
    except NodeNotRunning as exc:
        fail(str(exc), EXIT_NO_NODE)
    except CallTimeout as exc:
        fail(str(exc), EXIT_TIMEOUT)
    except (ControlRefused, CallError, CalleeExited) as exc:
        fail(str(exc), EXIT_FAILED)
    except ClientError as exc:
        fail(str(exc), EXIT_FAILED)


run_dir_option = click.option("--run-dir", "run_dir", default=None, help="The node's run directory (default: per user and config).")
config_option = click.option("-c", "--config", "config", default=None, help="Locate the node started with this config.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Erlang/OTP supervision trees for Python workers."""


# ---------------------------------------------------------------------- start / check


def load_spec(config: str | None) -> Any:
    from .config import ConfigError, load_config
    from .default_tree import default_node_spec

    try:
        return default_node_spec() if config is None else load_config(config)
    except ConfigError as exc:
        fail(str(exc).replace("\n", "\nsupervise: "), EXIT_USAGE)
    except FileNotFoundError:
        fail(f"{config}: no such config file", EXIT_USAGE)


@main.command()
@click.argument("config", required=False)
def check(config: str | None) -> None:
    """Validate CONFIG without starting anything (exit 2 on any problem)."""
    from .config import describe

    spec = load_spec(config)
    click.echo(describe(spec))


@main.command()
@click.argument("config", required=False)
@click.option("--detach", is_flag=True, help="Return once the tree is up (exit 0) or failed to start (exit 1).")
@click.option("--timeout", default=120.0, show_default=True, help="With --detach: how long to wait for the tree.")
@click.option("--notify-fd", type=int, default=None, hidden=True)
@run_dir_option
def start(config: str | None, detach: bool, timeout: float, notify_fd: int | None, run_dir: str | None) -> None:
    """Start the tree of CONFIG (no CONFIG: the built-in default tree)."""
    spec = load_spec(config)
    directory = Path(run_dir or os.environ.get("SUPERVISE_RUN_DIR") or rundir.default_run_dir(config))
    if rundir.is_locked(directory):
        fail(f"a node is already running in {directory} (`supervise stop --run-dir {directory}` first)", EXIT_FAILED)
    if detach:
        sys.exit(_start_detached(config, directory, timeout))
    _run_foreground(spec, directory, notify_fd)


def _run_foreground(spec: Any, directory: Path, notify_fd: int | None) -> NoReturn:
    from .runtime import Node
    from .spec import ExitKind

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    def on_started(ok: bool, reason: str) -> None:
        if ok:
            logging.getLogger("supervisor_tree").info(
                "tree %r started; run dir %s; `supervise status --run-dir %s`; Ctrl-C stops it", spec.name, directory, directory
            )
        if notify_fd is not None:
            os.write(notify_fd, (("started\n" if ok else f"failed: {reason}\n")).encode())
            os.close(notify_fd)

    node = Node(spec, directory, on_started=on_started)
    try:
        reason = node.run()
    except RuntimeError as exc:
        fail(str(exc))
    stopped_on_request = node._stopping and reason.kind in (ExitKind.SHUTDOWN, ExitKind.NORMAL)
    if stopped_on_request:
        logging.getLogger("supervisor_tree").info("node stopped: %s", reason)
        sys.exit(EXIT_OK)
    fail(f"the tree stopped: {reason}" + ("" if node.started else " (it never finished starting)"), EXIT_FAILED)


def _start_detached(config: str | None, directory: Path, timeout: float) -> int:
    rundir.ensure(directory)
    read_fd, write_fd = os.pipe()
    cmd = [sys.executable, "-m", "supervisor_tree.cli", "start", "--run-dir", str(directory), "--notify-fd", str(write_fd)]
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


# ---------------------------------------------------------------------- status / events


@main.command()
@run_dir_option
@config_option
@json_option
def status(run_dir: str | None, config: str | None, as_json: bool) -> None:
    """The tree: each child's id, type, restart, pid, state, generation, uptime, RSS.  Exit 3 if no node runs."""
    ctx = Ctx(run_dir, config)
    with ctx.client() as c:
        value = run_client(c.status)
    if as_json:
        emit(value, True)
        return
    from .render import render_status

    render_status(value)


@main.command()
@click.option("--follow", "-f", is_flag=True, help="Keep printing new reports until the node stops.")
@run_dir_option
@config_option
@json_option
def events(follow: bool, run_dir: str | None, config: str | None, as_json: bool) -> None:
    """Supervisor reports (started, exited, restarting, start_error, ...), from RUN/events.jsonl."""
    directory = Ctx(run_dir, config).run_dir
    path = directory / "events.jsonl"
    if not path.exists() and not rundir.is_locked(directory):
        fail(f"no events in {directory}: no node has run there", EXIT_NO_NODE)
    for rec in read_events(path):
        click.echo(json.dumps(rec) if as_json else format_text(rec))
    if not follow:
        return
    with open(path) as f:
        f.seek(0, os.SEEK_END)
        try:
            while True:
                line = f.readline()
                if line:
                    rec = json.loads(line)
                    click.echo(json.dumps(rec) if as_json else format_text(rec))
                    continue
                if not rundir.is_locked(directory):
                    return
                time.sleep(0.1)  # tailing a file: nothing to wait on but time
        except KeyboardInterrupt:
            return


# ---------------------------------------------------------------------- messages


@main.command()
@click.argument("worker")
@click.argument("message")
@click.option("--timeout", default=5.0, show_default=True, help="Seconds to wait for the reply.")
@run_dir_option
@config_option
@json_option
def call(worker: str, message: str, timeout: float, run_dir: str | None, config: str | None, as_json: bool) -> None:
    """Call WORKER with the JSON MESSAGE and print its reply."""
    msg = parse_json("MESSAGE", message)
    with Ctx(run_dir, config).client(timeout) as c:
        reply = run_client(lambda: c.call(worker, msg, timeout=timeout))
    emit(reply, True)


@main.command()
@click.argument("worker")
@click.argument("message")
@run_dir_option
@config_option
def cast(worker: str, message: str, run_dir: str | None, config: str | None) -> None:
    """Cast the JSON MESSAGE to WORKER (no reply)."""
    msg = parse_json("MESSAGE", message)
    with Ctx(run_dir, config).client() as c:
        run_client(lambda: c.cast(worker, msg))


@main.command()
@click.argument("worker")
@click.option("--signal", "sig", default="KILL", show_default=True, help="KILL, TERM, STOP, CONT, INT, ...")
@run_dir_option
@config_option
@json_option
def kill(worker: str, sig: str, run_dir: str | None, config: str | None, as_json: bool) -> None:
    """Send a signal to WORKER's process (the supervisor then does what OTP would)."""
    with Ctx(run_dir, config).client() as c:
        value = run_client(lambda: c.kill(worker, sig))
    emit(value, as_json, f"sent {value['signal']} to {worker} (pid {value['pid']}, generation {value['generation']})")


# ---------------------------------------------------------------------- dynamic API


def _api_result(value: dict[str, Any], as_json: bool, what: str) -> None:
    if as_json:
        emit(value, True)
    elif value.get("ok"):
        pid = value.get("pid")
        click.echo(f"ok (pid {pid})" if pid else "ok")
    if not value.get("ok"):
        detail = f": {value['detail']}" if value.get("detail") else ""
        pid = f" (pid {value['pid']})" if value.get("pid") else ""
        if not as_json:
            click.echo(f"supervise: {what}: {value['error']}{pid}{detail}", err=True)
        sys.exit(EXIT_FAILED)


supervisor_option = click.option("--supervisor", "-s", default=None, help="The supervisor (path like root/mid, or its id).")


def _child_command(name: str, method: str, doc: str) -> None:
    """One CLI command per OTP child operation: `supervise NAME CHILD` calls `Client.METHOD`."""

    @click.argument("child")
    @supervisor_option
    @run_dir_option
    @config_option
    @json_option
    def command(child: str, supervisor: str | None, run_dir: str | None, config: str | None, as_json: bool) -> None:
        with Ctx(run_dir, config).client() as c:
            value = run_client(lambda: getattr(c, method)(child, supervisor))
        _api_result(value, as_json, f"{name} {child}")

    command.__doc__ = doc
    main.command(name)(command)


_child_command("restart", "restart_child", "restart_child: start a stopped CHILD again (errors: running, restarting, not_found).")
_child_command("terminate", "terminate_child", "terminate_child: stop CHILD (an id, or a pid under simple_one_for_one); its spec is kept.")
_child_command("delete", "delete_child", "delete_child: forget the spec of a stopped CHILD.")


@main.command("start-child")
@click.argument("supervisor")
@click.option("--spec", "spec_json", default=None, help='The child spec as JSON, keys as in the config: {"id": ..., "start": "mod:Class", ...}.')
@click.option("--args", "args_json", default=None, help="simple_one_for_one: extra init arguments as a JSON object.")
@run_dir_option
@config_option
@json_option
def start_child(supervisor: str, spec_json: str | None, args_json: str | None, run_dir: str | None, config: str | None, as_json: bool) -> None:
    """start_child on SUPERVISOR: a new child (--spec), or a simple_one_for_one instance (--args)."""
    spec = parse_json("--spec", spec_json) if spec_json else None
    extra = parse_json("--args", args_json) if args_json else None
    if spec is None and extra is None:
        fail("start-child needs --spec JSON (or --args JSON for a simple_one_for_one supervisor)", EXIT_USAGE)
    with Ctx(run_dir, config).client() as c:
        value = run_client(lambda: c.start_child(supervisor, spec, extra))  # type: ignore[arg-type]
    _api_result(value, as_json, f"start-child on {supervisor}")


@main.command("which-children")
@click.argument("supervisor", default="root")
@run_dir_option
@config_option
@json_option
def which_children(supervisor: str, run_dir: str | None, config: str | None, as_json: bool) -> None:
    """OTP's which_children: SUPERVISOR's children, newest first."""
    with Ctx(run_dir, config).client() as c:
        value = run_client(lambda: c.which_children(supervisor))
    emit(value, as_json, "\n".join(f"{v['key']}\t{v['type']}\t{v['state']}\t{v['pid'] or '-'}" for v in value))


@main.command("count-children")
@click.argument("supervisor", default="root")
@run_dir_option
@config_option
@json_option
def count_children(supervisor: str, run_dir: str | None, config: str | None, as_json: bool) -> None:
    """OTP's count_children: specs, active, supervisors, workers."""
    with Ctx(run_dir, config).client() as c:
        value = run_client(lambda: c.count_children(supervisor))
    emit(value, as_json, " ".join(f"{k}={v}" for k, v in value.items()))


@main.command()
@click.option("--timeout", default=600.0, show_default=True, help="Seconds to wait for the tree to stop.")
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


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []})
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
def bench(argv: tuple[str, ...]) -> None:
    """Benchmarks beside raw pyzmq references: `supervise bench [WORKLOAD...] [--quick] [--list]` (--help for more)."""
    from .bench.__main__ import main as bench_main

    sys.exit(bench_main(list(argv)))


from .profiling.command import profile_command  # noqa: E402  (last: it imports this module lazily)
main.add_command(profile_command)

if __name__ == "__main__":
    main()
