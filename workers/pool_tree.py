"""The pool's place in a tree, as TOML: the one shape every config that declares a pool uses.

A pool is a one_for_all supervisor `<id>_sup` holding the members' simple_one_for_one
supervisor `<id>_members` (template `<id>_member`) and then the manager `<id>`, whose
`members` argument names that supervisor.  one_for_all, because the manager's
bookkeeping is only good with its members.  `examples/pool.toml` and the default tree
spell out the same shape by hand.

    >>> print(pool_toml("pool", size=4).splitlines()[1])
    id = "pool_sup"

Keys given as None are left out (the supervisor's or the worker's default applies).
"""

from __future__ import annotations

import json


def _line(key: str, value: object) -> str:
    return "" if value is None else f"{key} = {json.dumps(value)}\n"


def pool_toml(
    id: str = "pool",
    *,
    size: int = 10,
    max_overflow: int = 5,
    overflow_ttl: float | None = None,
    intensity: int | None = 3,
    member_intensity: int | None = 50,
    period: int | None = 10,
    member_shutdown: object = 2000,
    manager_shutdown: object = 5000,
    manager_args: dict[str, object] | None = None,
) -> str:
    """A `[[tree.children]]` entry of the root declaring a pool (see the module docstring); `manager_args`:
    more of the manager's init args (batch, spread, ...: workers/pool.py)."""
    args: dict[str, object] = {"members": f"{id}_members", "size": size, "max_overflow": max_overflow}
    if overflow_ttl is not None:
        args["overflow_ttl"] = overflow_ttl
    args.update(manager_args or {})
    args_toml = ", ".join(f"{k} = {json.dumps(v)}" for k, v in args.items())
    return (
        f'[[tree.children]]\nid = "{id}_sup"\ntype = "supervisor"\nstrategy = "one_for_all"\n'
        f"{_line('intensity', intensity)}{_line('period', period)}\n"
        f'[[tree.children.children]]\nid = "{id}_members"\ntype = "supervisor"\nstrategy = "simple_one_for_one"\n'
        f"{_line('intensity', member_intensity)}{_line('period', period)}\n"
        f'[[tree.children.children.children]]\nid = "{id}_member"\nstart = "supervisor_tree.workers.pool_member:PoolMember"\n'
        f"{_line('shutdown', member_shutdown)}\n"
        f'[[tree.children.children]]\nid = "{id}"\nstart = "supervisor_tree.workers.pool:PoolManager"\n'
        f"args = {{ {args_toml} }}\n{_line('shutdown', manager_shutdown)}"
    )
