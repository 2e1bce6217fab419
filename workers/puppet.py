"""The test puppet: a worker that starts, fails, hangs, crashes or exits on command.

OTP's own supervisor tests drive a child like this one.  Everything it does is
chosen by its init args or by the messages it is sent (JSON-friendly dicts), so
scenario tests and the CLI can script it.

    # config:  start = "supervisor_tree.workers.puppet:Puppet", args = { on_shutdown = "slow:200" }
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
from collections.abc import Mapping

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


_ACTIONS = ("exit", "exit_code", "raise", "hang", "sleep", "spin")  # commands for calls and casts alike


def _fields(msg: object) -> Mapping[str, object]:
    """A command message's fields: a JSON object ({"cmd": ..., ...}); anything else has none."""
    return msg if isinstance(msg, dict) else {}


def _scalar(msg: Mapping[str, object], key: str) -> int | float | str:
    """A command's numeric field: a number, or its text."""
    value = msg[key]
    if isinstance(value, (int, float, str)):
        return value
    raise TypeError(f"puppet: {key!r} must be a number; got {value!r}")


def _reason(value: object) -> object:
    """A stop reason from JSON: "normal" | "shutdown" | ["shutdown", detail] | "crash" | other."""
    if isinstance(value, list) and len(value) == 2 and value[0] == "shutdown":
        return ("shutdown", value[1])
    if value == "crash":
        return RuntimeError("crash")
    return value


class Puppet(Worker):
    idempotent_calls = frozenset({"echo", "info", "count", "sleep"})  # reads: a caller may retry them

    def init(  # named args where the base takes **args
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
        fields = _fields(msg)
        cmd = fields.get("cmd")
        if cmd == "echo":
            return fields.get("value")
        if cmd == "info":
            return {"id": self.id, "generation": self.generation, "pid": os.getpid(), "args": self.args}
        if cmd == "count":
            return self.calls
        if cmd == "casts":
            return self.casts
        if cmd == "infos":
            return self.infos
        if isinstance(cmd, str) and cmd in _ACTIONS:
            return self._act(cmd, fields)
        raise ValueError(f"puppet: unknown call {msg!r}")

    def handle_cast(self, msg: object) -> None:
        self.casts += 1
        fields = _fields(msg)
        cmd = fields.get("cmd")
        if isinstance(cmd, str) and cmd in _ACTIONS:
            self._act(cmd, fields)

    def handle_info(self, msg: object) -> None:
        self.infos += 1

    def _act(self, cmd: str, msg: Mapping[str, object]) -> object:
        mark = msg.get("mark")
        if mark:  # tell a test that the handler has started (a FIFO it waits on, or a file)
            with open(str(mark), "wb", buffering=0) as f:
                f.write(b"!")
        if cmd == "exit":
            self.stop(_reason(msg.get("reason", "normal")))
            return "ok"
        if cmd == "exit_code":
            os._exit(int(_scalar(msg, "code")))
        if cmd == "raise":
            raise RuntimeError(str(msg.get("message", "boom")))
        if cmd == "hang":
            while True:
                time.sleep(3600)
        if cmd == "sleep":
            time.sleep(float(_scalar(msg, "seconds")))
            return "ok"
        if cmd == "spin":
            seconds = float(_scalar(msg, "seconds"))
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
