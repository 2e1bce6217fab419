"""What a worker process sets up before it knows its job: a context, a PUSH to the node, signals.

A standby (pre-forked by the fork server) also binds its mailbox and control
sockets under names of its own, renamed to its worker's endpoints when activated.

    prepared = prepare("ipc://RUN/inbound", standby_in=None)
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zmq

from supervisor_tree.wire import channel

__all__ = ["Prepared", "prepare", "adopt", "mailbox_socket", "control_socket", "mark", "MARKS", "INBOUND_RECONNECT_MS"]

# A standby connects to the node's inbound socket before the node has bound it (the
# launcher starts first); libzmq's default 100 ms retry would delay the first "ready".
INBOUND_RECONNECT_MS = 10

_sigterm_handler: Callable[[], None] | None = None  # set by the incarnation once it runs

# When this process reached each step of its start (CLOCK_MONOTONIC ns, comparable across the
# processes of a host): "activated" (a standby read its request; a cold fork: the fork), "sockets"
# (its mailbox and control sockets at their endpoints), "ready" (just before it says so).  The
# worker's control op `marks` answers them: `supervise bench restart` prints where a restart's time goes.
MARKS: dict[str, int] = {}


def mark(step: str) -> None:
    MARKS[step] = time.monotonic_ns()


def on_sigterm(handler: Callable[[], None] | None) -> None:
    """Route SIGTERM to `handler` (the running incarnation's), or ignore it until one is set."""
    global _sigterm_handler
    _sigterm_handler = handler


def _on_sigterm(signum: int, frame: object) -> None:
    if _sigterm_handler is not None:
        _sigterm_handler()


@dataclass(slots=True)
class Prepared:
    """What a process sets up before it knows its job: a context, a PUSH to the node, signals.

    A standby also creates its mailbox and control sockets, bound under names of
    its own (`mailbox_at`, `control_at`) that it renames to its worker's endpoints
    when activated (`channel.move_bind`), and its first reply socket: nothing of
    them depends on the worker it becomes.
    """

    context: zmq.Context[Any]
    inbound: zmq.Socket[bytes]
    inbound_endpoint: str
    wake_r: int
    wake_w: int
    mailbox: zmq.Socket[bytes] | None = None
    mailbox_at: str = ""
    control: zmq.Socket[bytes] | None = None
    control_at: str = ""
    reply: zmq.Socket[bytes] | None = None  # the first reply socket (ReplySender), not connected yet


def prepare(inbound: str, standby_in: str | None = None,
            rehearse: Callable[[Prepared, str], None] | None = None) -> Prepared:
    """Make the context, connect to the node's `inbound`, install the SIGTERM handler.

    SIGTERM stays as the launcher left it (blocked) until the incarnation is ready
    for it.  `standby_in`: the run directory of a standby, which also binds its
    sockets there and rehearses an activation, touching (after the fork, copying)
    the memory an activation uses while nobody waits.
    """
    ctx = zmq.Context()
    sock = channel.make_socket(ctx, zmq.PUSH, reconnect_ivl=INBOUND_RECONNECT_MS)
    channel.connect(sock, inbound)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    signal.signal(signal.SIGTERM, _on_sigterm)
    prepared = Prepared(ctx, sock, inbound, wake_r, wake_w)
    if standby_in is not None:
        base = f"ipc://{standby_in}/w/.standby-{os.getpid()}"
        prepared.mailbox, prepared.mailbox_at = mailbox_socket(ctx), base + ".mbx"
        channel.bind(prepared.mailbox, prepared.mailbox_at)
        prepared.control, prepared.control_at = control_socket(ctx), base + ".ctl"
        channel.bind(prepared.control, prepared.control_at)
        prepared.reply = channel.ReplySender.make_socket(ctx)
        if rehearse is not None:
            rehearse(prepared, standby_in)
    return prepared


def mailbox_socket(ctx: zmq.Context[Any]) -> zmq.Socket[bytes]:
    return channel.make_socket(ctx, zmq.PULL, rcvhwm=100_000)


def control_socket(ctx: zmq.Context[Any]) -> zmq.Socket[bytes]:
    return channel.make_socket(ctx, zmq.PULL)


def adopt(ctx: zmq.Context[Any], sock: zmq.Socket[bytes] | None, bound_at: str, endpoint: str,
          make: Callable[[zmq.Context[Any]], zmq.Socket[bytes]]) -> zmq.Socket[bytes]:
    """The standby's socket renamed to `endpoint`, or a new socket bound there."""
    if sock is not None:
        if channel.move_bind(bound_at, endpoint):
            return sock
        sock.close(0)
        channel.unlink_ipc(bound_at)
    sock = make(ctx)
    channel.bind(sock, endpoint)
    return sock
