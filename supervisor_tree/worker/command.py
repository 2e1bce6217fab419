"""An external program's process (OTP's port), from the fork to its exec.

Runs in the process the fork server forked (or a standby it activated) for a child
with `command`: the process becomes the leader of its own process group (so its own
children can be signalled and swept with it), puts its output on the node's FIFOs,
takes the child's `env` and `cwd`, resets what Python changed about signals, and
executes the program.  It keeps PR_SET_PDEATHSIG (set by the fork server), so the
program dies with the fork server.  When the program cannot be executed (missing,
not executable, no such directory) it exits with the reason, which fails the start:

    {error,cannot run ["redis-server"]: executable "redis-server" not found on PATH (/usr/bin:/bin)}

    exec_command(req, prepared)         # never returns

Owns nothing after the exec: readiness and heartbeats are the node's (node/launchers/port.py).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from typing import NoReturn

from supervisor_tree.spec import Command, error
from supervisor_tree.wire import channel
from supervisor_tree.worker.exits import EXIT_ERROR, write_reason
from supervisor_tree.worker.output import redirect
from supervisor_tree.worker.spawn import SpawnRequest
from supervisor_tree.worker.standby import Prepared

__all__ = ["exec_command", "cannot_execute", "exec_fifo"]

_DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM, signal.SIGCHLD)


def exec_fifo(run_dir: str, worker_id: str, generation: int) -> str:
    """Where the node learns that the program was executed: this process writes b"1" when it gets
    going, b"E" when it cannot execute the program; the exec closes its end (O_CLOEXEC)."""
    return os.path.join(run_dir, "w", f"{worker_id}-{generation}.exec")


def exec_command(req: SpawnRequest, prepared: Prepared | None) -> NoReturn:
    command = req.command
    assert command is not None
    told = _tell(exec_fifo(req.run_dir, req.worker_id, req.generation), b"1")
    if prepared is not None:  # a standby: the sockets it bound under its own names are nobody's now
        channel.unlink_ipc(prepared.mailbox_at)
        channel.unlink_ipc(prepared.control_at)
    try:
        os.setpgid(0, 0)
        redirect(req.output)
        _stdin_from_devnull()
        env = dict(os.environ)
        env.update(command.env)
        problem = cannot_execute(command, env.get("PATH", os.defpath))
        if problem:
            raise OSError(problem)
        if command.cwd is not None:
            os.chdir(command.cwd)
        _close_on_exec_above(2)
        for sig in _DEFAULT_SIGNALS:  # Python ignores SIGPIPE; the fork server ignores SIGINT
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())  # a stop request already pending now ends us
        os.execvpe(command.argv[0], list(command.argv), env)
    except OSError as exc:
        why = exc.strerror if exc.strerror else str(exc)
        detail = f"cannot run {list(command.argv)}: {why}" + (f" ({exc.filename})" if exc.filename else "")
        print(f"supervise: {req.worker_id}#{req.generation}: {detail}", file=sys.stderr, flush=True)
        write_reason(req.run_dir, error(detail))
        if told is not None:
            os.write(told, b"E")
    os._exit(EXIT_ERROR)


def _tell(path: str, what: bytes) -> int | None:
    """Open the node's exec FIFO (close-on-exec) and write `what`; None without a reader."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    os.write(fd, what)
    return fd


def cannot_execute(command: Command, path: str) -> str | None:
    """Why `command` cannot be executed with this PATH and its cwd, or None."""
    if command.cwd is not None and not os.path.isdir(command.cwd):
        return f'cwd "{command.cwd}" is not a directory'
    program = command.argv[0]
    if "/" in program:
        full = program if os.path.isabs(program) or command.cwd is None else os.path.join(command.cwd, program)
        if not os.path.exists(full):
            return f'executable "{program}" does not exist'
        return None
    if shutil.which(program, path=path) is None:
        return f'executable "{program}" not found on PATH ({path})'
    return None


def _stdin_from_devnull() -> None:
    fd = os.open(os.devnull, os.O_RDONLY)
    os.dup2(fd, 0)
    os.close(fd)


def _close_on_exec_above(highest_kept: int) -> None:
    """FD_CLOEXEC on every inherited descriptor above `highest_kept` (closing them here could
    pull a socket from under a standby's ZeroMQ threads, which abort on EBADF)."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > highest_kept:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass
