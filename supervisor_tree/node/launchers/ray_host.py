"""The Ray actor that hosts one child's incarnations on whichever Ray node Ray placed it.

`WorkerHost` (made a Ray actor by `ray.py`, with Ray's own restarts off) runs a
`LocalLauncher` on its host: a fork server with a standby, so a restart on a live
host is a standby activation (milliseconds), never a new actor.  Every incarnation
is an ordinary worker process (`worker/incarnation.py`, the user's Worker), bound on
tcp:// with CurveZMQ and reporting to the node's inbound socket over TCP; the run's
frame key and the CURVE keys arrive with the actor's construction, held in memory.
Exit reasons are mapped on this host (the worker's reason file lives in a scratch run
dir here) and returned to the node by `wait_exit`.

If this actor dies (its Ray node is lost, or the actor process is killed) its fork
server and workers die with it (PR_SET_PDEATHSIG), and the node's `RayLauncher`
reports each of its workers as exited with `node_lost` or a crash.

Must not decide anything about restarts: it starts, signals and reaps, as the local
launcher does, and answers.
"""

from __future__ import annotations

import dataclasses
import os
import select
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import ray

from supervisor_tree.node.launchers.base import Reaped, Spawned, SpawnFailed
from supervisor_tree.node.launchers.local import LocalLauncher
from supervisor_tree.profiling.pyspy import find_pyspy
from supervisor_tree.wire import auth, curve
from supervisor_tree.wire.rundir import base_dir
from supervisor_tree.worker.spawn import SpawnRequest

__all__ = ["WorkerHost", "free_tcp_endpoint"]


def free_tcp_endpoint(ip: str) -> str:
    """tcp://IP:PORT with a port free on this host just now (the worker binds it a moment later)."""
    with socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET) as s:
        s.bind((ip, 0))
        return f"tcp://{ip}:{s.getsockname()[1]}"


class WorkerHost:
    """One child's host agent on a Ray node: see the module docstring.  Thread-safe (a threaded actor)."""

    def __init__(self, name: str, child: str, secret: bytes, keys: curve.CurveKeys, inbound: str,
                 sys_path: tuple[str, ...], preload: tuple[str, ...] = ()) -> None:
        self.child = child
        self.ip, self.node_id = ray.util.get_node_ip_address(), ray.get_runtime_context().get_node_id()
        self.hostname = socket.gethostname()
        self.run_dir = str(base_dir() / f"ray-{name[:16]}-{os.getpid()}")
        os.makedirs(self.run_dir, mode=0o700, exist_ok=True)
        auth.hold_key(self.run_dir, auth.FrameKey(secret))
        curve.use(keys)  # inherited by the fork server and every worker it forks: their tcp:// sockets use CURVE
        # `preload`: the child's own module (and [node] preload): its standby activates without importing it
        self._launcher = LocalLauncher(self.run_dir, preload=preload, sys_path=sys_path, standby=1, inbound=inbound,
                                       name=f"{name}/{child}")
        self._lock = threading.Lock()  # the launcher is not thread-safe: actor calls and the pump take turns
        self._changed = threading.Condition(self._lock)
        self._spawned: dict[int, Spawned | SpawnFailed] = {}  # token -> answer
        self._exits: dict[int, tuple[str, str | None]] = {}  # pid -> (kind, detail)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        started = threading.Event()
        # The pump thread forks the fork server and lives as long as this actor: PR_SET_PDEATHSIG
        # follows the thread that forked, and Ray's own threads may come and go.
        self._pump = threading.Thread(target=self._run, args=(started,), name="worker-host", daemon=True)
        self._pump.start()
        started.wait()
        if self._error is not None:
            raise RuntimeError(f"could not start a fork server for {child!r} on {self.hostname}: {self._error}")

    def _run(self, started: threading.Event) -> None:
        try:
            self._launcher.start()
        except BaseException as exc:  # noqa: BLE001 - reported by __init__
            self._error = exc
            started.set()
            return
        started.set()
        poller = select.poll()
        poller.register(self._launcher.fileno(), select.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(100):
                continue
            with self._lock:
                for ev in self._launcher.read_events():
                    if isinstance(ev, (Spawned, SpawnFailed)):
                        self._spawned[ev.token] = ev
                    elif isinstance(ev, Reaped):
                        self._exits[ev.pid] = (ev.reason.kind.value, ev.reason.detail)
                self._changed.notify_all()

    def where(self) -> tuple[str, str, str, int]:
        """(Ray node id, IP, host name, this actor's pid)."""
        return self.node_id, self.ip, self.hostname, os.getpid()

    def spawn(self, req: SpawnRequest, timeout: float = 60.0) -> tuple[str, object, str, str, str, str]:
        """Start `req` here: ("spawned", pid, host, mailbox, control, node id) or ("failed", why, "", "", "", "")."""
        local = dataclasses.replace(req, run_dir=self.run_dir, output=None, mailbox=free_tcp_endpoint(self.ip),
                                    control=free_tcp_endpoint(self.ip))
        deadline = time.monotonic() + timeout
        with self._lock:
            self._launcher.spawn(local)
            self._changed.notify_all()
            while req.token not in self._spawned:
                if not self._changed.wait(max(0.0, deadline - time.monotonic())):
                    return ("failed", f"no fork on {self.hostname} within {timeout:g} s", "", "", "", "")
            answer = self._spawned.pop(req.token)
        if isinstance(answer, SpawnFailed):
            return ("failed", answer.error, "", "", "", "")
        return ("spawned", answer.pid, f"{self.hostname}/{self.ip} {self.node_id[:6]}", local.mailbox, local.control, self.node_id)

    def wait_exit(self, pid: int) -> tuple[str, str | None]:
        """Block until the incarnation `pid` is reaped here; its exit reason as (kind, detail)."""
        with self._lock:
            while pid not in self._exits:
                self._changed.wait(1.0)
            return self._exits.pop(pid)

    def kill(self, pid: int, sig: int) -> None:
        with self._lock:
            self._launcher.kill(pid, sig)

    def profile(self, pid: int, seconds: float, rate: int, fmt: str) -> bytes:
        """py-spy record of the worker `pid` on this host, its output file's bytes (raises with py-spy's words)."""
        out = Path(self.run_dir) / f"profile-{pid}-{time.monotonic_ns()}.{'txt' if fmt == 'raw' else fmt}"
        pyspy = find_pyspy()  # beside this interpreter (the venv's), else on PATH: a Ray worker's PATH may lack it
        done = subprocess.run([pyspy, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
                               "--rate", str(rate), "--format", fmt, "--output", str(out), "--function"],
                              capture_output=True, text=True, timeout=seconds + 60)
        if done.returncode != 0 or not out.exists():
            raise RuntimeError(f"py-spy on {self.hostname} failed: {(done.stderr or done.stdout).strip()[-400:]}")
        try:
            return out.read_bytes()
        finally:
            out.unlink(missing_ok=True)

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            self._launcher.close()
        shutil.rmtree(self.run_dir, ignore_errors=True)
