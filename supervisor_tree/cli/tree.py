"""Driving a running tree: status, events, call, cast, kill, and OTP's dynamic API."""

from __future__ import annotations

import json

import click

from supervisor_tree.cli.common import (
    EXIT_NO_NODE,
    EXIT_USAGE,
    SECONDS,
    Ctx,
    api_result,
    config_option,
    emit,
    fail,
    json_option,
    parse_json,
    run_client,
    run_dir_option,
    signal_name,
    supervisor_option,
)
from supervisor_tree.node.eventlog import follow_events, format_text, read_events
from supervisor_tree.wire import rundir

# ---------------------------------------------------------------------- status / events


@click.command(short_help="Show the tree and each child's state.")
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
    from supervisor_tree.cli.render import render_status

    render_status(value)


@click.command(short_help="Print the supervisor reports.")
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
    for rec in read_events(path):  # events.jsonl.N ... .1, then events.jsonl
        click.echo(json.dumps(rec) if as_json else format_text(rec))
    if not follow:
        return
    try:
        for rec in follow_events(path, lambda: rundir.is_locked(directory)):
            click.echo(json.dumps(rec) if as_json else format_text(rec))
    except KeyboardInterrupt:
        return


# ---------------------------------------------------------------------- messages


@click.command(short_help="Call a worker and print its reply.")
@click.argument("worker")
@click.argument("message")
@click.option("--timeout", type=SECONDS, default=5.0, show_default=True, help="Seconds to wait for the reply.")
@run_dir_option
@config_option
@json_option
def call(worker: str, message: str, timeout: float, run_dir: str | None, config: str | None, as_json: bool) -> None:
    """Call WORKER with the JSON MESSAGE and print its reply."""
    msg = parse_json("MESSAGE", message)
    with Ctx(run_dir, config).client(timeout) as c:
        reply = run_client(lambda: c.call(worker, msg, timeout=timeout))
    emit(reply, True)


@click.command(short_help="Cast a message to a worker.")
@click.argument("worker")
@click.argument("message")
@run_dir_option
@config_option
def cast(worker: str, message: str, run_dir: str | None, config: str | None) -> None:
    """Cast the JSON MESSAGE to WORKER (no reply)."""
    msg = parse_json("MESSAGE", message)
    with Ctx(run_dir, config).client() as c:
        run_client(lambda: c.cast(worker, msg))


@click.command(short_help="Send a signal to a worker's process.")
@click.argument("worker")
@click.option("--signal", "sig", default="KILL", show_default=True, callback=signal_name,
              help="KILL, TERM, STOP, CONT, INT, ...")
@run_dir_option
@config_option
@json_option
def kill(worker: str, sig: str, run_dir: str | None, config: str | None, as_json: bool) -> None:
    """Send a signal to WORKER's process (the supervisor then does what OTP would)."""
    with Ctx(run_dir, config).client() as c:
        value = run_client(lambda: c.kill(worker, sig))
    emit(value, as_json, f"sent {value['signal']} to {worker} (pid {value['pid']}, generation {value['generation']})")


# ---------------------------------------------------------------------- dynamic API


def _child_command(name: str, method: str, short: str, doc: str) -> click.Command:
    """One CLI command per OTP child operation: `supervise NAME CHILD` calls `Client.METHOD`."""

    @click.argument("child")
    @supervisor_option
    @run_dir_option
    @config_option
    @json_option
    def command(child: str, supervisor: str | None, run_dir: str | None, config: str | None, as_json: bool) -> None:
        with Ctx(run_dir, config).client() as c:
            value = run_client(lambda: getattr(c, method)(child, supervisor))
        api_result(value, as_json, f"{name} {child}")

    command.__doc__ = doc
    return click.command(name, short_help=short)(command)


_restart_command = _child_command("restart", "restart_child", "Start a stopped child again.", "restart_child: start a stopped CHILD again (errors: running, restarting, not_found).")
_terminate_command = _child_command("terminate", "terminate_child", "Stop a child; keep its spec.", "terminate_child: stop CHILD (an id, or a pid under simple_one_for_one); its spec is kept.")
_delete_command = _child_command("delete", "delete_child", "Forget a stopped child's spec.", "delete_child: forget the spec of a stopped CHILD.")


@click.command("start-child", short_help="Start a child under a supervisor.")
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
    api_result(value, as_json, f"start-child on {supervisor}")


@click.command("which-children", short_help="List a supervisor's children.")
@click.argument("supervisor", default="root")
@run_dir_option
@config_option
@json_option
def which_children(supervisor: str, run_dir: str | None, config: str | None, as_json: bool) -> None:
    """OTP's which_children: SUPERVISOR's children, newest first."""
    with Ctx(run_dir, config).client() as c:
        value = run_client(lambda: c.which_children(supervisor))
    emit(value, as_json, "\n".join(f"{v['key']}\t{v['type']}\t{v['state']}\t{v['pid'] or '-'}" for v in value))


@click.command("count-children", short_help="Count a supervisor's children.")
@click.argument("supervisor", default="root")
@run_dir_option
@config_option
@json_option
def count_children(supervisor: str, run_dir: str | None, config: str | None, as_json: bool) -> None:
    """OTP's count_children: specs, active, supervisors, workers."""
    with Ctx(run_dir, config).client() as c:
        value = run_client(lambda: c.count_children(supervisor))
    emit(value, as_json, " ".join(f"{k}={v}" for k, v in value.items()))


COMMANDS = [status, events, call, cast, kill, start_child, which_children, count_children, _restart_command, _terminate_command, _delete_command]
