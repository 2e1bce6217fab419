"""What a Python worker starts dies with it, however it ends, and with the node: no orphans, no zombies.

Real trees (`supervise start --detach`), real processes and signals: the worker starts a
`sleep` as its child and another through a shell that exits (the node, a child
subreaper, becomes that one's parent).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil
import pytest
from nodes import Tree, dead, started, wait_for, write_config

pytestmark = pytest.mark.timeout(120)

TREE = """\
[node]
heartbeat = { interval = 0.2, misses = 5 }

[tree]
strategy = "one_for_one"
intensity = 10
period = 10

[[tree.children]]
id = "parent"
start = "tests.integration.family_workers:Parent"
shutdown = 2000
"""


@pytest.fixture
def tree(tmp_path: Path):  # type: ignore[no-untyped-def]
    t = started(write_config(tmp_path, TREE))
    yield t
    t.stop()


def _family(t: Tree, n: int) -> list[int]:
    return [t.client.call("parent", (kind, ["sleep", str(300 + n)])) for kind in ("child", "orphan")]


def _reaped(pid: int) -> bool:
    return not psutil.pid_exists(pid)


def _zombies_under(parent: int) -> list[int]:
    found = []
    for proc in psutil.process_iter(["ppid", "status"]):
        if proc.info["ppid"] == parent and proc.info["status"] == psutil.STATUS_ZOMBIE:
            found.append(proc.pid)
    return found


def test_what_a_killed_worker_started_is_killed_and_reaped(tree: Tree) -> None:
    node = tree.node_pid()
    child, orphan = _family(tree, 1)
    assert psutil.Process(orphan).ppid() == node  # its shell is gone: the node (a subreaper) adopted it
    os.kill(tree.pid_of("parent"), signal.SIGKILL)
    tree.wait_started("parent", 2)
    assert wait_for(lambda: _reaped(child) and _reaped(orphan), what="the worker's child and orphan reaped")
    assert not _zombies_under(node)
    assert dead(child) and dead(orphan)


def test_what_a_stopped_worker_started_dies_with_it(tree: Tree) -> None:
    node = tree.node_pid()
    assert node is not None
    family = _family(tree, 2)
    stopped = tree.cli("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert wait_for(lambda: all(dead(p) for p in family), what="what the worker started gone with the tree")


def test_what_a_worker_started_dies_with_a_killed_node(tree: Tree) -> None:
    node = tree.node_pid()
    assert node is not None
    family = _family(tree, 3)
    os.kill(node, signal.SIGKILL)
    assert wait_for(lambda: all(dead(p) for p in family), what="what the worker started gone with the node")
