"""The config of an external program as a child (OTP's port): `command`, `env`, `cwd`, `stop_signal`, `ready`.

Owns checking those keys of one child table and turning them into a `spec.Command`;
`load.py` calls it for a worker that has `command` instead of `start`.  Like the rest
of the config it reports every problem on one line naming the key, the value and
what is allowed, and with `check_env` it also looks the program up on PATH (as the
fork server will) and checks that `cwd` is a directory.  Starts nothing.

    [[tree.children]]
    id = "cache"
    command = ["redis-server", "--port", "6380"]
    env = { REDIS_LOG = "verbose" }        # added to the node's environment
    cwd = "var"                            # relative to the config's directory
    stop_signal = "TERM"                   # sent to the program's process group on stop
    ready = { tcp = "127.0.0.1:6380" }     # or { stdout = "Ready to accept" }; none: once executed
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping

from supervisor_tree.config.schema import READY_KEYS, Table, check_table
from supervisor_tree.spec import Command, Ready, ReadyKind, _got, check_command, check_signal

__all__ = ["read_command", "executable_problem", "check_tcp_target"]


def read_command(t: Table, config_dir: str | None, check_env: bool) -> Command | None:
    """The child's `command` and its companions as a Command (None when `command` is rejected)."""
    argv = t.get("command", check_command, tuple, None)
    env: dict[str, str] = t.get("env", _check_env, dict, {})
    cwd: str | None = t.get("cwd", _check_cwd, str, None)
    stop_signal: str = t.get("stop_signal", check_signal, str, "TERM")
    ready = _ready(t)
    if cwd is not None and config_dir is not None:
        cwd = os.path.normpath(os.path.join(config_dir, cwd))
    if check_env and cwd is not None and not os.path.isdir(cwd):
        t.report(f'cwd "{cwd}" is not a directory')
    if argv is None:
        return None
    if check_env:
        path = env.get("PATH", os.environ.get("PATH", os.defpath))
        problem = executable_problem(argv[0], path, cwd)
        if problem:
            t.report(f"command: {problem}")
    return Command(argv=argv, env=env, cwd=cwd, stop_signal=stop_signal.upper().removeprefix("SIG"), ready=ready)


def executable_problem(program: str, path: str, cwd: str | None = None) -> str | None:
    """Why `program` cannot be executed here (not found on `path`, not executable), or None."""
    if "/" in program:
        full = program if os.path.isabs(program) or cwd is None else os.path.join(cwd, program)
        if not os.path.exists(full):
            return f'executable "{program}" does not exist'
        if os.path.isdir(full) or not os.access(full, os.X_OK):
            return f'"{program}" is not an executable file'
        return None
    if shutil.which(program, path=path) is None:
        return f'executable "{program}" not found on PATH ({path})'
    return None


def _check_env(value: object) -> str | None:
    problem = check_table("env", value, " of strings (added to the node's environment)")
    if problem:
        return problem
    assert isinstance(value, Mapping)
    for key, item in value.items():
        if not isinstance(item, str):
            return f'env.{key} must be a string; got {_got(item)}'
    return None


def _check_cwd(value: object) -> str | None:
    if isinstance(value, str) and value:
        return None
    return f"cwd must be a directory (a non-empty string, relative to the config's directory); got {_got(value)}"


def check_tcp_target(value: object) -> str | None:
    if isinstance(value, str):
        host, sep, port = value.rpartition(":")
        if sep and host and port.isdigit() and 0 < int(port) < 65536:
            return None
    return f'ready.tcp must be "HOST:PORT" with a port in 1..65535 (e.g. "127.0.0.1:6380"); got {_got(value)}'


def _ready(t: Table) -> Ready:
    r = t.sub_table("ready", what=' ({ tcp = "HOST:PORT" } or { stdout = "text" })')
    if r is None:
        return Ready()
    r.reject_unknown(READY_KEYS)
    given = [key for key in READY_KEYS if key in r.data]
    if len(given) != 1:
        r.report(f"ready needs exactly one of tcp, stdout; got {', '.join(given) or 'none'}")
        return Ready()
    if given[0] == "tcp":
        target = r.get("tcp", check_tcp_target, str, "")
        return Ready(ReadyKind.TCP, target) if target else Ready()
    text = r.get("stdout", lambda v: None if isinstance(v, str) and v else
                 f"ready.stdout must be a non-empty string (text a line of output contains); got {_got(v)}", str, "")
    return Ready(ReadyKind.STDOUT, text) if text else Ready()
