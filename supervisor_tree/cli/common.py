"""What every command shares: exit codes, one-line failures, JSON output, the node's run dir, options.

Exit codes: 0 ok; 1 the operation failed (an OTP error result such as not_found,
a worker's error answer, a callee that died, a tree that failed); 2 bad usage,
bad config or bad JSON; 3 no node is running in the run directory; 4 timeout.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from supervisor_tree.client import (
    CalleeExited,
    CallError,
    CallTimeout,
    Client,
    ClientError,
    ControlRefused,
    NodeNotRunning,
    UntrustedRunDir,
    find_run_dir,
)
from supervisor_tree.wire import rundir

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
        problem = rundir.check(run_dir) if run_dir.exists() else None
        if problem:
            fail(f"run dir {run_dir}: {problem}; choose another with --run-dir or SUPERVISE_RUN_DIR", EXIT_USAGE)
        if not rundir.is_locked(run_dir):
            fail(f"no node is running in {run_dir} (start one with `supervise start`, or pass --run-dir)"
                 + _last_ending(run_dir), EXIT_NO_NODE)
        return Client(run_dir, timeout=timeout, caller="cli")  # one caller in the node's retry figures


def _last_ending(run_dir: Path) -> str:
    """'; the last one stopped at 12:00:01: <why>' from the run dir's event log, if there is one."""
    import time

    from supervisor_tree.node.life import last_ending

    ending = last_ending(run_dir / "events.jsonl")
    return "" if ending is None else f"; the last one stopped at {time.strftime('%H:%M:%S', time.localtime(ending[0]))}: {ending[1]}"


def run_client(fn: Any) -> Any:
    """Map client errors to exit codes with one clear line."""
    try:
        return fn()
    except NodeNotRunning as exc:
        fail(str(exc), EXIT_NO_NODE)
    except CallTimeout as exc:
        fail(str(exc), EXIT_TIMEOUT)
    except UntrustedRunDir as exc:
        fail(str(exc), EXIT_USAGE)
    except (ControlRefused, CallError, CalleeExited) as exc:
        fail(str(exc), EXIT_FAILED)
    except ClientError as exc:
        fail(str(exc), EXIT_FAILED)


SECONDS = click.FloatRange(min=0, min_open=True)  # a timeout: a number of seconds > 0 (else usage, exit 2)


def signal_name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """A signal as KILL, SIGKILL or kill; anything else is bad usage (exit 2) before the node is asked."""
    name = value.upper()
    if (name if name.startswith("SIG") else "SIG" + name) not in signal.Signals.__members__:
        raise click.BadParameter(f"unknown signal {value!r}; e.g. KILL, TERM, STOP, CONT, INT, HUP, USR1")
    return name


run_dir_option = click.option("--run-dir", "run_dir", default=None, help="The node's run directory (default: per user and config).")
config_option = click.option("-c", "--config", "config", default=None, help="Locate the node started with this config.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
supervisor_option = click.option("--supervisor", "-s", default=None, help="The supervisor (path like root/mid, or its id).")


def api_result(value: dict[str, Any], as_json: bool, what: str) -> None:
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


def load_spec(config: str | None) -> Any:
    from supervisor_tree.config.default_tree import default_node_spec
    from supervisor_tree.config.load import ConfigError, load_config

    try:
        return default_node_spec() if config is None else load_config(config)
    except ConfigError as exc:
        fail(str(exc).replace("\n", "\nsupervise: "), EXIT_USAGE)
    except FileNotFoundError:
        fail(f"{config}: no such config file", EXIT_USAGE)
