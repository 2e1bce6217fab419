"""The Launcher protocol the node depends on, the events a launcher reports, and exit reasons.

    launcher.start()
    launcher.spawn(SpawnRequest(...))        # Spawned(token, pid) follows, or SpawnFailed
    ...poll launcher.fileno(); launcher.read_events() -> [Spawned | SpawnFailed | Reaped]
    launcher.kill(pid, signal.SIGTERM)
    launcher.close()

Invariants every launcher keeps: for a pid, `Spawned` precedes its `Reaped`; a pid
is reported `Reaped` exactly once, with the reason mapped by `reason_from_status`.
A launcher that loses its helper (the local fork server) reports `ForkServerLost`
(after a `SpawnFailed` for each spawn it took with it), then `ForkServerRestarted`
once a new one is up; when none can be had, `read_events` raises `LauncherGone`.
"""

from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass, field
from typing import Protocol

from supervisor_tree.spec import KILLED, NORMAL, SHUTDOWN, ExitKind, ExitReason, error, shutdown_with
from supervisor_tree.worker.spawn import SpawnRequest

__all__ = ["Spawned", "SpawnFailed", "Reaped", "ForkServerLost", "ForkServerRestarted", "Event", "Launcher",
           "LauncherError", "LauncherGone", "CodeSnapshots", "reason_from_status", "take_reason_file"]


@dataclass(frozen=True, slots=True)
class Spawned:
    token: int
    pid: int
    where: tuple[str, str, str] | None = None  # (host, mailbox, control) of a worker the launcher placed elsewhere


@dataclass(frozen=True, slots=True)
class SpawnFailed:
    """The fork itself failed (e.g. EAGAIN: out of processes); no process exists for `token`."""

    token: int
    error: str


@dataclass(frozen=True, slots=True)
class Reaped:
    pid: int
    reason: ExitReason


@dataclass(frozen=True, slots=True)
class ForkServerLost:
    """The fork server died.  Running workers are not affected (the node reaps them); the
    spawns it had not answered were reported `SpawnFailed` just before this event."""

    pid: int
    reason: ExitReason
    lost_spawns: int  # spawns it took with it
    orphans: int  # half-made processes it left behind (killed)


@dataclass(frozen=True, slots=True)
class ForkServerRestarted:
    """A new fork server is up; the standbys the node still held were kept."""

    pid: int
    previous: int
    standbys_kept: int


Event = Spawned | SpawnFailed | Reaped | ForkServerLost | ForkServerRestarted


class LauncherError(RuntimeError):
    """The launcher could not start (or was used before start / after close)."""


class LauncherGone(LauncherError):
    """No fork server, and none can be started: no more spawns will come."""


@dataclass
class CodeSnapshots:
    """What a fork server holds of the project's code (worker/code.py), one snapshot per epoch.

    A worker forked in epoch e runs the files of `files[e]` with those hashes (and its
    own imports).  `refreshing` counts refreshes asked for and not yet answered."""

    files: dict[int, dict[str, str]] = field(default_factory=dict)
    epoch: int = 0
    problems: tuple[str, ...] = ()  # the latest refresh's import failures
    refreshing: int = 0
    own: frozenset[str] = frozenset()  # files the fork server itself runs: a refresh keeps them

    def received(self, epoch: int, files: dict[str, str], problems: tuple[str, ...], own: tuple[str, ...] = ()) -> None:
        self.files[epoch] = files
        self.own = frozenset(own)
        if epoch > self.epoch:
            self.epoch, self.problems = epoch, problems
            self.refreshing = max(0, self.refreshing - (1 if epoch > 1 else 0))


class Launcher(Protocol):
    def start(self) -> None: ...
    def spawn(self, req: SpawnRequest) -> None: ...
    # A start ahead of its turn (LocalLauncher.prepare): False when it cannot be; the spawn of the
    # same token is then its go.  discard(token): it will not come.
    def prepare(self, req: SpawnRequest) -> bool: ...
    def discard(self, token: int) -> None: ...
    def fileno(self) -> int: ...
    def read_events(self) -> list[Event]: ...
    def kill(self, pid: int, sig: int) -> None: ...
    def close(self) -> None: ...


# Exit status -> reason

_DEFAULT_REASONS = {80: SHUTDOWN, 81: shutdown_with("unknown"), 82: error("exit code 82 without a reason file")}


def reason_from_status(status: int, reason_file: str | None) -> ExitReason:
    """Map a wait status (and the worker's reason file, which is removed) to an ExitReason."""
    written = take_reason_file(reason_file) if reason_file else None
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGKILL:
            return KILLED
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return ExitReason(ExitKind.SIGNALLED, name)
    code = os.WEXITSTATUS(status)
    if code == 0:
        return NORMAL
    if code in _DEFAULT_REASONS:
        return written if written is not None else _DEFAULT_REASONS[code]
    return ExitReason(ExitKind.EXIT_CODE, str(code))


def take_reason_file(path: str) -> ExitReason | None:
    try:
        with open(path, "rb") as f:
            data = f.read(65536)  # a reason is a line; anything longer is not one of ours
    except OSError:
        return None
    try:
        os.unlink(path)
    except OSError:
        pass
    try:
        record = json.loads(data)
        reason = ExitReason(ExitKind(record["kind"]), record["detail"])
    except (ValueError, TypeError, KeyError):  # a torn or foreign file: fall back to the code's default
        return None
    return reason if reason.detail is None or isinstance(reason.detail, str) else None
