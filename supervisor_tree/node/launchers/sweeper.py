"""The port sweeper: kills what external programs left behind when the node dies, however it dies.

    python -m supervisor_tree.node.launchers.sweeper     # stdin: "+PGID" / "-PGID" lines from the node

A program's process group (its children, their children) does not die with the fork
server the way the program itself does (PR_SET_PDEATHSIG is per process).  The node
starts this small process with its first program and tells it each program's group
as it starts and ends.  When its stdin reaches EOF (the node stopped, or was killed:
the kernel closes the node's end either way) it sends SIGKILL to every group still
registered and exits.  It ignores SIGINT and SIGTERM (the node decides the order of a
stop), imports nothing but the standard library, and owns nothing else.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    groups: set[int] = set()
    for line in sys.stdin.buffer:
        text = line.strip()
        if text[:1] in (b"+", b"-") and text[1:].isdigit():
            (groups.add if text[:1] == b"+" else groups.discard)(int(text[1:]))
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
