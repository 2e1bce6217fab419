"""The pool manager's records (workers/pool.py): a member's state, the requests waiting, the runs in flight.

Plain data: owns no behaviour and talks to no process.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from supervisor_tree.workers._component import Token
from supervisor_tree.workers.pool_member import Job

__all__ = ["State", "Kind", "Request", "Member", "Ticket"]


class State(enum.Enum):
    IDLE = "idle"
    BUSY = "busy"  # running a job
    OUT = "out"  # checked out
    DOWN = "down"  # exited; its supervisor restarts it


class Kind(enum.Enum):
    CHECKOUT = "checkout"
    RUN = "run"
    RUN_MANY = "run_many"


@dataclass(slots=True, eq=False)  # identity: a request is found in the waiting line by itself
class Request:
    """A request waiting for a member (every request passes through the waiting line)."""

    kind: Kind
    token: Token
    deadline: float | None
    task: str = ""
    args: Any = ()
    chunk: int = 1
    holder: int | None = None  # checkout: the pid whose death checks the member back in


@dataclass(slots=True)
class Member:
    key: str
    pid: int
    generation: int
    overflow: bool
    state: State = State.IDLE
    jobs: list[Job] = field(default_factory=list)  # the batch it runs, while busy (answered by it, or at its death)
    holder: tuple[int | None, int] | None = None  # (pid, ref) while out; pid None: no holder watched
    idle_since: float = 0.0


@dataclass(slots=True)
class Ticket:
    """A run_many split over several members: the parts' values gathered, then one answer."""

    token: Token
    task: str
    results: list[Any]
    pending: int
