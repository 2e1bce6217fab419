"""Tasks the pool tests run on members by "module:function": one that leaves a trace of each run."""

from __future__ import annotations

import os


def record(path: str, i: int) -> int:
    """Append `i` to `path` (one write, O_APPEND: runs on several members never interleave); returns `i`."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, f"{i}\n".encode())
    finally:
        os.close(fd)
    return i
