"""A worker as a user writes it: a counter that its supervisor restarts when it crashes.

Start the tree from this directory's config (its directory goes first on sys.path, so
`start = "counter:Counter"` finds this file); then call the worker by its id:

    $ supervise start examples/counter/config.toml
    >>> client.call("counter", ("add", 5))     # a supervisor_tree.client.Client
    5

`("crash",)` raises inside the worker: watch the supervisor restart it from `start`.
"""

from __future__ import annotations

from supervisor_tree import Worker


class Counter(Worker):
    def init(self, start: int = 0) -> None:
        # `args = { start = ... }` in the config arrives here as keyword arguments.
        self.n = start

    def handle_call(self, msg: object) -> object:
        match msg:
            case ("add", int(k)):
                self.n += k
                return self.n
            case ("get",):
                return self.n
            case ("crash",):
                raise RuntimeError("asked to crash")
        raise ValueError(f"unknown call {msg!r}; try ('add', 1), ('get',) or ('crash',)")

    def handle_cast(self, msg: object) -> None:
        if msg == ("reset",):
            self.n = 0

    def handle_info(self, msg: object) -> None:
        pass  # nothing but calls and casts is sent to a counter

    def terminate(self, reason: object) -> None:
        pass  # nothing to flush: the count lives only as long as this incarnation
