"""A node for a benchmark, started as a user starts one: `supervise start CONFIG --detach`.

Owns writing a generated TOML to a short private directory, starting the node
from it in its own session (through the CLI, in a subprocess), naming the node's
processes (node, fork server, workers, standbys) and stopping it so that nothing
is left behind, even when the benchmark failed half-way.  It measures nothing.

    with BenchTree(tree_toml(worker("p")), base=ctx.run_dir) as tree:
        with Client(tree.run_dir) as c:
            c.call("p", {"cmd": "echo", "value": 1})
        tree.fork_server()                # psutil.Process of the fork server
    # stopped: `supervise stop`, then SIGKILL for anything of this run dir still alive

The node must not be a child of the benchmarking process: it is started with
``--detach`` (the CLI starts it in a new session and returns once the tree is up).
Every process of the node descends from it (the workers are its children, the node
reaps them), which is how `processes` finds them; each one seen is remembered, so
that what outlived the node is still found; the fork server is the one whose title
(osproc.title) says so.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import psutil

from supervisor_tree.bench.harness import BenchError
from supervisor_tree.node.launchers.osproc import parse_title
from supervisor_tree.wire import rundir

__all__ = ["REPO", "BenchTree", "tree_toml", "worker_toml"]

REPO = Path(__file__).resolve().parents[2]  # where `workers` (the puppet) lives in a checkout
START_TIMEOUT = 60.0  # s for the tree to come up
STOP_TIMEOUT = 60.0  # s for `supervise stop`
_MAX_BASE = 60  # ipc paths (RUN/w/ID-GEN.mbx) must stay under 107 bytes


def worker_toml(worker_id: str, start: str = "supervisor_tree.workers.puppet:Puppet", shutdown: str = '"brutal_kill"') -> str:
    """One `[[...children]]` body for a permanent worker (without the table header)."""
    return f'id = "{worker_id}"\nstart = "{start}"\nrestart = "permanent"\nshutdown = {shutdown}\n'


def tree_toml(*children: str, groups: dict[str, list[str]] | None = None, name: str = "bench",
              intensity: int = 100_000, period: int = 1, preload: tuple[str, ...] = ("supervisor_tree.workers.puppet",)) -> str:
    """A one_for_one root with `children` (worker_toml bodies) and, for each of `groups`,
    a one_for_all supervisor of those workers.  Intensity high enough for hundreds of kills."""
    lines = ["[node]", f'name = "{name}"', f"preload = {list(preload)!r}".replace("'", '"'), "",
             "[tree]", 'strategy = "one_for_one"', f"intensity = {intensity}", f"period = {period}", ""]
    for body in children:
        lines += ["[[tree.children]]", body]
    for group_id, members in (groups or {}).items():
        lines += ["[[tree.children]]", f'id = "{group_id}"', 'type = "supervisor"', 'strategy = "one_for_all"',
                  f"intensity = {intensity}", f"period = {period}", ""]
        for body in members:
            lines += ["[[tree.children.children]]", body]
    return "\n".join(lines) + "\n"


def _supervise(*args: str, timeout: float, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return subprocess.run([sys.executable, "-m", "supervisor_tree.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=env, check=False)


class BenchTree:
    """One node started from `config` (TOML text) in a fresh short directory; a context manager."""

    def __init__(self, config: str, base: Path | str | None = None) -> None:
        tmpfs = "/dev/shm" if os.access("/dev/shm", os.W_OK) else "/tmp"  # ipc binds are 10x cheaper on tmpfs
        parent = str(base) if base is not None and len(str(base)) <= _MAX_BASE else tmpfs
        self.dir = Path(tempfile.mkdtemp(prefix="stb-", dir=parent))
        self.config = self.dir / "tree.toml"
        self.config.write_text(config)
        self.run_dir = self.dir / "run"
        self.node_pid: int | None = None
        self._seen: dict[int, psutil.Process] = {}

    def __enter__(self) -> BenchTree:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        r = _supervise("start", str(self.config), "--detach", "--run-dir", str(self.run_dir),
                       "--timeout", str(START_TIMEOUT), timeout=START_TIMEOUT + 30, cwd=self.dir)
        info = rundir.read_info(self.run_dir)
        self.node_pid = info.pid if info else None
        if r.returncode != 0:
            raise BenchError(f"the benchmark node did not start (exit {r.returncode}): {(r.stderr or r.stdout).strip()}")

    def fork_server(self) -> psutil.Process:
        """The node's fork server (the child whose title says so)."""
        found = [p for p in self.children() if role_of(p) == "fork-server"]
        if len(found) != 1:
            raise BenchError(f"expected the node (pid {self.node_pid}) to have one fork server; found pids {[p.pid for p in found]}")
        return found[0]

    def children(self) -> list[psutil.Process]:
        """The node's child processes: its fork server, workers and standbys."""
        if self.node_pid is None:
            raise BenchError("the benchmark node is not running")
        return list(psutil.Process(self.node_pid).children())

    def processes(self) -> list[psutil.Process]:
        """Every live process of this node: node, fork server, workers, standbys (and any seen before that lives on)."""
        if self.node_pid is not None:
            try:
                node = psutil.Process(self.node_pid)
                for proc in [node, *node.children(recursive=True)]:
                    self._seen.setdefault(proc.pid, proc)
            except psutil.Error:
                pass
        found = []
        for proc in self._seen.values():
            try:
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
            except psutil.Error:
                pass
        return found

    def stop(self) -> None:
        """`supervise stop`; then SIGKILL whatever of this node still runs; then remove the directory."""
        try:
            self.processes()  # remember them while the node can still name them
            if rundir.is_locked(self.run_dir):
                try:
                    _supervise("stop", "--run-dir", str(self.run_dir), timeout=STOP_TIMEOUT, cwd=self.dir)
                except subprocess.TimeoutExpired:
                    pass
                self._wait(lambda: not rundir.is_locked(self.run_dir), 10.0)
            leftovers = self.processes()
            for proc in leftovers:  # the node's death kills the rest (PR_SET_PDEATHSIG); this is the backstop
                try:
                    proc.send_signal(signal.SIGKILL)
                except psutil.Error:
                    pass
            psutil.wait_procs(leftovers, timeout=5.0)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    @staticmethod
    def _wait(predicate: object, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate():  # type: ignore[operator]
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)  # another process releases the lock: nothing to wait on but time
        return True


def role_of(proc: psutil.Process) -> str | None:
    """The role in a process's title ("node", "fork-server", "standby", "ID#GEN"), or None."""
    try:
        parsed = parse_title(" ".join(proc.cmdline()))
    except psutil.Error:
        return None
    return parsed[1] if parsed else None
