"""The node's side of a tree placed beyond this machine (`[node] backend = "ray"`): launcher and transport.

Owns the few decisions node.py makes differently when its workers run elsewhere: which
launcher (`RayLauncher`, imported only then, so the default install never needs Ray),
the CURVE keys made at start (RUN/curve) and RUN/tcp_host (where clients take their
reply address), the inbound socket on tcp:// instead of ipc://, and their removal at the
end.  With the local backend every function here is a no-op or the local answer.

    launcher = placed_launcher(spec, run_dir, sys_path, by_id)      # None: the local one
    open_transport(run_dir, backend)                                # after RUN/key, before any socket
    endpoint = bind_inbound(sock, run_dir, backend)
    close_transport(ctx, run_dir)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import zmq

from supervisor_tree.config.placement import Backend
from supervisor_tree.node.launchers.base import Launcher
from supervisor_tree.node.records import WorkerRec
from supervisor_tree.spec import NodeSpec
from supervisor_tree.wire import channel, curve, rundir

__all__ = ["backend_of", "placed_launcher", "open_transport", "bind_inbound", "close_transport"]


def backend_of(spec: NodeSpec) -> Backend:
    backend = spec.extra.get("backend")
    return backend if isinstance(backend, Backend) else Backend()


def placed_launcher(spec: NodeSpec, run_dir: Path, sys_path: tuple[str, ...],
                    by_id: Mapping[str, WorkerRec]) -> Launcher | None:
    """The launcher for a non-local backend, or None (the node makes its local one)."""
    backend = backend_of(spec)
    if backend.is_local:
        return None
    from supervisor_tree.node.launchers.ray import RayLauncher  # only here: Ray is an optional extra

    def placement(worker_id: str) -> tuple[Mapping[str, float] | None, str | None]:
        rec = by_id.get(worker_id)
        return (rec.spec.resources, rec.spec.node_affinity) if rec is not None else (None, None)

    return RayLauncher(str(run_dir), backend, name=spec.name, placement=placement, sys_path=sys_path,
                       preload=tuple(spec.preload))


def open_transport(run_dir: Path, backend: Backend) -> None:
    """With workers elsewhere: fresh CURVE keys (RUN/curve, 0600), used by this process's tcp:// sockets,
    and RUN/tcp_host, the address clients on this machine take their reply sockets at."""
    if backend.is_local:
        return
    curve.use(curve.create_keys(run_dir))
    (run_dir / curve.TCP_HOST_FILE).write_text(backend.host + "\n")


def bind_inbound(sock: zmq.Socket[Any], run_dir: Path, backend: Backend) -> str:
    """Bind the inbound socket: RUN/inbound (ipc) here, tcp://HOST:PORT (CURVE) when workers are elsewhere."""
    if backend.is_local:
        endpoint = rundir.endpoint(run_dir, "inbound")
        sock.bind(endpoint)
        return endpoint
    return channel.bind(sock, f"tcp://{backend.host}:*")


def close_transport(ctx: zmq.Context[Any] | None, run_dir: Path) -> None:
    """Before the context terminates: the ZAP handler's thread stops; RUN/curve and RUN/tcp_host go."""
    if ctx is not None:
        curve.close_gate(ctx)
    if curve.held_keys(run_dir) is not None:
        curve.use(None)
        curve.forget_keys(run_dir, remove_file=True)
        (run_dir / curve.TCP_HOST_FILE).unlink(missing_ok=True)
