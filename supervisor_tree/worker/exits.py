"""How a worker process says how it ended: exit codes and the reason file.

A worker that exits on purpose writes its reason (`spec.ExitReason` as JSON,
``{"kind": "error", "detail": "..."}``: never a pickle, so reading it can run nothing)
to RUN/reasons/PID just before `os._exit`; the launcher reads it when it reaps.
Exit codes: 0 normal, 80 shutdown, 81 {shutdown, detail}, 82 error.

    >>> exit_status("shutdown")
    (80, ExitReason(kind=<ExitKind.SHUTDOWN: 'shutdown'>, detail=None))
"""

from __future__ import annotations

import json
import logging
import os

from supervisor_tree.spec import NORMAL, SHUTDOWN, ExitKind, ExitReason, error, shutdown_with

__all__ = ["EXIT_NORMAL", "EXIT_SHUTDOWN", "EXIT_SHUTDOWN_WITH", "EXIT_ERROR", "exit_status", "write_reason"]

log = logging.getLogger("supervisor_tree.worker")

EXIT_NORMAL, EXIT_SHUTDOWN, EXIT_SHUTDOWN_WITH, EXIT_ERROR = 0, 80, 81, 82


def exit_status(reason: object) -> tuple[int, ExitReason]:
    """(exit code, ExitReason) for a stop reason as `Worker.stop` takes it."""
    if isinstance(reason, ExitReason):
        code = {ExitKind.NORMAL: EXIT_NORMAL, ExitKind.SHUTDOWN: EXIT_SHUTDOWN,
                ExitKind.SHUTDOWN_WITH: EXIT_SHUTDOWN_WITH}.get(reason.kind, EXIT_ERROR)
        return code, reason
    if isinstance(reason, str):
        if reason == "normal":
            return EXIT_NORMAL, NORMAL
        if reason == "shutdown":
            return EXIT_SHUTDOWN, SHUTDOWN
        return EXIT_ERROR, error(reason)
    if isinstance(reason, tuple) and len(reason) == 2 and reason[0] == "shutdown":
        return EXIT_SHUTDOWN_WITH, shutdown_with(reason[1])
    if isinstance(reason, BaseException):
        return EXIT_ERROR, error(f"{type(reason).__name__}: {reason}")
    return EXIT_ERROR, error(repr(reason))


def write_reason(run_dir: str, reason: ExitReason) -> None:
    """RUN/reasons/PID, read (and removed) by the launcher when it reaps us."""
    path = os.path.join(run_dir, "reasons", str(os.getpid()))
    try:
        with open(path, "w") as f:
            json.dump({"kind": reason.kind.value, "detail": reason.detail}, f)
    except OSError as exc:
        log.warning("cannot write the exit reason to %s: %s", path, exc)
