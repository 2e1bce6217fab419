"""OTP's heart: a small watcher process that restarts the node when it dies abnormally.

    heart = Heart(node_argv, run_dir, config="app.toml")
    code = heart.run(on_first_start=report)    # returns once it stops for good (0: on request)

The heart runs the node (`supervise start CONFIG --run-dir RUN`, in the foreground) as
its child and waits for it.  A node that exits 0 stopped on request: the heart stops
too.  Any other end (a signal such as SIGKILL, a crash, a root that gave up, the fork
server lost for good) is abnormal: the heart starts the same config in the same run
dir again, after a backoff (0.5 s, doubling, at most 10 s; back to 0.5 s once the node
has run for `period` s), unless more than `max_restarts` restarts happened within
`period` s.  Each restart is one log line with the reason.  Before each restart the
config is loaded again: a config that no longer loads stops the heart, with the
config's problems as its reason; so does a node that never finished its first start.

Signals to the heart: SIGTERM stops it and the node (SIGTERM forwarded: the tree stops
in order).  SIGHUP is forwarded to the node, which reloads its config (the heart goes
on).  SIGINT (a terminal sends it to the node as well) and SIGUSR1 (what `supervise
stop` sends before it asks the node to stop) make it stand down: no more restarts, it
exits when the node does.  A signal is never forwarded twice, and
never on top of another stop request: the node takes a second one as "kill everything
now".  The heart's pid is in RUN/heart.json; it holds an exclusive lock on
RUN/heart.lock while it runs.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from supervisor_tree.node.life import last_ending

log = logging.getLogger("supervisor_tree.heart")

__all__ = ["Heart", "HeartPolicy", "heart_pid", "STAND_DOWN", "EXIT_OK", "EXIT_GAVE_UP", "EXIT_CONFIG"]

STAND_DOWN = signal.SIGUSR1  # no more restarts; the heart exits with its node

EXIT_OK, EXIT_GAVE_UP, EXIT_CONFIG = 0, 1, 2


@dataclass(frozen=True, slots=True)
class HeartPolicy:
    """More than `max_restarts` restarts within `period` s: give up.  Delays: initial * factor**(n-1), at most cap."""

    max_restarts: int = 5
    period: float = 60.0
    initial: float = 0.5
    factor: float = 2.0
    cap: float = 10.0

    def delay(self, consecutive: int) -> float:
        return min(self.cap, self.initial * self.factor ** max(0, consecutive - 1))


class Heart:
    """See the module docstring.  `node_argv` starts the node in the foreground; `--notify-fd N` is appended."""

    def __init__(self, node_argv: Sequence[str], run_dir: Path, *, config: str | None = None,
                 policy: HeartPolicy = HeartPolicy(), check_config: Callable[[str], object] | None = None) -> None:
        self.node_argv = list(node_argv)
        self.run_dir = run_dir
        self.config = config
        self.policy = policy
        self.check_config = check_config  # raises with the config's problems
        self.stopping = False  # no more restarts
        self.forward = False  # and stop the node (SIGTERM)
        self.node: subprocess.Popen[bytes] | None = None
        self._forwarded = False  # SIGTERM sent to the current node
        self._restarts: list[float] = []
        self._lock_fd: int | None = None

    # -- the loop

    def run(self, on_first_start: Callable[[bool, str], None] | None = None) -> int:
        if not self._lock():
            log.error("heart: another heart runs in %s", self.run_dir)
            return EXIT_GAVE_UP
        signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, STAND_DOWN)
        previous = {s: signal.signal(s, self._on_signal) for s in signals}
        try:
            return self._loop(on_first_start)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            self._unlock()

    def _loop(self, on_first_start: Callable[[bool, str], None] | None) -> int:
        consecutive = 0
        first = True
        while True:
            started_at = time.monotonic()
            ok, line = self._start_node()
            if first:
                if on_first_start is not None:
                    on_first_start(ok, line)
                if not ok:
                    self._wait_node()
                    log.error("heart: the node never finished its first start (%s); not restarting it", line)
                    return EXIT_GAVE_UP
                first = False
            code = self._wait_node()
            if self.stopping or code == 0:
                log.info("heart: the node stopped (%s); the heart stops too", self._why(code, started_at))
                return EXIT_OK
            consecutive = 1 if time.monotonic() - started_at >= self.policy.period else consecutive + 1
            why = self._why(code, started_at)
            if (gave_up := self._budget_spent()) is not None:
                log.error("heart: the node died (%s); %s; giving up", why, gave_up)
                return EXIT_GAVE_UP
            delay = self.policy.delay(consecutive)
            log.warning("heart: the node (pid %d) died (%s); restarting it in %.1f s (restart %d of at most %d "
                        "within %g s)", self.node.pid if self.node else 0, why, delay, len(self._restarts),
                        self.policy.max_restarts, self.policy.period)
            if not self._sleep(delay):
                log.info("heart: stopped while waiting to restart the node")
                return EXIT_OK
            if (problem := self._config_problem()) is not None:
                log.error("heart: the config no longer loads, so the node is not restarted: %s", problem)
                return EXIT_CONFIG

    def _budget_spent(self) -> str | None:
        now = time.monotonic()
        self._restarts = [t for t in self._restarts if t > now - self.policy.period] + [now]
        if len(self._restarts) > self.policy.max_restarts:
            return f"more than {self.policy.max_restarts} restarts within {self.policy.period:g} s"
        return None

    def _config_problem(self) -> str | None:
        if self.config is None or self.check_config is None:
            return None
        try:
            self.check_config(self.config)
        except Exception as exc:  # noqa: BLE001 - any reason the config does not load is the reason we stop
            return str(exc).replace("\n", "; ")
        return None

    # -- the node

    def _start_node(self) -> tuple[bool, str]:
        """Start the node; wait for its first word: (True, "started") or (False, why)."""
        read_fd, write_fd = os.pipe()
        argv = [*self.node_argv, "--notify-fd", str(write_fd)]
        self.node = subprocess.Popen(argv, stdin=subprocess.DEVNULL, pass_fds=(write_fd,))
        self._forwarded = False
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as pipe:
            while True:
                if self.forward:
                    self._forward(signal.SIGTERM)
                ready, _, _ = select.select([pipe], [], [], 0.2)
                if ready:
                    line = pipe.readline().decode(errors="replace").strip()
                    if line == "started":
                        return True, line
                    return False, line.removeprefix("failed: ") or f"the node exited ({self.node.wait()})"

    def _wait_node(self) -> int:
        assert self.node is not None
        while True:
            try:
                return self.node.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                if self.forward:
                    self._forward(signal.SIGTERM)

    def _forward(self, sig: int) -> None:
        if self.node is not None and self.node.poll() is None and not self._forwarded:
            self._forwarded = True
            self.node.send_signal(sig)

    def _why(self, code: int, started_at: float) -> str:
        """How the node ended, with the reason of its node_stop event when it wrote one."""
        if code < 0:
            return f"killed by {signal.Signals(-code).name}"
        ending = last_ending(self.run_dir / "events.jsonl", since=time.time() - (time.monotonic() - started_at))
        return f"exit code {code}" + (f": {ending[1]}" if ending else "")

    def _sleep(self, seconds: float) -> bool:
        """False if asked to stop meanwhile."""
        deadline = time.monotonic() + seconds
        while not self.stopping and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.05))  # a signal handler sets `stopping`; nothing else to wait on
        return not self.stopping

    def _on_signal(self, signum: int, _frame: object) -> None:
        if signum == signal.SIGHUP:  # the node's own meaning: reload its config
            if self.node is not None and self.node.poll() is None:
                self.node.send_signal(signal.SIGHUP)
            return
        self.stopping = True
        self.forward = self.forward or signum == signal.SIGTERM

    # -- one heart per run dir

    def _lock(self) -> bool:
        fd = os.open(self.run_dir / "heart.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        tmp = self.run_dir / "heart.json.tmp"
        tmp.write_text(json.dumps({"pid": os.getpid(), "config": self.config}))
        tmp.replace(self.run_dir / "heart.json")
        return True

    def _unlock(self) -> None:
        (self.run_dir / "heart.json").unlink(missing_ok=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def heart_pid(run_dir: Path) -> int | None:
    """The pid of the heart that runs in `run_dir`, if one does (it holds RUN/heart.lock)."""
    path = run_dir / "heart.lock"
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            return int(json.loads((run_dir / "heart.json").read_text())["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
    finally:
        os.close(fd)
    return None
