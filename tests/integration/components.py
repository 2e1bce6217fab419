"""Helpers of the component tests: tree configs with the built-in components, and the fixture that runs them."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from nodes import Tree, Trees

from supervisor_tree.workers.pool_tree import pool_toml

HEAD = """[node]
heartbeat = { interval = 0.2, misses = 10 }
preload = ["supervisor_tree.workers.registry", "supervisor_tree.workers.queue", "supervisor_tree.workers.session", "supervisor_tree.workers.pool", "supervisor_tree.workers.pool_member"]

[tree]
strategy = "one_for_one"
intensity = 20
period = 10
"""


def _args(args: dict[str, Any]) -> str:
    return "args = { " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in args.items()) + " }"


def worker(id: str, start: str, restart: str = "permanent", **args: Any) -> str:
    lines = ["[[tree.children]]", f'id = "{id}"', f'start = "{start}"', f'restart = "{restart}"', "shutdown = 2000"]
    if args:
        lines.append(_args(args))
    return "\n".join(lines)


def pool(size: int = 2, max_overflow: int = 1, overflow_ttl: float = 0.3, id: str = "pool", **manager_args: Any) -> str:
    """A pool as examples/pool.toml declares one: a one_for_all supervisor of the members' sofo and the manager."""
    return pool_toml(id, size=size, max_overflow=max_overflow, overflow_ttl=overflow_ttl, manager_args=manager_args)


@pytest.fixture
def start_tree(tmp_path: Path) -> Iterator[Callable[..., Tree]]:
    """Trees of the components' children (after HEAD), stopped when the test ends."""
    trees = Trees(tmp_path)
    yield lambda *children: trees(HEAD + "\n" + "\n\n".join(children) + "\n")
    trees.stop_all()
