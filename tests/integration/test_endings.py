"""Clear endings: how a node stopped, said by its node_stop event and by the CLI.

The supervisor that gave up, the child whose exits used up its restart intensity,
that child's last exit reason and the limit; a failed `start --detach` with the
worker's whole traceback; a stop by signal.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
from nodes import REPO, SUPERVISE, Tree, wait_for, write_config

pytestmark = pytest.mark.timeout(120)

PUPPET = "supervisor_tree.workers.puppet:Puppet"
NESTED = f"""
[node]
name = "endings"

[tree]
intensity = 0
period = 10

[[tree.children]]
id = "mid"
type = "supervisor"
intensity = 1
period = 10

[[tree.children.children]]
id = "p"
start = "{PUPPET}"
"""
GIVE_UP = ('supervisor root reached its restart limit (0 restarts in 10 s): child "mid" last exited shutdown; '
           'supervisor root/mid reached its restart limit (1 restart in 10 s): child "p" last exited {error,RuntimeError: boom}')


def test_a_tree_that_gives_up_names_supervisor_child_last_reason_and_limit(tmp_path: Path) -> None:
    tree = Tree(write_config(tmp_path, NESTED))
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([*SUPERVISE, "start", str(tree.config), "--run-dir", str(tree.run_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        tree.wait_event(lambda e: e["event"] == "tree_started", 30, "the tree to start")
        for generation in (1, 2):
            tree.wait_started("p", generation)
            tree.client.cast("p", {"cmd": "raise", "message": "boom"})
        _, err = proc.communicate(timeout=60)
        events = tree.events()
        status = tree.cli("status")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        tree.stop()
    assert proc.returncode == 1
    assert err.splitlines()[-1] == f"supervise: the node stopped: {GIVE_UP}"
    assert status.returncode == 3 and status.stderr.rstrip().endswith(f": {GIVE_UP}")  # said again, afterwards
    assert "; the last one stopped at " in status.stderr
    gave_up = [e for e in events if e["event"] == "reached_max_restart_intensity"]
    assert [(e["supervisor"], e["child"], e["reason"], e["detail"]["limit"]) for e in gave_up] == [
        ("root/mid", "p", "{error,RuntimeError: boom}", "1 restart in 10 s"),
        ("root", "mid", "shutdown", "0 restarts in 10 s"),
    ]
    mid_exit = next(e for e in events if e["event"] == "supervisor_exited" and e["supervisor"] == "root/mid")
    assert mid_exit["detail"]["gave_up"].startswith("supervisor root/mid reached its restart limit (1 restart in 10 s)")
    stop = events[-1]
    assert stop["event"] == "node_stop" and stop["reason"] == GIVE_UP
    assert stop["detail"] == {"exit_reason": "shutdown", "on_request": False}


def test_a_failed_start_detach_prints_the_workers_whole_traceback(tmp_path: Path) -> None:
    counter = tmp_path / "attempts"
    tree = Tree(write_config(tmp_path, f"""
[tree]
[[tree.children]]
id = "fine"
start = "{PUPPET}"

[[tree.children]]
id = "broken"
start = "{PUPPET}"
args = {{ fail_starts = 1, counter_file = "{counter}" }}
"""))
    try:
        started = tree.start()
    finally:
        tree.stop()
    assert started.returncode == 1
    lines = started.stderr.splitlines()
    assert lines[0] == ("supervise: the tree failed to start: failed_to_start_child \"broken\": "
                        "RuntimeError('start attempt 1 of 1 fails on purpose')")
    assert lines[1:4] == ["", "ERROR supervisor_tree.worker: worker broken#1: init failed",
                          "Traceback (most recent call last):"]  # from RUN/logs/broken.log
    assert any(line.strip().startswith('File "') and line.rstrip().endswith("in init") for line in lines)
    assert lines[-1] == "RuntimeError: start attempt 1 of 1 fails on purpose"


def test_a_node_stopped_by_sigterm_says_so(tmp_path: Path) -> None:
    tree = Tree(write_config(tmp_path, f'[tree]\n[[tree.children]]\nid = "p"\nstart = "{PUPPET}"\n'))
    try:
        assert tree.start().returncode == 0
        pid = tree.node_pid()
        assert pid is not None
        os.kill(pid, signal.SIGTERM)
        stop = tree.wait_event(lambda e: e["event"] == "node_stop", 30, "the node to stop")
        wait_for(lambda: not tree.running(), 30, "the node to exit")
    finally:
        tree.stop()
    assert stop["reason"] == "shutdown requested (SIGTERM received)"
    assert stop["detail"] == {"exit_reason": "shutdown", "on_request": True}
