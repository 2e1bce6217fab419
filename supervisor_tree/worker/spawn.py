"""What the launcher hands a new worker incarnation: one frozen, picklable request.

    SpawnRequest(token=1, worker_id="counter", generation=1, start="myapp:Counter", args={},
                 run_dir=run, inbound=..., mailbox=..., control=..., heartbeat_interval=1.0)

Owns the request's shape only; the node fills it, a launcher ships it (pickle, or
cloudpickle for closures), the incarnation reads it.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["SpawnRequest", "load_target"]


@dataclass(frozen=True, slots=True)
class SpawnRequest:
    """Everything a new incarnation needs; `start` is "module:Class" or cloudpickled bytes."""

    token: int
    worker_id: str
    generation: int
    start: str | bytes
    args: Mapping[str, object]
    run_dir: str
    inbound: str
    mailbox: str
    control: str
    heartbeat_interval: float
    sys_path: tuple[str, ...] = ()
    oom_score_adj: int | None = None  # set in the new process (None: keep the inherited value)


def load_target(start: str | bytes) -> object:
    """What `start` names: "module:Qualified.name" imported, or cloudpickled bytes loaded."""
    if isinstance(start, bytes):
        import cloudpickle

        return cloudpickle.loads(start)
    module_name, _, qualname = start.partition(":")
    obj: object = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj
