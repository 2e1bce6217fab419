"""The line format of a worker's log file, RUN/logs/ID.log: written by the node, read by `supervise logs`.

One line per line of output, whatever the incarnation, newest last:

    2025-06-01T12:00:01.234 ext#2 out Serving HTTP on 127.0.0.1 port 8123
    2025-06-01T12:00:01.240 db#1 log WARNING myapp.db: slow query (1.2 s)
    2025-06-01T12:00:03.002 ext#2 sys --- exited: killed ---

Fields: local time (ms), id#generation, stream (out, err, log for Python `logging`
records, sys for the node's markers: an incarnation starting, exiting), then the text
as written.  Ids have no spaces (spec.check_id), so a line splits on its first three
spaces.  Rotated copies are ID.log.1 (newest) .. ID.log.N.

    >>> line = format_line(0.0, "ext", 2, "out", "hello")
    >>> parse_line(line).text, parse_line(line).generation
    ('hello', 2)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

__all__ = ["LogLine", "STREAMS", "format_line", "parse_line", "log_path", "log_files"]

STREAMS = ("out", "err", "log", "sys")


@dataclass(frozen=True, slots=True)
class LogLine:
    ts: float
    worker_id: str
    generation: int
    stream: str
    text: str

    def to_json(self) -> dict[str, object]:
        return {"ts": round(self.ts, 3), "time": _iso(self.ts), "id": self.worker_id, "generation": self.generation,
                "stream": self.stream, "line": self.text}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts).isoformat(timespec="milliseconds")


def format_line(ts: float, worker_id: str, generation: int, stream: str, text: str) -> str:
    return f"{_iso(ts)} {worker_id}#{generation} {stream} {text}"


def parse_line(line: str) -> LogLine | None:
    """The fields of one line of a log file, or None for a line that is not ours (torn, foreign)."""
    parts = line.rstrip("\n").split(" ", 3)
    if len(parts) < 3:
        return None
    stamp, who, stream = parts[:3]
    worker_id, sep, gen = who.rpartition("#")
    if not sep or not gen.isdigit() or stream not in STREAMS:
        return None
    try:
        ts = datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return None
    return LogLine(ts, worker_id, int(gen), stream, parts[3] if len(parts) == 4 else "")


def log_path(run_dir: Path, worker_id: str) -> Path:
    return run_dir / "logs" / f"{worker_id}.log"


def log_files(run_dir: Path, worker_id: str) -> list[Path]:
    """The worker's log file and its rotated copies, oldest first."""
    current = log_path(run_dir, worker_id)
    rotated = sorted(current.parent.glob(f"{worker_id}.log.*"),
                     key=lambda p: int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0, reverse=True)
    return [p for p in rotated if p.suffix[1:].isdigit()] + ([current] if current.exists() else [])
