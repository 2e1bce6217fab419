"""Test helpers: start real nodes as a user would (`supervise start --detach`) and watch them.

Waiting is always on a condition with a deadline; the only sleeps are the short
re-checks inside `wait_for`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from supervisor_tree.client import Client
from supervisor_tree.wire import rundir

SUPERVISE = [sys.executable, "-m", "supervisor_tree.cli"]
REPO = Path(__file__).resolve().parent.parent


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)  # re-check; the condition lives in another process


def supervise(*args: str, timeout: float = 60.0, cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([*SUPERVISE, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)


class Tree:
    """One node started from a config text, in a short private run dir."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.run_dir = Path(tempfile.mkdtemp(prefix="st-", dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else "/tmp"))
        self.started: subprocess.CompletedProcess[str] | None = None
        self._client: Client | None = None

    def start(self, detach_timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        self.started = supervise("start", str(self.config), "--detach", "--run-dir", str(self.run_dir), "--timeout", str(detach_timeout))
        return self.started

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return supervise(*args, "--run-dir", str(self.run_dir), timeout=timeout)

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self.run_dir, timeout=10.0)
        return self._client

    def node_pid(self) -> int | None:
        info = rundir.read_info(self.run_dir)
        return info.pid if info else None

    def running(self) -> bool:
        return rundir.is_locked(self.run_dir)

    # ---------------------------------------------------------------- events

    def events(self) -> list[dict[str, Any]]:
        path = self.run_dir / "events.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def trace(self, kinds: tuple[str, ...] = ("started", "exited", "child_terminated", "start_error", "shutdown_error", "reached_max_restart_intensity", "supervisor_exited")) -> list[str]:
        """Events as short strings, e.g. 'exited b#1 crash', in order."""
        out = []
        for e in self.events():
            if e["event"] not in kinds:
                continue
            who = e["child"] or e["supervisor"]
            gen = f"#{e['generation']}" if e.get("generation") else ""
            reason = f" {e['reason']}" if e.get("reason") is not None and e["event"] != "started" else ""
            out.append(f"{e['event']} {who}{gen}{reason}")
        return out

    def wait_event(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 20.0, what: str = "event") -> dict[str, Any]:
        return wait_for(lambda: next((e for e in self.events() if pred(e)), None), timeout, what)  # type: ignore[no-any-return]

    def wait_started(self, child: str, generation: int, timeout: float = 20.0) -> dict[str, Any]:
        return self.wait_event(
            lambda e: e["event"] == "started" and e["child"] == child and e["generation"] == generation,
            timeout,
            f"{child}#{generation} to start",
        )

    def children(self, supervisor: str = "root") -> list[str]:
        """which_children as 'id=state(gen)' strings, newest first (OTP order)."""
        return [f"{c['key']}={c['state']}" + (f"({c['generation']})" if c["state"] == "running" else "") for c in self.client.which_children(supervisor)]

    def pid_of(self, worker: str) -> int:
        return int(self.client.resolve(worker).pid)

    # ---------------------------------------------------------------- teardown

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        from supervisor_tree.node.heart import heart_pid

        if self.running() or heart_pid(self.run_dir) is not None:  # `stop` stops a heart too
            supervise("stop", "--run-dir", str(self.run_dir), timeout=120)
        pid = self.node_pid()
        if self.running() and pid:
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not self.running(), 30, "node to release its run dir")
        shutil.rmtree(self.run_dir, ignore_errors=True)


def write_config(directory: Path, text: str, name: str = "tree.toml") -> Path:
    path = directory / name
    path.write_text(text)
    return path


def started(config: Path) -> Tree:
    """A tree started from `config` (detached); the test fails with the CLI's output if it did not start."""
    t = Tree(config)
    result = t.start()
    assert result.returncode == 0, result.stderr + result.stdout
    return t


class Trees:
    """Starts trees from config texts written in `directory`, and stops every one of them (a fixture's teardown)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.trees: list[Tree] = []

    def __call__(self, text: str, expect_ok: bool = True) -> Tree:
        """`expect_ok=False`: a start that may fail (the test looks at `t.started`)."""
        t = Tree(write_config(self.directory, text))
        self.trees.append(t)  # stopped even if it fails to start: a half-started node is cleaned up too
        result = t.start()
        if expect_ok:
            assert result.returncode == 0, result.stderr + result.stdout
        return t

    def stop_all(self) -> None:
        for t in self.trees:
            t.stop()


# ---------------------------------------------------------------- the node's processes, by title


def title_of(pid: int) -> str:
    """What `ps -o args` shows for `pid` (the process title)."""
    return subprocess.run(["ps", "-o", "args=", "-p", str(pid)], capture_output=True, text=True, check=True).stdout.strip()


def children_by_role(node_pid: int) -> dict[str, list[int]]:
    """The node's child processes grouped by the role in their title: "fork-server", "standby", "ID#GEN"."""
    import psutil

    from supervisor_tree.node.launchers.osproc import parse_title

    roles: dict[str, list[int]] = {}
    for proc in psutil.Process(node_pid).children():
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            parsed = parse_title(" ".join(proc.cmdline()))
        except psutil.Error:
            continue
        if parsed is not None:
            roles.setdefault(parsed[1], []).append(proc.pid)
    return roles


def fork_server_of(node_pid: int) -> int:
    servers = children_by_role(node_pid).get("fork-server", [])
    assert len(servers) == 1, f"expected one fork server under node {node_pid}; found {servers}"
    return servers[0]


def dead(pid: int) -> bool:
    """Gone, or a zombie (dead, not reaped yet)."""
    import psutil

    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True
