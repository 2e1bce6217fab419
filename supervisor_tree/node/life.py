"""How a node's life ends, in words: stop requests, signals, the reason its `node_stop` event
and the CLI give, and what systemd hears (systemd.py).

A mixin of `node.Node`, which owns the state it reads.  It decides nothing about the
tree; it names what happened.  Every ending is one sentence; the first one set wins (a second
signal adds to it):

    shutdown requested (control API stop)      shutdown requested (SIGTERM received)
    shutdown requested (SIGINT received); then a second SIGINT: every worker killed
    supervisor root reached its restart limit (5 restarts in 10 s): child "db" last exited {error,...}
    the tree failed to start: failed_to_start_child "db": ConnectionRefusedError(...)
    supervisor root shut down on its own (auto_shutdown): significant child "job" exited normal
    fork_server_lost: the fork server (pid 4121) died and a new one could not start: preloading failed: ...
    crash: KeyError: 'x'

`ended_on_request` tells the CLI (and so systemd and the heart) whether that was a success.
`last_ending(RUN/events.jsonl)` reads the newest one back (for the CLI and the heart).
"""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from supervisor_tree.node import reload_ops
from supervisor_tree.otp import supervisor as sv
from supervisor_tree.spec import KILLED, SHUTDOWN, ExitKind, ExitReason, NodeSpec

if TYPE_CHECKING:
    from supervisor_tree.node.eventlog import EventLog
    from supervisor_tree.node.records import SupRun
    from supervisor_tree.node.reload import ReloadService
    from supervisor_tree.node.systemd import Notifier

logger = logging.getLogger("supervisor_tree")

__all__ = ["Life", "last_ending"]

_TAIL = 1 << 16  # bytes of the event log's end searched for the newest node_stop


class Life:
    """Stop requests, signals and the node's ending.  See the module docstring."""

    spec: NodeSpec
    sups: dict[str, SupRun]
    events: EventLog | None
    notifier: Notifier
    started: bool
    stopping: bool
    exit_reason: ExitReason | None
    _signals: list[int]
    reloads: ReloadService

    ending: str | None
    ended_on_request: bool
    _last_exit: dict[tuple[str, str], str]
    _gave_up: dict[str, str]

    def feed(self, path: str, event: object) -> None: ...
    def _kill_all(self) -> None: ...

    def _init_life(self) -> None:
        self.ending, self.ended_on_request = None, False
        self._last_exit, self._gave_up = {}, {}

    # -- stopping

    def request_stop(self, why: str = "shutdown requested (control API stop)") -> None:
        """Stop the tree in order (reverse start order, shutdown timeouts honoured): a success."""
        if not self.stopping and "root" in self.sups:
            self.ended_on_request = self.ending is None
            self._stop_tree(why)

    def _stop_tree(self, why: str) -> None:
        self._end(why)
        if not self.stopping and "root" in self.sups:
            self.stopping = True
            self.notifier.stopping(why)
            self.feed("root", sv.StopRequested(SHUTDOWN))

    def _handle_signals(self) -> None:
        while self._signals:
            signum = self._signals.pop(0)
            if signum == signal.SIGHUP:  # reload the config the node was started with
                reload_ops.on_hup(self.reloads)
                continue
            name = signal.Signals(signum).name
            if self.stopping:
                logger.warning("second %s: killing every worker now", name)
                self.ending = f"{self.ending}; then a second {name}: every worker killed" if self.ending else \
                    f"second {name}: every worker killed"
                self._kill_all()
                self.exit_reason = KILLED
                return
            logger.info("%s: stopping the tree (children in reverse start order)", name)
            self.request_stop(f"shutdown requested ({name} received)")

    def _end(self, why: str) -> None:
        if self.ending is None:
            self.ending = why

    def _fork_server_gone(self, why: str) -> None:
        assert self.events is not None
        self.events.emit("node_failed", supervisor="root", reason=why, detail={"what_next": "stopping the tree"})
        self._stop_tree(why)

    # -- the words

    def describe_report(self, sup: str, kind: sv.ReportKind, key: str | None, reason: object,
                        detail: dict[str, object] | None) -> tuple[object, dict[str, object] | None]:
        """The reason and detail a supervisor report is written with; remembers what endings need.

        A `reached_max_restart_intensity` report gets the child's last exit reason and the
        limit in words ("5 restarts in 10 s"); OTP's report carries neither.
        """
        R = sv.ReportKind
        if key is not None and reason is not None and kind in (R.EXITED, R.START_ERROR):
            self._last_exit[(sup, key)] = str(reason)
        if kind is R.REACHED_MAX_RESTART_INTENSITY and detail and key is not None:
            n = detail.get("intensity")
            limit = f"{n} restart{'' if n == 1 else 's'} in {detail.get('period')} s"
            last = self._last_exit.get((sup, key), "unknown")
            why = f'supervisor {sup} reached its restart limit ({limit}): child "{key}" last exited {last}'
            if (nested := self._gave_up.get(f"{sup}/{key}")) is not None:
                why += f"; {nested}"
            self._gave_up[sup] = why
            return last, {**detail, "limit": limit}
        if kind is R.AUTO_SHUTDOWN and key is not None:
            self._gave_up[sup] = (f'supervisor {sup} shut down on its own (auto_shutdown): '
                                  f'significant child "{key}" exited {reason}')
        return reason, detail

    def gave_up(self, sup: str) -> str | None:
        return self._gave_up.get(sup)

    def _on_root_exit(self, reason: ExitReason) -> None:
        if (why := self._gave_up.get("root")) is not None:
            self._end(why)
        elif not self.started:
            self._end(f"the tree failed to start: {_start_failure(reason)}")
        else:
            self._end(f"supervisor root exited: {reason}")
        if self.stopping:  # STOPPING=1 was sent with the request
            self.notifier.status(self.ending or str(reason))
        else:
            self.notifier.stopping(self.ending or str(reason))

    def _emit_node_stop(self) -> None:
        if self.events is not None:
            detail = {"exit_reason": str(self.exit_reason), "on_request": self.ended_on_request}
            self.events.emit("node_stop", supervisor="root", reason=self.ending or str(self.exit_reason), detail=detail)


def _start_failure(reason: ExitReason) -> str:
    """`{shutdown,failed_to_start_child,db,R}` as 'failed_to_start_child "db": R' (R may nest the same way)."""
    if reason.kind is ExitKind.SHUTDOWN_WITH and reason.detail and reason.detail.startswith("failed_to_start_child,"):
        _, child, why = reason.detail.split(",", 2)
        return f'failed_to_start_child "{child}": {why}'
    return str(reason)


def last_ending(events: Path, since: float = 0.0) -> tuple[float, str] | None:
    """(time, reason) of the newest node_stop event in `events` written at or after `since` (epoch s)."""
    try:
        with open(events, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - _TAIL))
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if b'"node_stop"' not in line:
            continue
        try:
            event = json.loads(line)
            ts = float(event["ts"])
        except (ValueError, KeyError, TypeError):
            continue
        return (ts, str(event.get("reason"))) if ts >= since else None
    return None
