"""The tree a chaos run works on: one that is running already (attach), or one it starts and stops.

Owns finding the node (`--run-dir`, else the config's default run directory, else the
default tree's), starting it as a user would (`supervise start CONFIG --detach`, in its
own session) when none runs, and stopping what it started, whatever happened.  When it
starts the built-in default tree and the network's port (7411) is taken, it gives the
tree a free port (SUPERVISE_NETWORK_PORT) rather than fail.

    with ChaosTree(config="app.toml", run_dir=None) as tree:
        tree.run_dir, tree.started         # started: False when it attached to a running node
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from types import TracebackType

from supervisor_tree.client import Client
from supervisor_tree.wire import rundir

__all__ = ["ChaosTree", "TreeError"]

START_TIMEOUT = 120.0
PORT_ENV = "SUPERVISE_NETWORK_PORT"  # config/default_tree.py's override


class TreeError(RuntimeError):
    """The tree could not be started (the message carries the CLI's own words)."""


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ChaosTree:
    def __init__(self, config: str | None, run_dir: str | None) -> None:
        self.config = os.path.abspath(config) if config else None
        explicit = run_dir or os.environ.get("SUPERVISE_RUN_DIR")
        self.run_dir = Path(explicit) if explicit else rundir.default_run_dir(self.config)
        self.started = False

    def __enter__(self) -> ChaosTree:
        if not rundir.is_locked(self.run_dir):
            self.start()
        return self

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        self.stop()

    def _supervise(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "supervisor_tree.cli", *args], capture_output=True, text=True,
                              timeout=START_TIMEOUT + 30, env=env, check=False)

    def start(self) -> None:
        env = dict(os.environ)
        if self.config is None and PORT_ENV not in env and not _port_free(7411):
            env[PORT_ENV] = str(_free_port())
        args = ["start", *([self.config] if self.config else []), "--detach", "--run-dir", str(self.run_dir),
                "--timeout", str(START_TIMEOUT)]
        done = self._supervise(*args, env=env)
        if done.returncode != 0:
            raise TreeError((done.stderr or done.stdout).strip().removeprefix("supervise: "))
        self.started = True

    def client(self, caller: str = "chaos") -> Client:
        return Client(self.run_dir, timeout=10.0, caller=caller)

    def running(self) -> bool:
        return rundir.is_locked(self.run_dir)

    def stop(self) -> None:
        """Stop the node if this run started it (a node it attached to keeps running)."""
        if self.started and self.running():
            self._supervise("stop", "--run-dir", str(self.run_dir))
        self.started = False
