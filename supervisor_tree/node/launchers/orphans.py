"""What a process of the tree leaves behind, and what a dead fork server left half-made.

    remove_ipc_files(req)                   # a worker's socket files (libzmq leaves them)
    remove_standby_files(run_dir, pid)      # a standby's, bound under names of its own
    killed = sweep("default", known_pids)   # after the fork server's death: its intermediates,
                                            # and workers or standbys it had not announced yet

Owns finding those processes (this process's descendants whose title names the tree,
osproc.title) and killing them; the launcher reaps them.
"""

from __future__ import annotations

import os
import signal

import psutil

from supervisor_tree.node.launchers import osproc
from supervisor_tree.wire.channel import unlink_ipc
from supervisor_tree.worker.spawn import SpawnRequest

__all__ = ["remove_ipc_files", "remove_standby_files", "sweep"]


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
