"""The node's supervisor reports, read as they are appended to RUN/events.jsonl.

Owns `EventTail`: an offset into the file, new records on each `poll()`, and the
restart count of each child since the node (re)started.  It only reads the file the
node writes; it never imports the node and never blocks.

    tail = EventTail(run_dir / "events.jsonl")
    for rec in tail.poll():            # every record the first time, then only new ones
        print(rec["event"], rec["child"])
    tail.restarts["db"]                # "restarting" reports for db since node_started
    tail.escalations["root/core"]      # times that supervisor reached its restart intensity
    tail.restarts_since("db", time.time() - 60)
"""

from __future__ import annotations

import json
import os
from collections import Counter, deque
from pathlib import Path

__all__ = ["EventTail", "Record"]

Record = dict[str, object]


class EventTail:
    """New records of an events.jsonl file since the last poll; keeps the last `keep` of this node run's.

    Invariant: `offset` is always at a line boundary: a line the node has only half
    written is left for the next poll.
    """

    def __init__(self, path: Path, keep: int = 200) -> None:
        self.path = path
        self.offset = 0
        self.inode: int | None = None
        self.recent: deque[Record] = deque(maxlen=keep)
        self.restarts: Counter[str] = Counter()  # child id -> "restarting" reports
        self.restart_times: dict[str, deque[float]] = {}  # child id -> wall-clock times of its last restarts
        self.escalations: Counter[str] = Counter()  # supervisor path -> reached_max_restart_intensity
        self.kinds: Counter[str] = Counter()  # event name -> count

    def poll(self, max_bytes: int = 4 << 20) -> list[Record]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return []
        out: list[Record] = []
        if st.st_ino != self.inode or st.st_size < self.offset:
            rotated = self.path.with_name(self.path.name + ".1")
            try:
                was_rotated = self.inode is not None and os.stat(rotated).st_ino == self.inode
            except FileNotFoundError:
                was_rotated = False
            if was_rotated:  # the node rotated the file ([node] logs): read what we had not, then the new one
                out += self._read(rotated, max_bytes)
            else:  # a new file (a new run dir, or truncated)
                self.restarts.clear()
                self.restart_times.clear()
                self.escalations.clear()
                self.kinds.clear()
            self.inode, self.offset = st.st_ino, 0
        if st.st_size == self.offset:
            return out
        return out + self._read(self.path, max_bytes)

    def _read(self, path: Path, max_bytes: int) -> list[Record]:
        with open(path, "rb") as f:
            f.seek(self.offset)
            chunk = f.read(max_bytes)
        end = chunk.rfind(b"\n") + 1
        self.offset += end
        out: list[Record] = []
        for line in chunk[:end].splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # not ours to judge: `supervise events` shows the file as it is
            if isinstance(rec, dict):
                self._count(rec)
                out.append(rec)
                self.recent.append(rec)
        return out

    def restarts_since(self, child: str, since: float) -> int:
        """Restarts of `child` at or after wall-clock time `since` (of its last 100)."""
        return sum(1 for t in self.restart_times.get(child, ()) if t >= since)

    def _count(self, rec: Record) -> None:
        event = rec.get("event")
        if event == "node_started":  # counts are per node run (events.jsonl is appended across runs)
            self.recent.clear()
            self.restarts.clear()
            self.restart_times.clear()
            self.escalations.clear()
            self.kinds.clear()
        self.kinds[str(event)] += 1
        if event == "restarting" and isinstance(rec.get("child"), str):
            child = str(rec["child"])
            self.restarts[child] += 1
            ts = rec.get("ts")
            self.restart_times.setdefault(child, deque(maxlen=100)).append(float(ts) if isinstance(ts, (int, float)) else 0.0)
        elif event == "reached_max_restart_intensity" and isinstance(rec.get("supervisor"), str):
            self.escalations[str(rec["supervisor"])] += 1
