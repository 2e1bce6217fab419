"""A resolved incarnation of a worker, as a client holds it: `Target`.

Owns turning the node's `resolve` answer (JSON) into a Target, and the pidfd that says
when that incarnation died.  Opens no socket; the Client (client.py) caches Targets
and lets go of a dead one's sockets.
"""

from __future__ import annotations

import os
import select
from dataclasses import dataclass, field
from typing import Any

from supervisor_tree.client.errors import NotAWorker
from supervisor_tree.spec import RetryPolicy

__all__ = ["Target", "open_pidfd"]


@dataclass
class Target:
    """A resolved incarnation: its pid, generation, endpoints, and a pidfd that tells when it died."""

    worker_id: str
    pid: int
    generation: int
    mailbox: str
    control: str
    retry: RetryPolicy | None
    pidfd: int | None
    command: str | None = None  # an external program (a port): it has a pid, but no mailbox
    host: str | None = None  # placed on another host ([node] backend = "ray"): its pid is that host's
    _watch: select.poll | None = field(default=None, repr=False, compare=False)  # polls the pidfd: made once

    def refuse_messages(self) -> None:
        """Raise NotAWorker for an external program: only Python workers take calls and casts."""
        if self.command is not None:
            raise NotAWorker(f"worker {self.worker_id!r} runs a program ({self.command}): it takes no calls, "
                             "casts or control requests; its pid, signals, events and logs are all there is")


    def dead(self) -> bool:
        """Whether this incarnation died (its pidfd is readable); asked before every call, so one poll syscall."""
        if self.pidfd is None:
            return True
        watch = self._watch
        if watch is None:
            watch = self._watch = select.poll()
            watch.register(self.pidfd, select.POLLIN)
        return bool(watch.poll(0))

    @classmethod
    def of_answer(cls, worker_id: str, info: dict[str, Any]) -> Target:
        """The incarnation the node's `resolve` answered (JSON: the policy rebuilt), its pidfd opened."""
        retry = info.get("retry")
        policy = RetryPolicy.from_json(retry) if isinstance(retry, dict) else None
        return cls(worker_id, info["pid"], info["generation"], info["mailbox"], info["control"], policy,
                   None if info.get("host") else open_pidfd(info["pid"]), info.get("command"), info.get("host"))

    def close(self) -> None:
        self._watch = None
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


def open_pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return None
