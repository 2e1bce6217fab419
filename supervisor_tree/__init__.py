"""supervisor_tree: Erlang/OTP's supervision model for Python, one OS process per worker.

    from supervisor_tree import Worker

    class Counter(Worker):
        def init(self, start=0):
            self.n = start
        def handle_call(self, msg):
            self.n += msg
            return self.n
"""

from supervisor_tree import spec as _spec
from supervisor_tree.spec import *  # noqa: F403 - the public vocabulary: specs, enums, exit reasons
from supervisor_tree.worker.behaviour import IGNORE as IGNORE  # "as": explicit re-exports
from supervisor_tree.worker.behaviour import NOREPLY as NOREPLY
from supervisor_tree.worker.behaviour import Worker as Worker
from supervisor_tree.worker.idempotency import idempotent as idempotent

__all__ = ["Worker", "IGNORE", "NOREPLY", "idempotent"] + sorted(
    name
    for name, value in vars(_spec).items()
    if not name.startswith("_")
    and getattr(value, "__module__", _spec.__name__) == _spec.__name__
    and not isinstance(value, type(_spec))
)
