"""Supervisor reports: one record shape, written as JSON lines and logged as text.

Owns `EventLog`, the only writer of RUN/events.jsonl, which it rotates past
`limits.max_bytes` (`logfiles.rotate`; `read_events` and `follow_events` read across
the rotated copies).  Every report has the fixed
fields ts, seq, event, supervisor (path from the root), child, pid, generation,
reason; `detail` carries anything else.  The library logs through the
"supervisor_tree" logger and never configures handlers (the CLI does).

    >>> log = EventLog(None)
    >>> log.emit("exited", supervisor="root", child="db", pid=41, generation=2, reason="killed")["seq"]
    1
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

from supervisor_tree.node.logfiles import LogLimits, generations, rotate

logger = logging.getLogger("supervisor_tree")

# Reports that mean something went wrong are logged as warnings.
_WARNINGS = {
    "child_terminated",
    "start_error",
    "shutdown_error",
    "reached_max_restart_intensity",
    "hung",
    "node_failed",
    "fork_server_lost",
    "profile_failed",
}

Record = dict[str, object]
TAIL_SHOWN = 10  # of an exited worker's stderr tail (detail.tail), in the text form


def format_text(rec: Record) -> str:
    """One human line: `12:00:01.234 root/db#2 (pid 41) exited: killed`."""
    ts = time.strftime("%H:%M:%S", time.localtime(float(rec["ts"])))  # type: ignore[arg-type]
    ms = int((float(rec["ts"]) % 1) * 1000)  # type: ignore[arg-type]
    who = str(rec.get("supervisor") or "")
    if rec.get("child"):
        who = f"{who}/{rec['child']}"
    if rec.get("generation"):
        who += f"#{rec['generation']}"
    pid = f" (pid {rec['pid']})" if rec.get("pid") else ""
    reason = f": {rec['reason']}" if rec.get("reason") is not None else ""
    detail = rec.get("detail")
    tail: object = None
    if isinstance(detail, dict) and "tail" in detail:  # a worker's last stderr lines: shown under the line
        detail = {k: v for k, v in detail.items() if k != "tail"}
        tail = rec["detail"]["tail"]  # type: ignore[index]
    if isinstance(detail, dict) and "mono_ns" in detail:  # a start's steps, for benchmarks: JSON only
        detail = {k: v for k, v in detail.items() if k != "mono_ns"}
    extra = " " + " ".join(f"{k}={v}" for k, v in detail.items()) if isinstance(detail, dict) and detail else ""
    below = "".join(f"\n    | {line}" for line in tail[-TAIL_SHOWN:]) if isinstance(tail, list) else ""
    return f"{ts}.{ms:03d} {who}{pid} {rec['event']}{reason}{extra}{below}"


class EventLog:
    """Numbers, stores and fans out reports.  `path` None keeps them in memory only."""

    def __init__(self, path: Path | None, publish: Callable[[bytes], None] | None = None,
                 limits: LogLimits | None = None) -> None:
        self._seq = 0
        self._path, self._limits = path, limits or LogLimits()
        self._file: TextIO | None = open(path, "a", buffering=1) if path else None
        self._size = os.fstat(self._file.fileno()).st_size if self._file is not None else 0
        self._publish = publish

    def emit(
        self,
        event: str,
        *,
        supervisor: str | None = None,
        child: str | None = None,
        pid: object = None,
        generation: int | None = None,
        reason: object = None,
        detail: dict[str, object] | None = None,
    ) -> Record:
        self._seq += 1
        rec: Record = {
            "ts": round(time.time(), 6),
            "seq": self._seq,
            "event": event,
            "supervisor": supervisor,
            "child": child,
            "pid": pid if isinstance(pid, int) else None,
            "generation": generation,
            "reason": None if reason is None else str(reason),
        }
        if detail:
            rec["detail"] = detail
        line = json.dumps(rec, default=str)
        if self._file is not None:
            self._file.write(line + "\n")
            self._size += len(line) + 1  # json.dumps writes ASCII: characters are bytes
            if self._size > self._limits.max_bytes:
                self._rotate()
        if self._publish is not None:
            self._publish(line.encode())
        level = logging.WARNING if event in _WARNINGS else logging.INFO
        if logger.isEnabledFor(level):
            logger.log(level, "%s", format_text(rec))
        return rec

    def _rotate(self) -> None:
        assert self._file is not None and self._path is not None
        self._file.close()
        rotate(self._path, self._limits.backups)
        self._file = open(self._path, "a", buffering=1)
        self._size = 0

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _records(lines: Iterator[str]) -> Iterator[Record]:
    for line in lines:
        line = line.strip()
        if line:
            try:
                yield json.loads(line)
            except ValueError:
                continue  # a line cut by a full disk or a crash: the next one is whole


def read_events(path: Path) -> list[Record]:
    """Every report in `path` and its rotated copies, oldest first."""
    out: list[Record] = []
    for p in generations(path):
        try:
            with open(p) as f:
                out.extend(_records(iter(f)))
        except FileNotFoundError:
            pass  # rotated away meanwhile
    return out


def follow_events(path: Path, running: Callable[[], bool], poll: float = 0.1) -> Iterator[Record]:
    """The reports appended to `path` from now on, across rotations, until `running()` turns false."""
    f = open(path) if path.exists() else None
    if f is not None:
        f.seek(0, os.SEEK_END)
    pending = ""  # a line the writer has not finished yet
    try:
        while True:
            line = f.readline() if f is not None else ""
            if line:
                pending += line
                if pending.endswith("\n"):
                    yield from _records(iter([pending]))
                    pending = ""
                continue
            if _replaced(path, f):  # rotated: the rest of the old file was read; start the new one
                if f is not None:
                    f.close()
                f, pending = (open(path) if path.exists() else None), ""
                continue
            if not running():
                return
            time.sleep(poll)  # tailing a file: nothing to wait on but time
    finally:
        if f is not None:
            f.close()


def _replaced(path: Path, f: TextIO | None) -> bool:
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    return f is None or not os.path.samestat(now, os.fstat(f.fileno()))
