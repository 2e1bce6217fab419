"""The node's children: a pidfd per worker and standby, in one epoll set; signals by pidfd; reaping.

Owns the pidfds and the wait statuses; decides nothing (local.py says what an end means).
The node is a child subreaper, so every process the fork server makes becomes its child.

    reaper = Reaper(epoll)
    reaper.watch(pid, req)                 # a worker (req) or a standby / orphan (None)
    pid = reaper.pid_of(fd)                # for a ready fd of the epoll set
    ended = reaper.reap(pid)               # (req, wait status) once it ended, else None
    reaper.kill(pid, signal.SIGTERM)       # by pidfd: never a recycled pid
    reaper.kill_and_reap_all(deadline)     # at the end: [(pid, req)] of everything reaped
"""

from __future__ import annotations

import logging
import os
import select
import signal
import time
from dataclasses import dataclass

from supervisor_tree.worker.spawn import SpawnRequest

log = logging.getLogger(__name__)

__all__ = ["Reaper"]


@dataclass(slots=True)
class _Proc:
    pidfd: int
    req: SpawnRequest | None = None  # None: a standby not activated, or an orphan


class Reaper:
    """See the module docstring."""

    def __init__(self, epoll: select.epoll) -> None:
        self._epoll = epoll
        self._procs: dict[int, _Proc] = {}
        self._by_pidfd: dict[int, int] = {}

    @property
    def pids(self) -> set[int]:
        return set(self._procs)

    def watch(self, pid: int, req: SpawnRequest | None = None) -> None:
        """Hold a pidfd on `pid` (our child, or about to be): `pid_of` names it once it ended."""
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:  # reaped already: cannot happen to our own child
            return
        self._procs[pid] = _Proc(pidfd, req)
        self._by_pidfd[pidfd] = pid
        self._epoll.register(pidfd, select.EPOLLIN)

    def activated(self, pid: int, req: SpawnRequest) -> None:
        """A standby now runs `req`: its end is a worker's."""
        self._procs[pid].req = req

    def pid_of(self, fd: int) -> int | None:
        return self._by_pidfd.get(fd)

    def reap(self, pid: int) -> tuple[SpawnRequest | None, int] | None:
        """(its request, wait status) if `pid` ended (it is forgotten then); None while it runs."""
        proc = self._procs[pid]
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            # Dead before its intermediate exited: ours in a moment (the pidfd stays readable).
            return None
        if done == 0:
            return None
        self._forget(pid)
        return proc.req, status

    def kill(self, pid: int, sig: int) -> None:
        proc = self._procs.get(pid)
        try:
            if proc is not None:
                signal.pidfd_send_signal(proc.pidfd, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            pass

    def kill_and_reap_all(self, deadline: float) -> list[tuple[int, SpawnRequest | None]]:
        """SIGKILL everything, wait for each until `deadline`, reap; what was reaped (or given up on)."""
        for pid in list(self._procs):
            self.kill(pid, signal.SIGKILL)
        gone = []
        for pid, proc in list(self._procs.items()):
            if select.select([proc.pidfd], [], [], max(0.0, deadline - time.monotonic()))[0]:
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass
            else:
                log.warning("process %d did not die within the deadline after SIGKILL; left to init", pid)
            self._forget(pid)
            gone.append((pid, proc.req))
        return gone

    def _forget(self, pid: int) -> None:
        proc = self._procs.pop(pid)
        del self._by_pidfd[proc.pidfd]
        self._epoll.unregister(proc.pidfd)
        os.close(proc.pidfd)
