"""What a launcher asks of the OS for one process: its title, its OOM score, who reaps it, when it dies.

Owns the Linux calls (prctl, /proc/self/oom_score_adj, setproctitle) and the title
format; decides nothing about which process gets what (the launchers and the node do).

    set_title("default", "registry#3")     # ps -o args: "supervise[default] registry#3"; top: "registry#3"
    set_oom_score_adj(500)                  # the OOM killer picks this process before the node
    previous = set_subreaper(True)          # orphaned descendants are reparented to us, not to init
    die_with_parent(node_pid)               # PR_SET_PDEATHSIG=SIGKILL, with the race closed

Titles: ``supervise[NAME] ROLE`` where NAME is the tree's name and ROLE is ``node``,
``fork-server``, ``standby``, ``heart`` or a worker's ``ID#GENERATION``.  The short
process name (what top shows, 15 bytes) is the role.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time

import setproctitle

__all__ = ["title", "set_title", "parse_title", "set_oom_score_adj", "oom_score_adj", "set_subreaper",
           "die_with_parent", "await_parent"]

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37
_libc: ctypes.CDLL | None = None


def _prctl(option: int, arg: object) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.prctl(option, arg, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl({option}) failed: {os.strerror(errno)}")


# -- titles


def title(name: str, role: str) -> str:
    return f"supervise[{name}] {role}"


def set_title(name: str, role: str) -> None:
    """This process's title (ps, htop, py-spy, /proc/PID/cmdline) and short name (top, OOM reports)."""
    setproctitle.setproctitle(title(name, role))
    setproctitle.setthreadtitle(role[:15])


def parse_title(cmdline: str) -> tuple[str, str] | None:
    """(name, role) of a title made by `title`, or None for any other command line."""
    cmdline = cmdline.replace("\0", " ").strip()
    if not cmdline.startswith("supervise[") or "] " not in cmdline:
        return None
    head, _, role = cmdline.partition("] ")
    return head.removeprefix("supervise["), role.strip()


# -- the OOM killer


def oom_score_adj() -> int:
    with open("/proc/self/oom_score_adj") as f:
        return int(f.read())


def set_oom_score_adj(value: int) -> str | None:
    """Set ours; None when done, else why not (lowering it below what a privileged parent
    set needs CAP_SYS_RESOURCE; the process keeps the value it inherited)."""
    try:
        if oom_score_adj() == value:
            return None
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(value))
    except OSError as exc:
        return f"cannot set oom_score_adj to {value} ({exc.strerror}); it stays {_current_or_unknown()}"
    return None


def _current_or_unknown() -> str:
    try:
        return str(oom_score_adj())
    except OSError:
        return "unknown"


# -- who reaps, when to die


def set_subreaper(on: bool) -> bool:
    """PR_SET_CHILD_SUBREAPER: orphaned descendants become our children.  Returns the previous value."""
    previous = ctypes.c_int(0)
    _prctl(_PR_GET_CHILD_SUBREAPER, ctypes.pointer(previous))
    _prctl(_PR_SET_CHILD_SUBREAPER, int(on))
    return bool(previous.value)


def die_with_parent(expected_parent: int) -> None:
    """PR_SET_PDEATHSIG=SIGKILL, then close the race where the parent died before the prctl."""
    _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
    if os.getppid() != expected_parent:
        os._exit(1)


def await_parent(parent: int, meanwhile: int, timeout: float = 30.0) -> None:
    """Wait until `parent` (a subreaper) has adopted us, while our parent is `meanwhile`.

    A worker is forked by a short-lived intermediate process that exits at once, so that
    the node, not the fork server, becomes its parent.  Any other parent means the node
    is gone: exit.
    """
    deadline = time.monotonic() + timeout
    while (ppid := os.getppid()) != parent:
        if ppid != meanwhile or time.monotonic() > deadline:
            os._exit(1)
        time.sleep(0.0001)  # the intermediate is exiting; nothing to wait on but its exit
