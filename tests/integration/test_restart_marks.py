"""Where a restart's time goes, as a user reads it: the marks in the `started` report and the worker's `marks` op.

Also that the restart path's reordering (a dead incarnation's output is read after its
successor's request went out) still puts the stderr tail into the `exited` report.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest
from nodes import Tree, started, wait_for, write_config

from supervisor_tree.client import CalleeExited, CallError, Client

PUPPET = "supervisor_tree.workers.puppet:Puppet"
CONFIG = f'[tree]\nintensity = 100\nperiod = 10\n\n[[tree.children]]\nid = "p"\nstart = "{PUPPET}"\nshutdown = "brutal_kill"\n'


@pytest.fixture
def tree(tmp_path: Path):  # type: ignore[no-untyped-def]
    t = started(write_config(tmp_path, CONFIG))
    yield t
    t.stop()


def test_a_restart_after_sigkill_carries_its_steps_on_one_clock(tree: Tree) -> None:
    first = tree.client.resolve("p")
    tree.client.call("p", {"cmd": "echo", "value": 1})
    os.kill(first.pid, signal.SIGKILL)
    second = tree.client.resolve("p", after_generation=first.generation, timeout=20)
    assert tree.client.call("p", {"cmd": "echo", "value": 2}) == 2
    started = tree.wait_started("p", second.generation)
    node = started["detail"]["mono_ns"]  # the node's marks: its loop woke, reaped, decided, read "ready"
    worker = tree.client.control_worker("p", "marks", {})  # the worker's: request read, sockets, "ready" sent
    assert node["woke"] <= node["reaped"] <= node["spawning"] <= node["ready_seen"], node
    assert worker["activated"] <= worker["sockets"] <= worker["ready"], worker
    # one monotonic clock for every process of the host: the steps interleave in order
    assert node["spawning"] <= worker["activated"] and worker["ready"] <= node["ready_seen"], (node, worker)
    shown = tree.cli("events")
    assert shown.returncode == 0, shown.stderr
    assert "mono_ns" not in shown.stdout  # the text form leaves the marks to the JSON


def test_a_crash_still_reports_its_stderr_tail(tree: Tree) -> None:
    first = tree.client.resolve("p")
    with pytest.raises(CallError):
        tree.client.call("p", {"cmd": "raise", "message": "boom from the puppet"})
    tree.client.resolve("p", after_generation=first.generation, timeout=20)
    exited = tree.wait_event(lambda e: e["event"] == "exited" and e["generation"] == first.generation)
    assert any("boom from the puppet" in line for line in exited["detail"]["tail"]), exited


def test_a_resolve_waiting_through_a_restart_gets_the_new_incarnation_and_the_dead_ones_call_stays_dead(
        tree: Tree, tmp_path: Path) -> None:
    # The node answers a waiting resolve as soon as the new incarnation says "ready", before its
    # supervisor's reports are written; a call the killed one was serving still fails, and only there.
    first = tree.client.resolve("p")
    mark = tmp_path / "hanging"
    outcome: list[object] = []

    def hang() -> None:
        with Client(tree.run_dir, timeout=30.0) as other:
            try:
                outcome.append(other.call("p", {"cmd": "hang", "mark": str(mark)}))
            except Exception as exc:  # noqa: BLE001 - the test looks at what it was
                outcome.append(exc)

    caller = threading.Thread(target=hang)
    caller.start()
    wait_for(mark.exists, what="the hanging call to reach the worker")
    os.kill(first.pid, signal.SIGKILL)
    second = tree.client.resolve("p", after_generation=first.generation, timeout=20)
    assert second.generation == first.generation + 1 and second.pid != first.pid
    assert tree.client.call("p", {"cmd": "count"}) == 1  # the new incarnation's first call: nothing else reached it
    caller.join(30)
    assert len(outcome) == 1 and isinstance(outcome[0], CalleeExited), outcome
    assert (outcome[0].pid, outcome[0].generation) == (first.pid, first.generation)
    assert tree.wait_started("p", second.generation)["pid"] == second.pid
