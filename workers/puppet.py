"""The test puppet: a worker that starts, fails, hangs, crashes or exits on command.

OTP's own supervisor tests drive a child like this one.  Everything it does is
chosen by its init args or by the messages it is sent (JSON-friendly dicts), so
scenario tests and the CLI can script it.

    # config:  start = "workers.puppet:Puppet", args = { on_shutdown = "slow:200" }
    caller.call(mailbox, {"cmd": "echo", "value": 42})        # -> 42
    caller.call(mailbox, {"cmd": "exit", "reason": ["shutdown", "moved"]})  # -> "ok", exits {shutdown,moved}

Init args (all optional):
    start_delay   seconds to sleep in init
    fail_starts   fail this many start attempts, counted in `counter_file`
    counter_file  a file holding the number of start attempts so far
    ignore_start  return IGNORE from init
    on_shutdown   "die" (does not trap exits) | "ignore" (traps, never exits) |
                  "slow:<ms>" (traps, cleans up for ms, exits shutdown) |
                  "normal" (traps, exits normal instead)

Calls: echo, info, exit, exit_code, raise, hang, sleep, spin, count, casts, infos.
Casts: exit, exit_code, raise, hang, sleep, spin as for calls (no reply); anything
else is counted.  Those commands take an optional "mark": a path (e.g. a FIFO a
test waits on) written when the handler starts.
"""

from __future__ import annotations

import os
import time

from supervisor_tree import IGNORE, Worker
from supervisor_tree.spec import ExitReason


def hot_spin(seconds: float) -> int:
    """Busy CPU loop (the profiler tests look for this name)."""
    end = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < end:
        n += 1
    return n


def cool_spin(seconds: float) -> int:
    """Like hot_spin; the puppet runs it for a quarter of hot_spin's time."""
    end = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < end:
        n += 1
    return n


def _reason(value: object) -> object:
    """A stop reason from JSON: "normal" | "shutdown" | ["shutdown", detail] | "crash" | other."""
    if isinstance(value, list) and len(value) == 2 and value[0] == "shutdown":
        return ("shutdown", value[1])
    if value == "crash":
        return RuntimeError("crash")
    return value


class Puppet(Worker):
    def init(  # type: ignore[override]  # named args where the base takes **args
        self, start_delay: float = 0, fail_starts: int = 0, counter_file: str | None = None,
        ignore_start: bool = False, on_shutdown: str = "die", **extra: object,
    ) -> object:
        self.args = {"start_delay": start_delay, "fail_starts": fail_starts, "counter_file": counter_file,
                     "ignore_start": ignore_start, "on_shutdown": on_shutdown, **extra}
        self.calls = self.casts = self.infos = 0
        self.cleanup_ms = 0
        if on_shutdown == "die":
            self.trap_exits = False
        elif on_shutdown in ("ignore", "normal"):
            self.trap_exits = True
        elif on_shutdown.startswith("slow:"):
            self.trap_exits = True
            self.cleanup_ms = int(on_shutdown[len("slow:"):])
        else:
            raise ValueError(f'on_shutdown must be "die", "ignore", "slow:<ms>" or "normal"; got {on_shutdown!r}')
        self.on_shutdown = on_shutdown
        if start_delay:
            time.sleep(start_delay)
        if fail_starts:
            attempt = self._count_start_attempt(counter_file)
            if attempt <= fail_starts:
                raise RuntimeError(f"start attempt {attempt} of {fail_starts} fails on purpose")
        if ignore_start:
            return IGNORE
        return None

    @staticmethod
    def _count_start_attempt(counter_file: str | None) -> int:
        if not counter_file:
            raise ValueError("fail_starts needs counter_file (each start attempt is a new process)")
        try:
            with open(counter_file) as f:
                attempt = int(f.read().strip() or 0) + 1
        except FileNotFoundError:
            attempt = 1
        with open(counter_file, "w") as f:
            f.write(str(attempt))
        return attempt

    # -- messages --

    def handle_call(self, msg: object) -> object:
        self.calls += 1
        cmd = msg.get("cmd") if isinstance(msg, dict) else None
        if cmd == "echo":
            return msg.get("value")  # type: ignore[attr-defined]
        if cmd == "info":
            return {"id": self.id, "generation": self.generation, "pid": os.getpid(), "args": self.args}
        if cmd == "count":
            return self.calls
        if cmd == "casts":
            return self.casts
        if cmd == "infos":
            return self.infos
        if cmd in ("exit", "exit_code", "raise", "hang", "sleep", "spin"):
            return self._act(cmd, msg)  # type: ignore[arg-type]
        raise ValueError(f"puppet: unknown call {msg!r}")

    def handle_cast(self, msg: object) -> None:
        self.casts += 1
        cmd = msg.get("cmd") if isinstance(msg, dict) else None
        if cmd in ("exit", "exit_code", "raise", "hang", "sleep", "spin"):
            self._act(cmd, msg)  # type: ignore[arg-type]

    def handle_info(self, msg: object) -> None:
        self.infos += 1

    def _act(self, cmd: str, msg: dict[str, object]) -> object:
        mark = msg.get("mark")
        if mark:  # tell a test that the handler has started (a FIFO it waits on, or a file)
            with open(str(mark), "wb", buffering=0) as f:
                f.write(b"!")
        if cmd == "exit":
            self.stop(_reason(msg.get("reason", "normal")))
            return "ok"
        if cmd == "exit_code":
            os._exit(int(msg["code"]))  # type: ignore[call-overload]
        if cmd == "raise":
            raise RuntimeError(str(msg.get("message", "boom")))
        if cmd == "hang":
            while True:
                time.sleep(3600)
        if cmd == "sleep":
            time.sleep(float(msg["seconds"]))  # type: ignore[arg-type]
            return "ok"
        if cmd == "spin":
            seconds = float(msg["seconds"])  # type: ignore[arg-type]
            return hot_spin(seconds) + cool_spin(seconds / 4)
        raise AssertionError(cmd)

    # -- stopping --

    def handle_shutdown_request(self) -> bool:
        if self.on_shutdown == "ignore":
            return False
        if self.on_shutdown == "normal":
            self.stop("normal")
            return False
        return True

    def terminate(self, reason: ExitReason) -> None:
        if self.cleanup_ms:
            time.sleep(self.cleanup_ms / 1000)
