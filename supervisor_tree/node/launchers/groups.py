"""The children's process groups: what a worker or a program starts dies with it, and with the node.

Every process the fork server makes leads a process group of its own (forkserver's
`in_child`), so what a child starts (a subprocess, a shell's background job, a
multiprocessing pool) is in that group unless it made a group of its own.  This
module owns the table of those groups, and the sweeper process (`sweeper.py`) that
kills every group still registered when the node dies, however it dies.

    groups = Groups()
    groups.started(pid)         # a child runs (its pid is its group): the sweeper learns it
    groups.ended(pid)           # the child is reaped: SIGKILL what is left of its group
    groups.reap()               # a pass of a thread: reap the group's dead; False once none is left
    groups.close()              # EOF to the sweeper: it kills what is still registered, then exits

Reaping: the node is a child subreaper, so a group member whose parent died becomes
the node's child and would stay a zombie; `reap` waits for those (never for a leader:
the launcher reaps its child and keeps its exit reason).  A program's group is reaped
while it runs (`watch_while_running`: a shell's background jobs outlive their parent);
a Python worker's only once the worker ended.  The table is thread-safe.

Only for processes on this machine: pids of workers on other hosts (Ray) are never
given here.  A member that made a process group or a session of its own escapes
(`setsid`, `start_new_session=True`): the node cannot tell it from anybody's process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from typing import IO

from supervisor_tree.node.launchers.orphans import reap_strays

log = logging.getLogger("supervisor_tree")

__all__ = ["Groups", "signal_group"]

_SWEEPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sweeper.py")


class Groups:
    """See the module docstring."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reaped: dict[int, int | None] = {}  # group -> its leader while the launcher has not reaped it
        self._sweeper: subprocess.Popen[bytes] | None = None

    def started(self, pid: int, watch_while_running: bool = False) -> None:
        """Child `pid` runs and leads group `pid`: killed with the node from now on."""
        if watch_while_running:
            with self._lock:
                self._reaped[pid] = pid
        self._tell(f"+{pid}")

    def ended(self, pid: int) -> bool:
        """Child `pid` was reaped: SIGKILL the rest of its group; True if anything was left of it."""
        try:
            os.killpg(pid, signal.SIGKILL)
            left = True
        except (ProcessLookupError, PermissionError):  # nobody in it: the common case for a worker
            left = False
        with self._lock:
            if left:
                self._reaped[pid] = None  # reaped as they die (`reap`)
            else:
                self._reaped.pop(pid, None)
        self._tell(f"-{pid}")
        return left

    def reap(self) -> bool:
        """Reap the dead of every group watched; False once none is watched any more."""
        with self._lock:  # under the lock: a leader given here is never stale
            for pgid, leader in list(self._reaped.items()):
                if reap_strays(pgid, leader) is None:
                    del self._reaped[pgid]
            return bool(self._reaped)

    def close(self) -> None:
        if self._sweeper is None:
            return
        assert self._sweeper.stdin is not None
        with contextlib.suppress(OSError):
            self._sweeper.stdin.close()
        try:
            self._sweeper.wait(5.0)
        except subprocess.TimeoutExpired:
            self._sweeper.kill()

    def _tell(self, line: str) -> None:
        if self._sweeper is None:
            # By its path, without site: it needs only the standard library (-m would import the package).
            self._sweeper = subprocess.Popen([sys.executable, "-S", _SWEEPER], stdin=subprocess.PIPE,
                                             stdout=subprocess.DEVNULL, close_fds=True)
        stdin: IO[bytes] | None = self._sweeper.stdin
        assert stdin is not None
        try:
            stdin.write(f"{line}\n".encode())
            stdin.flush()
        except OSError:
            log.warning("the sweeper (pid %d) is gone; what workers started may outlive a killed node",
                        self._sweeper.pid)


def signal_group(pid: int, sig: int) -> None:
    """`sig` to the process group `pid` leads, or to `pid` alone before it made its group."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    except PermissionError:  # the pid is not (yet) a group leader we may signal
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
