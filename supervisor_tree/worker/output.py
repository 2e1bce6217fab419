"""Where a worker process's output goes: its stdout and stderr into the FIFOs the node reads.

The node makes two FIFOs per incarnation (RUN/w/ID-GEN.out and .err) and reads them
into RUN/logs/ID.log (`node/worker_logs.py`).  In the new process, before anything
else runs, `capture` puts them on file descriptors 1 and 2, so whatever writes there
(print, a C library, a traceback, an exec'd program) lands in the worker's log.
Python `logging` records go to stderr too, each line marked with LOG_MARK so the
node files them under the stream "log".

    prepare_capture()                   # a standby: the logging handler made ahead
    capture(req.output)                 # a Python worker: fds 1 and 2, and logging
    redirect(req.output)                # a program about to be executed: fds 1 and 2 only

Without FIFOs (`output` None, or no reader: a launcher used without a node) the
process keeps the output it inherited.  Must not block: a FIFO whose reader is gone
is skipped.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sys

__all__ = ["LOG_MARK", "capture", "prepare_capture", "redirect"]

LOG_MARK = "\x02"  # first character of a line written by a logging handler (stream "log")


def redirect(output: tuple[str, str] | None) -> bool:
    """Put the FIFOs `output` (stdout, stderr) on fds 1 and 2; False when there are none to use."""
    if output is None:
        return False
    fds = [_open_writer(path) for path in output]
    if None in fds:
        for fd in fds:
            if fd is not None:
                os.close(fd)
        return False
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    for fd, target in zip(fds, (1, 2)):
        assert fd is not None
        os.dup2(fd, target)
        os.close(fd)
    return True


_prepared: logging.Handler | None = None  # made by prepare_capture (a standby), used by capture


def prepare_capture() -> None:
    """Make the logging handler `capture` installs, ahead of time (a standby, while nobody waits)."""
    global _prepared
    _prepared = _MarkedHandler(sys.stderr)
    _prepared.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))


def capture(output: tuple[str, str] | None) -> None:
    """`redirect`, then line-buffered stdout and tagged logging records on stderr."""
    if not redirect(output):
        return
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(line_buffering=True)  # a line reaches the log when it is printed, not 8 KiB later
    if _prepared is None or getattr(_prepared, "stream", None) is not sys.stderr:
        prepare_capture()
    assert _prepared is not None
    logging.getLogger().handlers[:] = [_prepared]


class _MarkedHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Each line of a record (a traceback has several) starts with LOG_MARK."""

    def format(self, record: logging.LogRecord) -> str:
        return "\n".join(LOG_MARK + line for line in super().format(record).split("\n"))


def _open_writer(path: str) -> int | None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # ENXIO, never a hang, without a reader
    except OSError:
        return None
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)  # writes wait for the reader
    return fd
