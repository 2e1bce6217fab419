"""Workers the group-restart tests run (imported by the node as tests.integration.group_workers)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from supervisor_tree import Worker
from supervisor_tree.spec import ExitReason


def _alive(pid: int) -> bool:
    """Running (not yet dead, not a zombie waiting to be reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


class Recorder(Worker):
    """Appends to `journal` (one JSON object a line) when its init runs and when it is asked to stop,
    with which of its siblings' newest incarnations are alive then.  Its init fails once if
    `fail_once` exists (removing it)."""

    def init(self, journal: str, fail_once: str = "") -> None:
        self.journal = Path(journal)
        if fail_once and os.path.exists(fail_once):
            os.unlink(fail_once)
            self._write({"ev": "init_failed"})
            raise RuntimeError(f"{fail_once} existed")
        self._write({"ev": "init"})

    def handle_call(self, msg: object) -> object:
        return os.getpid()

    def terminate(self, reason: ExitReason) -> None:
        newest: dict[str, int] = {}
        for line in self.journal.read_text().splitlines():
            rec = json.loads(line)
            if rec["ev"] == "init":
                newest[rec["id"]] = rec["pid"]
        alive = sorted(w for w, pid in newest.items() if w != self.id and _alive(pid))
        self._write({"ev": "term", "alive": alive})

    def _write(self, rec: dict[str, object]) -> None:
        line = json.dumps({**rec, "id": self.id, "gen": self.generation, "pid": os.getpid()}) + "\n"
        with self.journal.open("a") as f:  # one write of one line: the lines of the group do not interleave
            f.write(line)
