"""The node in production: the OOM killer's choice, systemd (unit file, notify protocol), the heart.

Real nodes started through the CLI; systemd's NOTIFY_SOCKET is stood in for by a
datagram socket this test binds; the heart is killed and its node SIGKILLed for real.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from nodes import REPO, SUPERVISE, Tree, children_by_role, fork_server_of, supervise, title_of, wait_for, write_config

from supervisor_tree.node.heart import heart_pid
from supervisor_tree.wire import rundir

pytestmark = pytest.mark.timeout(120)

PUPPET = "supervisor_tree.workers.puppet:Puppet"
TREE = f"""
[node]
name = "prod"

[tree]
intensity = 5
period = 10

[[tree.children]]
id = "plain"
start = "{PUPPET}"

[[tree.children]]
id = "first_to_go"
start = "{PUPPET}"
oom_score_adj = 800
"""


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[Tree]:
    t = Tree(write_config(tmp_path, TREE))
    yield t
    t.stop()


def oom_score_adj(pid: int) -> int:
    return int(Path(f"/proc/{pid}/oom_score_adj").read_text())


# ---------------------------------------------------------------------- the OOM killer


def test_workers_are_the_oom_killers_first_choice_and_a_killed_one_is_restarted(tree: Tree) -> None:
    assert tree.start().returncode == 0
    node = tree.node_pid()
    assert node is not None
    ours = oom_score_adj(os.getpid())
    assert oom_score_adj(node) == ours and oom_score_adj(fork_server_of(node)) == ours
    assert oom_score_adj(tree.pid_of("plain")) == 500  # the default for a worker
    victim = tree.pid_of("first_to_go")
    assert oom_score_adj(victim) == 800
    assert all(oom_score_adj(p) == 500 for p in children_by_role(node)["standby"])
    os.kill(victim, signal.SIGKILL)  # what the OOM killer sends
    tree.wait_started("first_to_go", 2)
    assert "exited first_to_go#1 killed" in tree.trace()
    assert oom_score_adj(tree.pid_of("first_to_go")) == 800


def test_an_oom_score_adj_out_of_range_is_a_config_error(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, TREE.replace("oom_score_adj = 800", "oom_score_adj = 1001"))
    checked = supervise("check", str(cfg))
    assert checked.returncode == 2
    assert checked.stderr.strip() == (f'supervise: {cfg}: tree.children[1] "first_to_go": '
                                      "oom_score_adj must be an integer from -1000 to 1000; got 1001")


# ---------------------------------------------------------------------- systemd


def test_systemd_unit_is_a_notify_service_that_systemd_accepts(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, TREE)
    made = supervise("systemd-unit", str(cfg), "--watchdog-sec", "20")
    assert made.returncode == 0, made.stderr
    unit = made.stdout
    for line in ("Type=notify", "NotifyAccess=main", "KillMode=mixed", "Restart=on-failure", "WatchdogSec=20",
                 "RuntimeDirectory=supervise-prod", "TimeoutStopSec=40",  # two workers x 5000 ms, +30 s
                 "ExecReload=/bin/kill -HUP $MAINPID"):  # `systemctl reload`: SIGHUP reloads the config  # two workers x 5000 ms, +30 s
        assert line in unit.splitlines(), f"{line} missing from:\n{unit}"
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert exec_start.endswith(f"-m supervisor_tree.cli start {cfg} --run-dir /run/supervise-prod")
    if shutil.which("systemd-analyze") is None:
        return  # the notify protocol itself is tested below, against a stand-in socket
    path = tmp_path / "prod.service"
    path.write_text(unit)
    verified = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60)
    assert verified.returncode == 0 and str(path) not in verified.stderr, verified.stderr


def test_the_node_speaks_the_notify_protocol_ready_watchdog_stopping(tree: Tree, tmp_path: Path) -> None:
    address = str(tmp_path / "notify")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(address)
    listener.settimeout(0.2)
    messages: list[str] = []
    done = threading.Event()

    def receive() -> None:  # as systemd does: always reading
        while not done.is_set():
            try:
                messages.append(listener.recv(4096).decode())
            except TimeoutError:
                continue

    reader = threading.Thread(target=receive)
    reader.start()
    env = dict(os.environ, NOTIFY_SOCKET=address, WATCHDOG_USEC="100000",  # a ping every 50 ms
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        started = subprocess.run([*SUPERVISE, "start", str(tree.config), "--detach", "--run-dir", str(tree.run_dir)],
                                 capture_output=True, text=True, timeout=60, env=env)
        assert started.returncode == 0, started.stderr
        node = tree.node_pid()
        wait_for(lambda: messages.count("WATCHDOG=1") >= 3, 20, "three watchdog pings")
        stopped = tree.cli("stop")
        assert stopped.returncode == 0, stopped.stderr
        wait_for(lambda: any(m.startswith("STOPPING=1") for m in messages), 20, "STOPPING=1")
    finally:
        done.set()
        reader.join(10)
        listener.close()
    assert messages[0].splitlines() == ["READY=1", "STATUS=tree prod up: 2 workers", f"MAINPID={node}"]
    stopping = next(i for i, m in enumerate(messages) if m.startswith("STOPPING=1"))
    assert messages[1:4] == ["WATCHDOG=1"] * 3 and stopping >= 4
    assert messages[stopping] == "STOPPING=1\nSTATUS=shutdown requested (control API stop)"


# ---------------------------------------------------------------------- the heart


def test_heart_restarts_a_sigkilled_node_and_stop_stops_both(tree: Tree) -> None:
    started = supervise("start", str(tree.config), "--heart", "--detach", "--run-dir", str(tree.run_dir), timeout=90)
    assert started.returncode == 0, started.stderr
    heart = heart_pid(tree.run_dir)
    assert heart is not None and started.stdout.startswith(f"started (heart {heart})")
    assert title_of(heart) == "supervise[prod] heart"
    first = tree.node_pid()
    assert first is not None
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: len([e for e in tree.events() if e["event"] == "tree_started"]) == 2, 15,
             "a new node with the same tree")
    second = tree.node_pid()
    assert heart_pid(tree.run_dir) == heart
    assert sorted(tree.children()) == sorted(["plain=running(1)", "first_to_go=running(1)"])
    log = (tree.run_dir / "node.log").read_text()
    assert f"heart: the node (pid {first}) died (killed by SIGKILL); restarting it in 0.5 s" in log
    assert second not in (None, first)
    tree.client.close()
    stopped = tree.cli("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.strip() == "stopped (shutdown) with its heart"
    wait_for(lambda: heart_pid(tree.run_dir) is None and not tree.running(), 20, "the heart and the node to stop")
    wait_for(lambda: not _alive(heart), 10, "the heart process to exit")
    assert stopped_in_order(tree, second)


def stopped_in_order(tree: Tree, node: int | None) -> bool:
    """The last node's workers were stopped (SIGTERM, exit shutdown), newest first, not killed."""
    events = tree.events()
    since = max(i for i, e in enumerate(events) if e["event"] == "node_started" and e["detail"]["pid"] == node)
    exits = [(e["child"], e["reason"]) for e in events[since:] if e["event"] == "exited"]
    return exits == [("first_to_go", "shutdown"), ("plain", "shutdown")]


def test_sigterm_to_the_heart_stops_it_and_its_node_in_order(tree: Tree) -> None:
    started = supervise("start", str(tree.config), "--heart", "--detach", "--run-dir", str(tree.run_dir), timeout=90)
    assert started.returncode == 0, started.stderr
    heart, node = heart_pid(tree.run_dir), tree.node_pid()
    assert heart is not None and node is not None
    os.kill(heart, signal.SIGTERM)
    wait_for(lambda: heart_pid(tree.run_dir) is None and not tree.running(), 20, "the heart and the node to stop")
    assert stopped_in_order(tree, node)
    stop = [e for e in tree.events() if e["event"] == "node_stop"][-1]
    assert stop["reason"] == "shutdown requested (SIGTERM received)"
    assert "heart: the node stopped (exit code 0: shutdown requested (SIGTERM received)); the heart stops too" in (
        tree.run_dir / "node.log").read_text()


def test_heart_stops_with_the_reason_when_the_config_no_longer_loads(tree: Tree) -> None:
    started = supervise("start", str(tree.config), "--heart", "--detach", "--run-dir", str(tree.run_dir), timeout=90)
    assert started.returncode == 0, started.stderr
    heart = heart_pid(tree.run_dir)
    node = tree.node_pid()
    assert heart is not None and node is not None
    tree.config.write_text(TREE.replace("oom_score_adj = 800", 'oom_score_adj = "high"'))
    os.kill(node, signal.SIGKILL)
    wait_for(lambda: heart_pid(tree.run_dir) is None, 20, "the heart to give up")
    log = (tree.run_dir / "node.log").read_text()
    assert (f'heart: the config no longer loads, so the node is not restarted: {tree.config}: tree.children[1] '
            '"first_to_go": oom_score_adj must be an integer from -1000 to 1000; got \'high\'') in log
    assert not tree.running()
    wait_for(lambda: not _alive(heart), 10, "the heart process to exit")


def test_sighup_to_the_heart_reloads_the_nodes_config(tree: Tree) -> None:
    started = supervise("start", str(tree.config), "--heart", "--detach", "--run-dir", str(tree.run_dir), timeout=90)
    assert started.returncode == 0, started.stderr
    heart, node = heart_pid(tree.run_dir), tree.node_pid()
    assert heart is not None and node is not None
    assert "added" not in tree.cli("status").stdout
    tree.config.write_text(TREE + f'\n[[tree.children]]\nid = "added"\nstart = "{PUPPET}"\n')
    os.kill(heart, signal.SIGHUP)
    wait_for(lambda: (s := tree.cli("status")).returncode == 0 and "added" in s.stdout, 30,
             "the added child in `supervise status`")
    tree.wait_started("added", 1)
    assert tree.pid_of("added") in [p for pids in children_by_role(node).values() for p in pids]
    assert tree.node_pid() == node and heart_pid(tree.run_dir) == heart  # reloaded in place, not restarted
    assert _alive(heart) and _alive(node)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_second_start_is_refused_while_a_heart_runs(tree: Tree) -> None:
    started = supervise("start", str(tree.config), "--heart", "--detach", "--run-dir", str(tree.run_dir), timeout=90)
    assert started.returncode == 0, started.stderr
    again = supervise("start", str(tree.config), "--heart", "--detach", "--run-dir", str(tree.run_dir))
    assert again.returncode == 1
    assert again.stderr.strip() == (f"supervise: a node is already running in {tree.run_dir} "
                                    f"(`supervise stop --run-dir {tree.run_dir}` first)")
    assert rundir.is_locked(tree.run_dir)


def test_heart_gives_up_after_more_restarts_than_its_limit(tree: Tree) -> None:
    started = supervise("start", str(tree.config), "--heart", "--heart-max-restarts", "1", "--detach",
                        "--run-dir", str(tree.run_dir), timeout=90)
    assert started.returncode == 0, started.stderr
    heart = heart_pid(tree.run_dir)
    assert heart is not None
    for starts in (1, 2):
        wait_for(lambda n=starts: len([e for e in tree.events() if e["event"] == "tree_started"]) == n, 15,  # type: ignore[misc]
                 f"start {starts} of the node")
        node = tree.node_pid()
        assert node is not None
        os.kill(node, signal.SIGKILL)
    wait_for(lambda: heart_pid(tree.run_dir) is None, 20, "the heart to give up")
    log = (tree.run_dir / "node.log").read_text()
    assert "(killed by SIGKILL); more than 1 restarts within 60 s; giving up" in log
    wait_for(lambda: not tree.running(), 10, "the run dir to be let go")
    wait_for(lambda: not _alive(heart), 10, "the heart process to exit")


def test_ctrl_c_stops_a_foreground_heart_and_its_node_in_order(tree: Tree) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([*SUPERVISE, "start", str(tree.config), "--heart", "--run-dir", str(tree.run_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        tree.wait_event(lambda e: e["event"] == "tree_started", 30, "the tree to start")
        node = tree.node_pid()
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group, heart and node
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, err
    assert stopped_in_order(tree, node)
    assert "heart: the node stopped (exit code 0: shutdown requested (SIGINT received)); the heart stops too" in err
