"""The node's records (a running supervisor, a worker incarnation) and the view its extensions get.

`NodeState` is what the control server and the profile triggers may read and do:
they are handed the node, typed as this protocol, so neither imports the loop.

Invariant: a `WorkerRec` is reachable by token until the launcher names its pid, then
by pid until it is reaped; `by_id` holds the newest incarnation of each worker id.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from supervisor_tree.node.eventlog import EventLog
from supervisor_tree.node.launchers.base import Launcher
from supervisor_tree.otp import supervisor as sv
from supervisor_tree.spec import ChildSpec, ExitReason, NodeSpec
from supervisor_tree.wire.dropped import Dropped

__all__ = ["SupHandle", "SupRun", "Phase", "WorkerRec", "NodeState"]


@dataclass(eq=False)
class SupHandle:
    """The "pid" of a nested supervisor: it lives in the node, not in a process."""

    path: str
    generation: int

    def __repr__(self) -> str:
        return f"<supervisor {self.path}#{self.generation}>"


@dataclass(eq=False)
class SupRun:
    path: str
    state: sv.SupervisorState
    parent: str | None
    key: str | None
    handle: SupHandle | None
    ready: bool = False


class Phase(enum.Enum):
    SPAWNING = "spawning"  # forked or about to be, not ready yet
    RUNNING = "running"  # said ready
    DONE = "done"  # its end has been fed to its supervisor (or it is abandoned)


@dataclass(eq=False)
class WorkerRec:
    worker_id: str
    sup: str | None  # None once abandoned (its supervisor was killed)
    generation: int
    spec: ChildSpec
    token: int
    mailbox: str
    control: str
    pid: int | None = None
    phase: Phase = Phase.SPAWNING
    spawned_at: float = field(default_factory=time.monotonic)
    ready_at: float | None = None
    last_beat: float = 0.0
    stats: dict[str, object] = field(default_factory=dict)
    hung: bool = False
    last_exit: ExitReason | None = None
    # CLOCK_MONOTONIC ns of the steps of this incarnation's start, carried in its "started" report
    # (detail.mono_ns): "woke" and "reaped" (the node's loop woke on, then reaped, the incarnation this
    # one replaces), "spawning" (the supervisor decided to start it), "ready_seen" (its "ready" read).
    marks: dict[str, int] = field(default_factory=dict)
    host: str = ""  # where a placed worker runs ("HOSTNAME/IP NODE"); "" is this machine
    early: tuple[str, tuple[object, ...]] | None = None  # a placed worker's "ready" that beat its Spawned (endpoints)


class NodeState(Protocol):
    """The node as its extensions see it (implemented by `node.Node`)."""

    spec: NodeSpec
    run_dir: Path
    sups: dict[str, SupRun]
    by_id: dict[str, WorkerRec]
    by_pid: dict[int, WorkerRec]
    launcher: Launcher
    started: bool
    stopping: bool
    exit_reason: ExitReason | None
    events: EventLog | None
    inbound_dropped: Dropped  # notices not acted on (no tag, wrong shape)

    def feed(self, path: str, event: object) -> None: ...
    def set_timer(self, owner: str, key: tuple[object, ...], delay: float) -> None: ...
    def request_stop(self) -> None: ...
