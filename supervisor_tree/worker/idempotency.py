"""Which calls of a worker may be sent twice: the `idempotent` decorator and `idempotent_calls`.

Owns reading a behaviour's declaration; the running incarnation sends it to the node
(a "declare" notice, just before "ready"), which hands it to callers, whose retry
policies retry only idempotent calls (client/retry.py).

    class Store(Component):
        idempotent_calls = {"get"}         # by op name ...

        @idempotent                        # ... or by decorating the op (or handle_call: every call)
        def op_touch(self, key): ...

    declared(Store())  ->  frozenset({"get", "touch"})

An op name is the first item of a tuple message, or the "op" key of a dict message
(the components' two shapes).  `idempotent_calls = True` declares every call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

__all__ = ["idempotent", "declared", "MARK"]

F = TypeVar("F", bound=Callable[..., object])
MARK = "__supervisor_tree_idempotent__"


def idempotent(fn: F) -> F:
    """Mark an `op_<name>` method (or `handle_call`, for every call) as safe to retry."""
    setattr(fn, MARK, True)
    return fn


def declared(worker: object) -> bool | frozenset[str]:
    """The worker's declaration: True (every call), or the op names marked idempotent (maybe none)."""
    cls = type(worker)
    value = getattr(cls, "idempotent_calls", False)
    if value is True:
        return True
    names = set(value) if isinstance(value, (set, frozenset, list, tuple)) else set()
    for klass in cls.__mro__:
        for name, fn in vars(klass).items():
            if getattr(fn, MARK, False):
                if name == "handle_call":
                    return True
                if name.startswith("op_"):
                    names.add(name[3:])
    return frozenset(names)
