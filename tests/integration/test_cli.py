"""The CLI as a user runs it: a user's own worker beside the config, bad input, exit codes."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from nodes import Tree, supervise, wait_for, write_config

pytestmark = pytest.mark.timeout(180)

USER_WORKER = '''
from supervisor_tree import Worker


class Counter(Worker):
    def init(self, start=0):
        self.n = start

    def handle_call(self, msg):
        op, k = msg
        if op == "add":
            self.n += k
            return self.n
        raise ValueError(f"unknown op {op!r}")

    def handle_cast(self, msg):
        self.n += msg
'''

USER_CONFIG = """
[tree]
strategy = "one_for_one"
intensity = 5
period = 10

[[tree.children]]
id = "counter"
start = "myapp:Counter"
args = { start = 10 }
restart = "transient"
shutdown = 2000
"""


@pytest.fixture
def user_tree(tmp_path: Path):  # type: ignore[no-untyped-def]
    (tmp_path / "myapp.py").write_text(USER_WORKER)
    t = Tree(write_config(tmp_path, USER_CONFIG, "config.toml"))
    yield t
    t.stop()


def test_newcomer_flow_start_call_kill_restart_stop(user_tree: Tree) -> None:
    t = user_tree
    started = t.start()
    assert started.returncode == 0, started.stderr
    assert "started" in started.stdout

    r = t.cli("call", "counter", '["add", 5]')
    assert (r.returncode, r.stdout.strip()) == (0, "15")
    assert t.cli("cast", "counter", "2").returncode == 0
    assert t.cli("call", "counter", '["add", 0]').stdout.strip() == "17"

    status = json.loads(t.cli("status", "--json").stdout)
    (counter,) = status["tree"]["children"]
    assert (counter["id"], counter["state"], counter["generation"], counter["restart"]) == ("counter", "running", 1, "transient")
    assert counter["rss"] > 0 and counter["uptime"] >= 0

    assert t.cli("kill", "counter").returncode == 0
    t.wait_started("counter", 2)
    assert t.cli("call", "counter", '["add", 0]').stdout.strip() == "10", "a restarted worker starts from its init args"

    assert t.cli("terminate", "counter").returncode == 0
    assert json.loads(t.cli("status", "--json").stdout)["tree"]["children"][0]["state"] == "not_running"
    r = t.cli("restart", "counter")
    assert r.returncode == 0, r.stderr
    r = t.cli("restart", "counter")
    assert r.returncode == 1 and "running" in r.stderr

    text = t.cli("status").stdout
    assert "counter" in text and "running" in text

    events = [json.loads(line) for line in t.cli("events", "--json").stdout.splitlines()]
    assert {"ts", "seq", "event", "supervisor", "child", "pid", "generation", "reason"} <= set(events[0])
    assert any(e["event"] == "exited" and e["reason"] == "killed" for e in events)

    stopped = t.cli("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert t.cli("status").returncode == 3


def test_handler_error_and_bad_json_are_one_line_errors(user_tree: Tree) -> None:
    t = user_tree
    assert t.start().returncode == 0
    bad = t.cli("call", "counter", "{not json")
    assert bad.returncode == 2 and "not valid JSON" in bad.stderr
    err = t.cli("call", "counter", '["mul", 2]')
    assert err.returncode == 1 and "ValueError" in err.stderr and "unknown op" in err.stderr
    t.wait_started("counter", 2)  # the handler raised: OTP crashes the worker, it restarts
    missing = t.cli("call", "nobody", "1")
    assert missing.returncode == 1 and "nobody" in missing.stderr
    assert t.cli("call", "counter", '["add", 1]').stdout.strip() == "11"


def test_no_node_means_exit_3(tmp_path: Path) -> None:
    r = supervise("status", "--run-dir", str(tmp_path))
    assert r.returncode == 3 and "no node is running" in r.stderr


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("[tree]\nstrategy = one_for_one\n", "line 2"),
        ('[tree]\nstrategy = "one_for_some"\n', "one_for_one"),
        ('[tree]\n[[tree.children]]\nid = "a"\nstart = "supervisor_tree.workers.puppet:Puppet"\nrestrat = "permanent"\n', 'did you mean "restart"'),
        ('[tree]\n[[tree.children]]\nid = "a"\nstart = "supervisor_tree.workers.puppet:Puppet"\nshutdown = -5\n', "-5"),
        ('[tree]\n[[tree.children]]\nid = "a"\nstart = "nosuchmodule:W"\n', "nosuchmodule"),
        ('[tree]\n[[tree.children]]\nid = "a"\nstart = "supervisor_tree.workers.puppet:Puppet"\n[[tree.children]]\nid = "a"\nstart = "supervisor_tree.workers.puppet:Puppet"\n', "duplicate"),
    ],
)
def test_bad_config_is_refused_with_one_line_per_problem_and_exit_2(tmp_path: Path, config: str, message: str) -> None:
    path = write_config(tmp_path, config, "bad.toml")
    for cmd in (("check", str(path)), ("start", str(path), "--run-dir", str(tmp_path / "run"))):
        r = supervise(*cmd)
        assert r.returncode == 2, (cmd, r.stdout, r.stderr)
        assert "bad.toml" in r.stderr and message in r.stderr
    assert not (tmp_path / "run" / "lock").exists() or not any((tmp_path / "run" / "w").iterdir())


def test_check_accepts_a_good_config(tmp_path: Path) -> None:
    (tmp_path / "myapp.py").write_text(USER_WORKER)
    r = supervise("check", str(write_config(tmp_path, USER_CONFIG, "config.toml")))
    assert r.returncode == 0, r.stderr
    assert "counter" in r.stdout


def test_foreground_node_stops_gracefully_on_sigint(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "myapp.py").write_text(USER_WORKER)
    cfg = write_config(tmp_path, USER_CONFIG, "config.toml")
    run = Tree(cfg).run_dir
    env = dict(os.environ)
    proc = subprocess.Popen(
        [sys.executable, "-m", "supervisor_tree.cli", "start", str(cfg), "--run-dir", str(run)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        wait_for(lambda: (run / "events.jsonl").exists() and "tree_started" in (run / "events.jsonl").read_text(), 30, "the tree to start")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "exited" in err and "shutdown" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
