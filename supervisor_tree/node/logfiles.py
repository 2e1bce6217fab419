"""The run's files that grow, kept bounded: RUN/events.jsonl and RUN/node.log (`[node] logs`, as `LogLimits`).

(Each worker's own RUN/logs/ID.log is rotated by `worker_logs`, under the same limits.)

* events.jsonl has one writer, the node's `EventLog`, which rotates it by renaming
  (`rotate`): events.jsonl -> events.jsonl.1 -> .2 ... -> .N (the oldest falls off).
* node.log is the stdout and stderr of a detached node, and so of its fork server and
  every worker (one file, opened O_APPEND, shared across fork), which cannot be renamed
  under them.  Past its limit the node copies it to node.log.1 (older copies shift)
  and truncates it in place (`SharedLog`); every process's next write lands at the new
  end.  A line written in the instant between the copy and the truncation is lost.

    generations(Path("RUN/events.jsonl"))   # [.../events.jsonl.3, ....2, ....1, .../events.jsonl]: oldest first
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LogLimits", "rotate", "generations", "SharedLog"]


@dataclass(frozen=True, slots=True)
class LogLimits:
    """How big a log may grow before it rotates, and how many old copies stay (0: none, it is emptied)."""

    max_bytes: int = 10 * 1024 * 1024
    backups: int = 3

    @classmethod
    def of(cls, table: Mapping[str, object] | None) -> LogLimits:
        """From the config's validated `[node] logs` (spec.extra["logs"])."""
        d, t = cls(), table or {}
        return cls(int(t.get("max_bytes", d.max_bytes)), int(t.get("backups", d.backups)))  # type: ignore[call-overload]


def _numbered(path: Path, n: int) -> Path:
    return path.with_name(f"{path.name}.{n}")


def _shift(path: Path, backups: int) -> None:
    """path.{N-1} -> path.N, ..., path.1 -> path.2: room for a new path.1 (the oldest falls off)."""
    for n in range(backups - 1, 0, -1):
        older = _numbered(path, n)
        if older.exists():
            os.replace(older, _numbered(path, n + 1))


def rotate(path: Path, backups: int) -> None:
    """Rename `path` to path.1, after shifting the older copies (its writer reopens it afterwards);
    with no backups, remove it."""
    if backups < 1:
        path.unlink(missing_ok=True)
        return
    _shift(path, backups)
    if path.exists():
        os.replace(path, _numbered(path, 1))


def generations(path: Path) -> list[Path]:
    """`path`'s rotated copies and then `path` itself, oldest first (those that exist)."""
    numbered = []
    for p in path.parent.glob(path.name + ".*"):
        suffix = p.name[len(path.name) + 1:]
        if suffix.isdigit():
            numbered.append((int(suffix), p))
    found = [p for _, p in sorted(numbered, reverse=True)]
    return found + [path] if path.exists() else found


class SharedLog:
    """node.log as this process's stderr (a detached node): copy-truncate rotation, checked by the node's loop."""

    def __init__(self, path: Path, limits: LogLimits, fd: int = 2) -> None:
        self.path, self.limits, self.fd = path, limits, fd

    @classmethod
    def of_this_process(cls, path: Path, limits: LogLimits) -> SharedLog | None:
        """The SharedLog when this process's stderr is `path` (a detached node), else None (a terminal, a pipe)."""
        try:
            if os.path.samestat(os.fstat(2), os.stat(path)):
                return cls(path, limits)
        except OSError:
            pass
        return None

    def check(self) -> bool:
        """Rotate when past the limit; True when it did."""
        try:
            if os.fstat(self.fd).st_size <= self.limits.max_bytes:
                return False
            if self.limits.backups > 0:
                _shift(self.path, self.limits.backups)
                shutil.copyfile(self.path, _numbered(self.path, 1))
            os.ftruncate(self.fd, 0)
        except OSError:
            return False  # a full disk or a removed file: keep serving, try again at the next check
        return True
