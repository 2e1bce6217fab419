"""Supervisor reports: one record shape, written as JSON lines and logged as text.

Owns `EventLog`, the only writer of RUN/events.jsonl.  Every report has the fixed
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
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

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
    extra = " " + " ".join(f"{k}={v}" for k, v in detail.items()) if isinstance(detail, dict) and detail else ""
    return f"{ts}.{ms:03d} {who}{pid} {rec['event']}{reason}{extra}"


class EventLog:
    """Numbers, stores and fans out reports.  `path` None keeps them in memory only."""

    def __init__(self, path: Path | None, publish: Callable[[bytes], None] | None = None) -> None:
        self._seq = 0
        self._file: TextIO | None = open(path, "a", buffering=1) if path else None
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
        if self._publish is not None:
            self._publish(line.encode())
        level = logging.WARNING if event in _WARNINGS else logging.INFO
        if logger.isEnabledFor(level):
            logger.log(level, "%s", format_text(rec))
        return rec

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_events(path: Path) -> list[Record]:
    out: list[Record] = []
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    out.append(json.loads(line))
    except FileNotFoundError:
        pass
    return out
