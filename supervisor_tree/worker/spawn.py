"""What the launcher hands a new worker incarnation: one frozen, picklable request.

    SpawnRequest(token=1, worker_id="counter", generation=1, start="myapp:Counter", args={},
                 run_dir=run, inbound=..., mailbox=..., control=..., heartbeat_interval=1.0)

Owns the request's shape only; the node fills it, a launcher ships it (pickle, or
cloudpickle for closures), the incarnation reads it.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from dataclasses import dataclass

from supervisor_tree.spec import DEFAULT_MAX_CONCURRENCY, Command
from supervisor_tree.wire.shapes import describe, is_a

__all__ = ["SpawnRequest", "load_target", "check_request"]


@dataclass(frozen=True, slots=True)
class SpawnRequest:
    """Everything a new incarnation needs; `start` is "module:Class" or cloudpickled bytes ("" for a command)."""

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
    command: Command | None = None  # an external program to execute instead of `start` (a port)
    output: tuple[str, str] | None = None  # FIFOs the node reads: stdout, stderr (RUN/logs/ID.log)
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY  # an asyncio worker's calls in flight at most
    mailbox_limit: int | None = None  # worker/mailbox.py: None is ZeroMQ's high-water marks only
    mailbox_overflow: str = "backpressure"  # spec.Overflow's value
    oom_score_adj: int | None = None  # set in the new process (None: keep the inherited value)


_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "token": int, "worker_id": str, "generation": int, "start": (str, bytes), "args": Mapping, "run_dir": str,
    "inbound": str, "mailbox": str, "control": str, "heartbeat_interval": (int, float), "sys_path": tuple,
    "command": (Command, type(None)), "output": (tuple, type(None)), "max_concurrency": int,
    "mailbox_limit": (int, type(None)), "mailbox_overflow": str, "oom_score_adj": (int, type(None)),
}  # a field not listed here is not checked (tests/unit/test_architecture.py keeps the table whole)


def check_request(req: object) -> str | None:
    """Why `req` (just unpickled) is not a SpawnRequest a launcher can act on, or None."""
    if not isinstance(req, SpawnRequest):
        return f"a spawn request must be a SpawnRequest; got {describe(req)}"
    for f in dataclasses.fields(req):
        value = getattr(req, f.name)
        expected = _FIELD_TYPES.get(f.name)
        if expected is not None and not is_a(value, expected):
            return f"SpawnRequest.{f.name} has the wrong type: {describe(value)}"
    return None


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
