"""The sweeper: kills what the tree's children started when the node dies, however it dies.

    python -S .../node/launchers/sweeper.py              # stdin: "+PGID" / "-PGID" lines from the node

What a worker or a program started (its process group: its children, their children)
does not die with the node the way the child itself does (PR_SET_PDEATHSIG is per
process).  The node (groups.py) starts this small process with its first child and
tells it each child's group as it starts and ends.  When its stdin reaches EOF (the node stopped, or was killed:
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
