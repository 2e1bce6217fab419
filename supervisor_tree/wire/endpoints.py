"""Endpoints and sockets: ipc:// paths and their limits, socket options, bind/connect, moving a bound name.

The one place that knows what an endpoint string looks like.  `channel` re-exports these
names (`channel.bind(...)` reads as before at every call site).  Must not know frames.

    sock = make_socket(ctx, zmq.PULL, rcvhwm=1000)
    bind(sock, "ipc:///run/tree/w/a.mbx")
"""

from __future__ import annotations

import os
import select
from typing import Any

import zmq

from supervisor_tree.wire import curve

__all__ = ["IPC_PATH_MAX", "readable", "drain_fd", "ipc_path", "check_endpoint", "make_socket", "bind", "connect", "move_bind", "unlink_ipc"]

IPC_PATH_MAX = 107  # Linux: sizeof(sockaddr_un.sun_path) - 1


def readable(fd: int, timeout: float = 0.0) -> bool:
    """Whether `fd` (a pidfd: its process died) is readable within `timeout` s.

    poll, not select: select refuses descriptors past 1023, which a busy process
    (a server holding thousands of connections) has."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(int(timeout * 1000)))


def drain_fd(fd: int) -> None:
    """Read a non-blocking wake-up fd (a pipe or an eventfd) until it is empty."""
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def ipc_path(endpoint: str) -> str | None:
    """The filesystem path of an ipc:// endpoint, None for other transports."""
    return endpoint[len("ipc://") :] if endpoint.startswith("ipc://") else None


def check_endpoint(endpoint: str) -> str:
    """Return `endpoint`, or raise ValueError when its ipc path is longer than Linux allows."""
    path = ipc_path(endpoint)
    if path is not None and len(path.encode()) > IPC_PATH_MAX:
        raise ValueError(
            f"ipc path is {len(path.encode())} bytes, over Linux's limit of {IPC_PATH_MAX} for a "
            f"unix socket: {path}; use a shorter --run-dir (e.g. under /tmp)"
        )
    return endpoint


def make_socket(ctx: zmq.Context[Any], kind: int, **options: int) -> zmq.Socket[bytes]:
    """A socket with linger 0 (closing never blocks) plus `options` (names of zmq constants)."""
    sock: zmq.Socket[bytes] = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    for name, value in options.items():
        sock.setsockopt(getattr(zmq, name.upper()), value)
    return sock


def bind(sock: zmq.Socket[bytes], endpoint: str) -> str:
    """Bind (tcp://: CURVE, `curve.secure`); returns the endpoint bound (tcp://HOST:0 gets its port)."""
    curve.secure(sock, endpoint, server=True)
    sock.bind(check_endpoint(endpoint))
    return str(sock.getsockopt_string(zmq.LAST_ENDPOINT)) if curve.is_tcp(endpoint) else endpoint


def connect(sock: zmq.Socket[bytes], endpoint: str) -> None:
    curve.secure(sock, endpoint, server=False)
    sock.connect(check_endpoint(endpoint))


def move_bind(bound: str, endpoint: str) -> bool:
    """Make a socket bound at `bound` reachable at `endpoint` instead, without a new bind.

    Works for ipc:// endpoints on one filesystem: a unix socket is found by the
    name of its file, and rename(2) moves that name atomically (a standby binds
    early under a name of its own and takes its worker's name when activated;
    binding costs 0.1-0.3 ms on ext4).  False when it cannot be done: other
    transports, or another filesystem; then bind the endpoint afresh.
    """
    src, dst = ipc_path(bound), ipc_path(endpoint)
    if src is None or dst is None:
        return False
    check_endpoint(endpoint)
    try:
        os.rename(src, dst)
    except OSError:
        return False
    return True


def unlink_ipc(endpoint: str) -> None:
    """Remove an ipc endpoint's socket file (libzmq 4.3 leaves it behind when the socket closes)."""
    path = ipc_path(endpoint)
    if path:
        try:
            os.unlink(path)
        except OSError:
            pass
