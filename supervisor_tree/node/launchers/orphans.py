"""What a process of the tree leaves behind, and what a dead fork server left half-made.

    remove_ipc_files(req)                   # a worker's socket files (libzmq leaves them)
    remove_standby_files(run_dir, pid)      # a standby's, bound under names of its own
    killed = sweep("default", known_pids)   # after the fork server's death: its intermediates,
                                            # and workers or standbys it had not announced yet
    left = reap_strays(pgid, leader)        # a program's descendants reparented here (we are a
                                            # subreaper): reap the dead ones; None once none is left

Owns finding those processes (this process's descendants whose title names the tree,
osproc.title, or the members of a program's process group) and killing or reaping them;
the launcher reaps the processes it watches (workers, standbys, programs) itself.
"""

from __future__ import annotations

import os
import signal

import psutil

from supervisor_tree.node.launchers import osproc
from supervisor_tree.wire.channel import unlink_ipc
from supervisor_tree.worker.spawn import SpawnRequest

__all__ = ["remove_ipc_files", "remove_standby_files", "reap_strays", "sweep"]


def remove_ipc_files(req: SpawnRequest) -> None:
    """A worker's socket files outlive it (libzmq 4.3 does not remove them, nor does SIGKILL)."""
    unlink_ipc(req.mailbox)
    unlink_ipc(req.control)


def remove_standby_files(run_dir: str, pid: int) -> None:
    """The sockets a standby bound under its own names (see worker.standby.prepare)."""
    for suffix in (".mbx", ".ctl"):
        try:
            os.unlink(os.path.join(run_dir, "w", f".standby-{pid}{suffix}"))
        except OSError:
            pass


def sweep(name: str, known: set[int]) -> list[int]:
    """SIGKILL this process's descendants titled for tree `name` that are not `known`; their pids.

    Called once the dead fork server has been reaped: by then its intermediates got
    their PR_SET_PDEATHSIG (a fork in progress is aborted), so every process it made
    exists and is found here, at any depth.
    """
    killed = []
    me = os.getpid()
    for proc in psutil.Process().children(recursive=True):
        if proc.pid in known:
            continue
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:  # no title any more, but its short name is the role
                if proc.ppid() == me and _is_role(proc.name()):
                    killed.append(proc.pid)  # dead already, still to be reaped
                continue
            parsed = osproc.parse_title(" ".join(proc.cmdline()))
            if parsed is None or parsed[0] != name:
                continue
            proc.send_signal(signal.SIGKILL)
            killed.append(proc.pid)
        except psutil.Error:
            continue
    return killed


def _is_role(short_name: str) -> bool:
    """A short process name osproc.set_title gives a fork server, a standby or a worker (ID#GEN)."""
    return short_name in ("fork-server", "standby") or "#" in short_name


def reap_strays(pgid: int, leader: int | None) -> int | None:
    """Reap this process's dead children in process group `pgid` but `leader` (the launcher's to reap).

    An external program's descendants are reparented to us (a child subreaper) when their
    parent dies; nothing else waits for them, so each would stay a zombie until the node
    exits.  `leader`: the program's pid while the launcher still watches it (its wait
    status is the supervisor's exit reason), else None.  Returns how many are reaped, or
    None when no child of ours is left in the group (forget it then; with a leader it
    cannot happen).  Never blocks.
    """
    reaped = 0
    while True:
        try:
            found = os.waitid(os.P_PGID, pgid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return None if leader is None else reaped
        if found is None or found.si_pid == leader:  # none dead; or the leader first: the launcher's, soon
            return reaped
        try:
            os.waitpid(found.si_pid, os.WNOHANG)
        except ChildProcessError:  # reaped meanwhile by whoever owns it
            pass
        reaped += 1
