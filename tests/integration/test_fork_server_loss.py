"""The node survives its fork server: SIGKILL of the fork server, under calls and in a crash loop.

Real nodes started as a user starts them (`supervise start --detach`); the fork server
is found by its process title and killed with real signals.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
from pathlib import Path
from typing import Any

import pytest
from nodes import Tree, children_by_role, dead, fork_server_of, title_of, wait_for

from supervisor_tree.client import Client

pytestmark = pytest.mark.timeout(120)

PUPPET = "supervisor_tree.workers.puppet:Puppet"


def puppet(worker_id: str, header: str = "[[tree.children]]", shutdown: str = '"brutal_kill"') -> str:
    return f'{header}\nid = "{worker_id}"\nstart = "{PUPPET}"\nshutdown = {shutdown}\n'


def tree_toml(name: str, intensity: int, period: int, *children: str, preload: str = "") -> str:
    node = f'[node]\nname = "{name}"\n' + (f"preload = [{preload!r}]\n".replace("'", '"') if preload else "")
    return node + f"[tree]\nintensity = {intensity}\nperiod = {period}\n\n" + "\n".join(children)


def events_named(tree: Tree, name: str) -> list[dict[str, Any]]:
    return [e for e in tree.events() if e["event"] == name]


def test_sigkill_of_the_fork_server_under_calls_leaves_the_tree_serving(start_tree: Any) -> None:
    group = ('[[tree.children]]\nid = "g"\ntype = "supervisor"\nstrategy = "one_for_all"\nintensity = 5\nperiod = 10\n'
             + puppet("d", "[[tree.children.children]]") + puppet("e", "[[tree.children.children]]"))
    tree = start_tree(tree_toml("serving", 5, 10, puppet("a"), puppet("b"), group))
    node = tree.node_pid()
    assert node is not None
    pids = {w: tree.pid_of(w) for w in ("a", "b", "d", "e")}
    answered, errors, done = [0], [], threading.Event()

    def calls() -> None:
        with Client(tree.run_dir, timeout=10.0) as c:
            while not done.is_set():
                try:
                    assert c.call("a", {"cmd": "echo", "value": answered[0]}) == answered[0]
                    answered[0] += 1
                except Exception as exc:  # noqa: BLE001 - collected: the test asserts there are none
                    errors.append(exc)

    caller = threading.Thread(target=calls)
    caller.start()
    try:
        wait_for(lambda: answered[0] >= 20, 20, "calls to flow")
        server = fork_server_of(node)
        os.kill(server, signal.SIGKILL)
        restarted = tree.wait_event(lambda e: e["event"] == "fork_server_restarted", 20, "a new fork server")
        lost = events_named(tree, "fork_server_lost")
        assert [(e["pid"], e["reason"], e["detail"]["lost_spawns"]) for e in lost] == [(server, "killed", 0)]
        assert restarted["detail"]["previous"] == server
        assert fork_server_of(node) == restarted["pid"] != server
        assert title_of(restarted["pid"]) == "supervise[serving] fork-server"
        assert {w: tree.pid_of(w) for w in pids} == pids  # running workers went on, nothing restarted
        assert not events_named(tree, "exited")

        # The tree still heals: the old fork server's standbys are gone, the new one makes the next processes.
        standbys = children_by_role(node).get("standby", [])
        for pid in standbys:
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: all(dead(p) for p in standbys), 10, "the old standbys to die")
        os.kill(pids["d"], signal.SIGKILL)  # one_for_all: d and e are restarted together
        tree.wait_started("d", 2)
        tree.wait_started("e", 2)
        before = answered[0]
        wait_for(lambda: answered[0] >= before + 20, 20, "calls after the restart")
    finally:
        done.set()
        caller.join(30)
    assert errors == []
    assert tree.client.call("d", {"cmd": "echo", "value": "after"}) == "after"
    new_d = tree.pid_of("d")
    assert title_of(new_d) == "supervise[serving] d#2"
    assert tree.node_pid() == node and tree.running()


def test_a_spawn_lost_with_the_fork_server_counts_against_intensity_and_the_crash_loop_escalates(start_tree: Any) -> None:
    tree = start_tree(tree_toml("loop", 3, 60, puppet("p")))
    node = tree.node_pid()
    assert node is not None
    crash = {"cmd": "raise", "message": "crash"}

    tree.client.cast("p", crash)  # restart 1
    tree.wait_started("p", 2)

    # Restart 2 goes to a fork server that cannot answer (stopped), with no standby to take it; then it dies.
    server = fork_server_of(node)
    os.kill(server, signal.SIGSTOP)
    standbys = children_by_role(node).get("standby", [])
    for pid in standbys:
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: all(dead(p) for p in standbys), 10, "the standbys to die")
    tree.client.cast("p", crash)
    tree.wait_event(lambda e: e["event"] == "restarting" and e["child"] == "p" and e["generation"] == 2, 20,
                    "the spawn of p#3 to be sent")
    os.kill(server, signal.SIGKILL)

    failed = tree.wait_event(lambda e: e["event"] == "start_error" and e["child"] == "p", 20, "p#3 to fail")
    assert failed["generation"] == 3 and failed["reason"].startswith(f"fork_server_lost: the fork server (pid {server}) died (killed)")
    lost = tree.wait_event(lambda e: e["event"] == "fork_server_lost", 20, "the fork server's loss")
    assert lost["detail"]["lost_spawns"] == 1
    tree.wait_started("p", 4, timeout=30)  # restart 3: the retry, through the new fork server

    tree.client.cast("p", crash)  # restart 4 > intensity 3: the root gives up
    stop = tree.wait_event(lambda e: e["event"] == "node_stop", 30, "the node to stop")
    assert stop["reason"] == ('supervisor root reached its restart limit (3 restarts in 60 s): '
                              'child "p" last exited {error,RuntimeError: crash}')
    assert [t for t in tree.trace() if "#" in t or "reached" in t] == [
        "started p#1", "exited p#1 {error,RuntimeError: crash}", "child_terminated p#1 {error,RuntimeError: crash}",
        "started p#2", "exited p#2 {error,RuntimeError: crash}", "child_terminated p#2 {error,RuntimeError: crash}",
        f"start_error p#3 {failed['reason']}",
        "started p#4", "exited p#4 {error,RuntimeError: crash}", "child_terminated p#4 {error,RuntimeError: crash}",
        "reached_max_restart_intensity p#4 {error,RuntimeError: crash}",
    ]
    wait_for(lambda: not tree.running(), 30, "the node to exit")


def test_a_fork_server_that_cannot_be_started_again_ends_the_node_with_that_reason(start_tree: Any, tmp_path: Path) -> None:
    (tmp_path / "prodmod.py").write_text("LOADED = True\n")
    tree = start_tree(tree_toml("fragile", 5, 10, puppet("p", shutdown="2000"), preload="prodmod"))
    node = tree.node_pid()
    assert node is not None
    (tmp_path / "prodmod.py").unlink()  # a replacement fork server cannot preload it any more
    shutil.rmtree(tmp_path / "__pycache__", ignore_errors=True)
    server = fork_server_of(node)
    os.kill(server, signal.SIGKILL)
    stop = tree.wait_event(lambda e: e["event"] == "node_stop", 30, "the node to stop")
    assert stop["reason"].startswith(f"fork_server_lost: the fork server (pid {server}) died and a new one could not start: ")
    assert "preloading failed: ModuleNotFoundError: No module named 'prodmod'" in stop["reason"]
    assert stop["detail"]["on_request"] is False
    exited = [e for e in tree.events() if e["event"] == "exited" and e["child"] == "p"]
    assert [e["reason"] for e in exited] == ["shutdown"]  # the tree was stopped in order, not killed
    wait_for(lambda: not tree.running(), 30, "the node to exit")
