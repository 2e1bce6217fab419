"""The pool manager's records (workers/pool.py): a member's state, the requests waiting, the runs in flight.

Plain data: owns no behaviour and talks to no process.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from supervisor_tree.workers._component import Token

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
    jobs: list[tuple[int, int]] = field(default_factory=list)  # (ticket, chunk) of the batch it runs, while busy
    holder: tuple[int | None, int] | None = None  # (pid, ref) while out; pid None: no holder watched
    idle_since: float = 0.0


@dataclass(slots=True)
class Ticket:
    token: Token
    task: str
    many: bool
    results: list[Any] = field(default_factory=list)
    pending: int = 0
    direct: bool = False  # one member answers the caller itself; the manager only answers its death
