"""External programs as children (OTP's ports), end to end: `command = [...]` in a real tree.

The program is `python3 -m http.server` on a free port (readiness: the port accepts),
or a shell script; faults are real signals; "no orphans" is checked on real processes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import psutil
import pytest
from nodes import REPO, SUPERVISE, Tree, dead, supervise, wait_for, write_config

pytestmark = pytest.mark.timeout(120)

ECHO = "tests.integration.aio_workers:Echo"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_server(port: int, id: str = "ext", ready: str | None = None) -> str:
    command = [sys.executable, "-u", "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    ready = ready or f'{{ tcp = "127.0.0.1:{port}" }}'
    return (f'[[tree.children]]\nid = "{id}"\ncommand = {json.dumps(command)}\nready = {ready}\n'
            'shutdown = 5000\n')


def program(id: str, command: list[str], restart: str = "permanent", extra: str = "") -> str:
    return f'[[tree.children]]\nid = "{id}"\ncommand = {json.dumps(command)}\nrestart = "{restart}"\n{extra}\n'


def worker(id: str, start: str = ECHO) -> str:
    return f'[[tree.children]]\nid = "{id}"\nstart = "{start}"\nshutdown = 2000\n'


def tree_toml(*children: str, strategy: str = "one_for_one") -> str:
    return (f'[node]\nheartbeat = {{ interval = 0.2, misses = 5 }}\n\n[tree]\nstrategy = "{strategy}"\n'
            "intensity = 10\nperiod = 10\n\n" + "\n".join(children))


def get(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
        return int(r.status)


def test_sigkill_restarts_the_program_and_one_for_all_siblings_with_it(start_tree) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    t = start_tree(tree_toml(worker("before"), http_server(port), worker("after"), strategy="one_for_all"))
    assert get(port) == 200  # ready meant: the port accepts
    first = t.pid_of("ext")
    assert psutil.Process(first).cmdline()[1:4] == ["-u", "-m", "http.server"]  # the pid is the program's own
    killed = t.cli("kill", "ext")
    assert killed.returncode == 0, killed.stderr
    for who in ("before", "ext", "after"):
        t.wait_started(who, 2)
    trace = t.trace()
    assert "exited ext#1 killed" in trace
    assert trace.index("exited ext#1 killed") < trace.index("started before#2")
    assert get(port) == 200
    assert t.pid_of("ext") != first
    stopped = t.cli("stop")
    assert stopped.returncode == 0
    assert "exited ext#2 shutdown" in t.trace()  # its stop signal is a clean stop, not {signal,SIGTERM}


def test_exit_codes_map_to_reasons_and_the_crash_tail_is_in_the_exited_event(start_tree) -> None:  # type: ignore[no-untyped-def]
    script = "sleep 0.3; echo 'about to fail' >&2; echo 'no such table: users' >&2; exit 3"
    t = start_tree(tree_toml(program("job", ["sh", "-c", script], restart="temporary")))
    exited = t.wait_event(lambda e: e["event"] == "exited" and e["child"] == "job", what="job's exit")
    assert exited["reason"] == "{exit_code,3}"
    assert exited["detail"]["tail"] == ["about to fail", "no such table: users"]
    shown = t.cli("events")
    assert "exited: {exit_code,3}\n    | about to fail\n    | no such table: users" in shown.stdout


def test_a_missing_executable_is_refused_with_the_reason(tmp_path: Path) -> None:
    config = write_config(tmp_path, tree_toml(program("cache", ["no-such-server-16", "--port", "6380"])))
    for verb in ("check", "start"):
        result = supervise(verb, str(config), *(["--detach", "--run-dir", str(tmp_path / "run")] if verb == "start" else []))
        assert result.returncode == 2, result
        assert 'tree.children[0] "cache": command: executable "no-such-server-16" not found on PATH' in result.stderr


def test_a_program_gone_at_restart_fails_the_start_with_the_reason(start_tree, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    script = tmp_path / "serve.sh"
    script.write_text("#!/bin/sh\necho serving\nexec sleep 300\n")
    script.chmod(0o755)
    t = start_tree(tree_toml(program("svc", [str(script)], extra='ready = { stdout = "serving" }')))
    script.unlink()  # a deploy removed it
    t.cli("kill", "svc")
    failed = t.wait_event(lambda e: e["event"] == "start_error" and e["child"] == "svc", what="svc's start error")
    assert failed["reason"] == f'{{error,cannot run [{str(script)!r}]: executable "{script}" does not exist}}'


def _group_of(pid: int) -> list[int]:
    pgid = os.getpgid(pid)
    return [p.pid for p in psutil.process_iter() if _pgid(p.pid) == pgid]


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _gone(pids: list[int]) -> bool:
    return all(dead(p) for p in pids)  # each may vanish between two looks: dead() takes that as gone


def test_the_programs_own_children_die_with_it(start_tree) -> None:  # type: ignore[no-untyped-def]
    t = start_tree(tree_toml(program("family", ["sh", "-c", "sleep 301 & sleep 302 & wait"])))
    leader = t.pid_of("family")
    group = wait_for(lambda: len(_group_of(leader)) == 3 and _group_of(leader), what="sh and its two sleeps")
    os.kill(leader, signal.SIGKILL)  # the sleeps are not killed by this signal: the supervisor sweeps them
    assert wait_for(lambda: _gone(group), what="the whole process group gone")
    t.wait_started("family", 2)


def _zombies_under(parent: int) -> list[int]:
    """The processes in state Z whose parent is `parent` (from /proc/PID/stat)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_bytes().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if fields[0] == b"Z" and int(fields[1]) == parent:
                found.append(int(entry))
    return found


def _ended(pid: int, born: float) -> bool:
    """No process `pid` at all any more (not even a zombie): reaped."""
    try:
        return psutil.Process(pid).create_time() != born
    except psutil.NoSuchProcess:
        return True


def _parent(pid: int) -> int | None:
    try:
        return psutil.Process(pid).ppid()
    except psutil.NoSuchProcess:
        return None


def _node_pid(t: Tree) -> int:
    node = t.node_pid()
    assert node is not None
    return node


def test_a_killed_programs_children_are_reaped_not_left_as_zombies_of_the_node(start_tree) -> None:  # type: ignore[no-untyped-def]
    t = start_tree(tree_toml(program("family", ["sh", "-c", "sleep 305 & sleep 306 & exec sleep 307"])))
    node, leader = _node_pid(t), t.pid_of("family")
    group = wait_for(lambda: len(_group_of(leader)) == 3 and _group_of(leader), what="the program and its two sleeps")
    born = {pid: psutil.Process(pid).create_time() for pid in group}
    os.kill(leader, signal.SIGKILL)  # its two sleeps are reparented to the node (a subreaper), then killed
    t.wait_started("family", 2)
    assert wait_for(lambda: all(_ended(pid, at) for pid, at in born.items()), what="the killed group reaped")
    assert wait_for(lambda: not _zombies_under(node), what="no zombie under the node")


def test_a_grandchild_that_outlives_its_parent_is_reaped_when_it_exits(start_tree, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    late, left, go = tmp_path / "late.pid", tmp_path / "left.pid", tmp_path / "go"
    # The inner shell exits at once: its sleep, reparented to the node, exits by itself a moment later.
    running = f'sh -c "sleep 0.5 & echo \\$! > {late}"; exec sleep 308'
    # Exits normally once told to (after it started), leaving its background job.
    exiting = f"sleep 309 & echo $! > {left}; while [ ! -e {go} ]; do sleep 0.05; done; exit 0"
    t = start_tree(tree_toml(program("runs", ["sh", "-c", running]),
                             program("quits", ["sh", "-c", exiting], restart="temporary")))
    node = _node_pid(t)
    go.touch()
    for pidfile in (late, left):
        pid = int(wait_for(lambda f=pidfile: f.exists() and f.read_text().strip(), what=f"{pidfile.name}"))
        assert wait_for(lambda p=pid: _ended(p, -1.0) or _parent(p) == node or dead(p), what="reparented to the node")
        assert wait_for(lambda p=pid: not psutil.pid_exists(p), what=f"the process of {pidfile.name} reaped")
    exited = t.wait_event(lambda e: e["event"] == "exited" and e["child"] == "quits", what="quits' exit")
    assert exited["reason"] == "normal"
    assert not _zombies_under(node)
    assert t.pid_of("runs") and t.cli("status").returncode == 0  # the running program is untouched


def test_no_orphans_after_the_node_is_sigkilled(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, tree_toml(http_server(port), program("family", ["sh", "-c", "sleep 303 & sleep 304 & wait"])))
    t = Tree(config)
    try:
        assert t.start().returncode == 0
        family = t.pid_of("family")
        doomed = [t.pid_of("ext"), *wait_for(lambda: len(_group_of(family)) == 3 and _group_of(family), what="family")]
        node = t.node_pid()
        assert node is not None
        os.kill(node, signal.SIGKILL)
        assert wait_for(lambda: _gone(doomed), timeout=20, what="every program and its children gone")
        wait_for(lambda: not t.running(), 30, "nothing of the node holding its run dir")  # before t.stop() asks it
    finally:
        t.stop()


def test_logs_show_the_programs_output_and_follow_it_across_a_restart(start_tree) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    t = start_tree(tree_toml(http_server(port, ready='{ stdout = "Serving HTTP" }')))
    get(port)
    shown = t.cli("logs", "ext", "-n", "20")
    assert shown.returncode == 0, shown.stderr
    assert f"ext#1 out | Serving HTTP on 127.0.0.1 port {port}" in shown.stdout
    assert 'ext#1 err | 127.0.0.1 - - ' in shown.stdout and '"GET / HTTP/1.1" 200' in shown.stdout
    env = dict(os.environ, PYTHONPATH=str(REPO))
    follow = subprocess.Popen([*SUPERVISE, "logs", "ext", "-f", "--run-dir", str(t.run_dir)], stdout=subprocess.PIPE,
                              text=True, env=env)
    try:
        assert t.cli("kill", "ext").returncode == 0
        t.wait_started("ext", 2)
        get(port)
        t.cli("stop")
        out, _ = follow.communicate(timeout=30)  # -f ends with the node
    finally:
        follow.kill()
    assert "ext#1 sys | --- exited: killed ---" in out
    assert "ext#2 sys | --- starting ---" in out
    assert f"ext#2 out | Serving HTTP on 127.0.0.1 port {port}" in out


def test_env_and_cwd_reach_the_program_and_it_takes_no_calls(start_tree, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "var").mkdir()
    extra = 'env = { GREETING = "hello from" }\ncwd = "var"\nready = { stdout = "hello from" }'
    t = start_tree(tree_toml(program("greeter", ["sh", "-c", 'echo "$GREETING $(pwd)"; exec sleep 300'], extra=extra)))
    assert f"greeter#1 out | hello from {tmp_path / 'var'}" in t.cli("logs", "greeter").stdout
    refused = t.cli("call", "greeter", '"hi"')
    assert refused.returncode == 1
    assert "worker 'greeter' runs a program (sh -c" in refused.stderr and "it takes no calls" in refused.stderr
