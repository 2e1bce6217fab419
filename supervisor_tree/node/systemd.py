"""systemd's notify protocol (sd_notify(3)), spoken by a node that systemd started.

    notifier = Notifier.from_environ()      # without NOTIFY_SOCKET every call below does nothing
    notifier.ready("tree default up: 7 workers")
    notifier.tick(time.monotonic())         # WATCHDOG=1 every WATCHDOG_USEC/2, called from the node's loop
    notifier.status("the fork server died (killed); starting a new one")
    notifier.stopping("stop requested")

Owns the datagram socket and the message format; knows nothing of trees.  The
variables are taken out of the environment, so that the fork server and the workers
do not inherit them.  `unit_file` writes the unit that runs a node this way.
"""

from __future__ import annotations

import logging
import os
import shlex
import socket
from collections.abc import MutableMapping, Sequence

log = logging.getLogger("supervisor_tree")

__all__ = ["Notifier", "unit_file"]


class Notifier:
    """One node's messages to systemd.  `address`: NOTIFY_SOCKET ("@name" is abstract)."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = "\0" + address[1:] if address and address.startswith("@") else address
        self.interval = watchdog_usec / 2e6 if watchdog_usec else None  # systemd's advice: half the timeout
        # Non-blocking: a receiver that stops reading (10 datagrams queued) must never stall the node's loop.
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK) \
            if address else None
        self._next_watchdog: float | None = None  # None until READY=1: systemd's watchdog starts then
        self._warned = False

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str] | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        address = env.pop("NOTIFY_SOCKET", None) or None
        usec, pid = env.pop("WATCHDOG_USEC", None), env.pop("WATCHDOG_PID", None)
        ours = pid is None or pid == str(os.getpid())  # else the watchdog is meant for another process
        watchdog = int(usec) if usec and usec.isdigit() and ours else None
        return cls(address, watchdog)

    @property
    def active(self) -> bool:
        return self._sock is not None

    def notify(self, *fields: str) -> None:
        if self._sock is None or self.address is None:
            return
        try:
            self._sock.sendto("\n".join(fields).encode(), self.address)
        except OSError as exc:
            if not self._warned:  # systemd went away, never listened, or does not read: say so once, go on
                why = "its queue is full" if isinstance(exc, BlockingIOError) else str(exc)
                log.warning("systemd notify socket %s: %s; notifications dropped", self.address.lstrip("\0"), why)
                self._warned = True

    def ready(self, status: str) -> None:
        self.notify("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")
        self._next_watchdog = 0.0

    def status(self, text: str) -> None:
        self.notify(f"STATUS={text}")

    def stopping(self, status: str) -> None:
        self.notify("STOPPING=1", f"STATUS={status}")

    def tick(self, now: float) -> None:
        """Call from the loop: WATCHDOG=1 once the interval has passed (a wedged loop stops sending)."""
        if self.interval is not None and self._next_watchdog is not None and now >= self._next_watchdog:
            self.notify("WATCHDOG=1")
            self._next_watchdog = now + self.interval

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def unit_file(*, name: str, exec_start: Sequence[str], working_directory: str, watchdog_sec: int,
              stop_timeout_sec: int | None, user: str | None = None, source: str | None = None,
              runtime_directory: str | None = None) -> str:
    """A systemd service unit (Type=notify) that runs one node in the foreground.

    `stop_timeout_sec` None: no limit (a worker's shutdown is "infinity").  `runtime_directory`:
    systemd creates /run/<it> (mode 0700, owned by User=) for the run dir, and removes it after.
    """
    lines = [
        "[Unit]",
        f"Description=supervisor_tree: tree {name}" + (f" ({source})" if source else ""),
        "After=network.target",
        "",
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",
        f"ExecStart={shlex.join(exec_start)}",
        "ExecReload=/bin/kill -HUP $MAINPID",  # `systemctl reload`: the node reloads its config (SIGHUP)
        # SIGTERM to the node alone: it stops the tree in reverse start order; whatever is
        # left when TimeoutStopSec runs out gets SIGKILL, the whole cgroup.
        "KillMode=mixed",
        f"TimeoutStopSec={'infinity' if stop_timeout_sec is None else stop_timeout_sec}",
        "Restart=on-failure",
        "RestartSec=1",
        f"WatchdogSec={watchdog_sec}",
        f"WorkingDirectory={working_directory}",
        "Environment=PYTHONUNBUFFERED=1",
    ]
    if user:
        lines.append(f"User={user}")
    if runtime_directory:
        lines += [f"RuntimeDirectory={runtime_directory}", "RuntimeDirectoryMode=0700"]
    lines += ["", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)
