"""The Ray launcher: the node's workers placed as Ray actors on a Ray cluster (`[node] backend = "ray"`).

The supervisors stay in the node, pure, as with the local launcher; this module only
starts, signals and reaps, through Ray.  Each child id gets one `WorkerHost` actor
(`ray_host.py`), placed by Ray with the child's `resources` and `node_affinity`, with
Ray's own restarts off (`max_restarts=0`, `max_task_retries=0`): our supervisor decides.
The actor runs a fork server on its host, so restarting a child whose actor lives is a
standby activation there; a child whose actor died gets a new actor, wherever Ray finds
room (a lost Ray node's workers come back elsewhere, under the tree's rules).

Exit detection: each incarnation has an outstanding `wait_exit` call on its actor; its
answer is the reason mapped on the worker's host; a `RayActorError` instead means the
actor died, and the reason is `node_lost` when its Ray node is no longer alive, else
`{error, "ray actor died: ..."}`.  Missed heartbeats (the node's own) catch the rest.

    launcher = RayLauncher(run_dir, Backend("ray", "auto"), name="spread", placement=lambda wid: ({}, None))
    launcher.start()                       # ray.init
    launcher.spawn(req)                    # Spawned(token, pid, where=(host, mailbox, control)) follows
    launcher.close()                       # every actor killed; ray.shutdown

Only this module and `ray_host.py` import Ray (an import contract keeps it so).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from supervisor_tree.config.placement import Backend
from supervisor_tree.node.launchers.base import Event, LauncherError, Reaped, Spawned, SpawnFailed
from supervisor_tree.node.launchers.ray_host import WorkerHost
from supervisor_tree.spec import ExitKind, ExitReason
from supervisor_tree.wire import auth, curve
from supervisor_tree.worker.spawn import SpawnRequest

log = logging.getLogger(__name__)

__all__ = ["RayLauncher", "Placement"]

Placement = Callable[[str], tuple[Mapping[str, float] | None, str | None]]  # child id -> (resources, node id)
_UNAVAILABLE_RETRY = 0.2  # seconds between asking an unreachable actor again
_SPECIAL = {"CPU": "num_cpus", "GPU": "num_gpus", "memory": "memory"}  # Ray takes these as options, not resources


class _Actor:
    """One child's WorkerHost as the node knows it."""

    def __init__(self, handle: Any, node_id: str, host: str) -> None:
        self.handle, self.node_id, self.host = handle, node_id, host
        self.pids: set[int] = set()
        self.dead = False


class RayLauncher:
    """Workers as Ray actors: see the module docstring.  `placement` names a child's resources and node."""

    def __init__(self, run_dir: str, backend: Backend, *, name: str, placement: Placement,
                 sys_path: tuple[str, ...] = (), preload: tuple[str, ...] = ()) -> None:
        self.run_dir = os.path.abspath(run_dir)
        self.preload = preload
        self.backend, self.name, self.placement, self.sys_path = backend, name, placement, sys_path
        self._actors: dict[str, _Actor] = {}
        self._by_pid: dict[int, _Actor] = {}
        self._events: list[Event] = []
        self._later: list[Callable[[], None]] = []
        self._lock = threading.Lock()  # Ray's callback threads post events; the node reads them
        self._wake = -1
        self._remote: Any = None
        self._closed = False
        self.standby_pids: list[int] = []  # the node's status asks; standbys live on the actors' hosts

    def start(self) -> None:
        """Connect to the Ray cluster at `backend.address` (the node's run key and CURVE keys must exist)."""
        if self._wake >= 0:
            raise LauncherError("RayLauncher.start() was already called")
        self._secret = (Path(self.run_dir) / auth.KEY_FILE).read_bytes()
        self._keys = curve.keys_for(self.run_dir)
        ray.init(address=self.backend.address, namespace=f"supervise-{self.name}", log_to_driver=False,
                 configure_logging=False, include_dashboard=False if self.backend.address == "local" else None)
        self._remote = ray.remote(max_restarts=0, max_task_retries=0, max_concurrency=16)(WorkerHost)
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)

    def fileno(self) -> int:
        return self._wake

    def _post(self, event: Event) -> None:
        with self._lock:
            self._events.append(event)
        self._post_wake()

    def _post_wake(self) -> None:
        try:
            os.eventfd_write(self._wake, 1)
        except OSError:  # closed: the node is stopping
            pass

    def read_events(self) -> list[Event]:
        try:
            os.eventfd_read(self._wake)
        except BlockingIOError:
            pass
        with self._lock:
            events, self._events = self._events, []
            later, self._later = self._later, []
        for call in later:  # answers that must reach the node on its own thread (profile_async)
            call()
        return events

    # -- spawning

    def spawn(self, req: SpawnRequest) -> None:
        """Ask the child's actor (made now if it has none alive) for an incarnation; Spawned or SpawnFailed follows."""
        try:
            actor = self._actor_for(req)
        except Exception as exc:  # noqa: BLE001 - bad options, a cluster gone: a start failure of this child
            self._post(SpawnFailed(req.token, f"ray: cannot place {req.worker_id!r}: {exc}"))
            return
        future: Future[Any] = actor.handle.spawn.remote(req).future()
        future.add_done_callback(lambda f: self._spawned(req, actor, f))

    def prepare(self, req: SpawnRequest) -> bool:
        return False  # an actor's incarnation is made when it is its turn

    def discard(self, token: int) -> None:
        pass

    def _actor_for(self, req: SpawnRequest) -> _Actor:
        actor = self._actors.get(req.worker_id)
        if actor is not None and not actor.dead:
            return actor
        resources, node_id = self.placement(req.worker_id)
        options: dict[str, Any] = {"num_cpus": 0, "name": f"{req.worker_id}#{req.generation}"}
        extra = dict(resources or {})
        for key, option in _SPECIAL.items():
            if key in extra:
                options[option] = extra.pop(key)
        if extra:
            options["resources"] = extra
        if node_id:
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id, soft=False)
        handle = self._remote.options(**options).remote(
            self.name, req.worker_id, self._secret, self._keys, req.inbound, self.sys_path,
            (*self.preload, *((req.start.partition(":")[0],) if isinstance(req.start, str) and req.start else ())))
        actor = _Actor(handle, "", "")
        self._actors[req.worker_id] = actor
        return actor

    def _spawned(self, req: SpawnRequest, actor: _Actor, future: Future[Any]) -> None:
        try:
            kind, value, host, mailbox, control, node_id = future.result()
        except Exception as exc:  # noqa: BLE001 - the actor died or could not be made
            actor.dead = True
            self._post(SpawnFailed(req.token, self._death(actor, exc)))
            return
        if kind != "spawned" or not isinstance(value, int):
            self._post(SpawnFailed(req.token, f"ray: {value}"))
            return
        pid = value
        actor.host, actor.node_id = host, node_id
        actor.pids.add(pid)
        self._by_pid[pid] = actor
        self._post(Spawned(req.token, pid, (host, mailbox, control)))
        self._watch(pid, actor)

    def _watch(self, pid: int, actor: _Actor) -> None:
        if not self._closed:
            actor.handle.wait_exit.remote(pid).future().add_done_callback(lambda f: self._exited(pid, actor, f))

    def _exited(self, pid: int, actor: _Actor, future: Future[Any]) -> None:
        try:
            kind, detail = future.result()
            reason = ExitReason(ExitKind(kind), detail)
        except ray.exceptions.ActorUnavailableError:
            # Ray cannot reach the actor just now (a broken connection, a node not yet declared dead):
            # not an exit.  Ask again shortly; a dead actor answers ActorDiedError, a live one its reason.
            threading.Timer(_UNAVAILABLE_RETRY, self._watch, (pid, actor)).start()
            return
        except Exception as exc:  # noqa: BLE001 - the actor (and so the worker) is gone
            actor.dead = True
            why = self._death(actor, exc)
            kind_ = ExitKind.NODE_LOST if why.startswith("node_lost") else ExitKind.ERROR
            reason = ExitReason(kind_, why.split(": ", 1)[1] if kind_ is ExitKind.NODE_LOST else why)
        actor.pids.discard(pid)
        self._by_pid.pop(pid, None)
        self._post(Reaped(pid, reason))

    def _death(self, actor: _Actor, exc: BaseException) -> str:
        """`node_lost: ...` when the actor's Ray node is no longer alive, else `ray actor died: ...`."""
        node_id = actor.node_id or _node_of(exc)
        if node_id and not _node_alive(node_id):
            return f"node_lost: Ray node {node_id[:12]} ({actor.host or 'its host'}) left the cluster"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"ray actor died: {first[:200]}"

    # -- signals, profiles, the end

    def kill(self, pid: int, sig: int) -> None:
        actor = self._by_pid.get(pid)
        if actor is not None and not actor.dead:
            actor.handle.kill.remote(pid, sig)

    def host_of(self, pid: int) -> str | None:
        actor = self._by_pid.get(pid)
        return actor.host if actor is not None else None

    def profile_async(self, pid: int, seconds: float, rate: int, done: Callable[[bytes | str], None]) -> None:
        """py-spy on the worker's own host, through its actor; `done(raw collapsed bytes | error text)` is
        called from `read_events` (the node's thread) once it is over.  Never blocks."""
        actor = self._by_pid.get(pid)
        if actor is None or actor.dead:
            raise LauncherError(f"no live Ray actor holds pid {pid}")
        future: Future[Any] = actor.handle.profile.remote(pid, seconds, rate, "raw").future()

        def finished(f: Future[Any]) -> None:
            try:
                outcome: bytes | str = bytes(f.result())
            except Exception as exc:  # noqa: BLE001 - py-spy's failure or the actor's death, told to the caller
                outcome = str(exc).strip().splitlines()[-1][:400] if str(exc).strip() else type(exc).__name__
            with self._lock:
                self._later.append(lambda: done(outcome))
            self._post_wake()

        future.add_done_callback(finished)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        closing = [a.handle.close.remote() for a in self._actors.values() if not a.dead]
        try:
            ray.wait(closing, num_returns=len(closing), timeout=10)
        except Exception:  # noqa: BLE001 - a cluster already gone: the kills below are what matters
            pass
        for actor in self._actors.values():
            try:
                ray.kill(actor.handle, no_restart=True)
            except Exception:  # noqa: BLE001 - already dead
                pass
        ray.shutdown()
        if self._wake >= 0:
            os.close(self._wake)
            self._wake = -1



def _node_of(exc: BaseException) -> str | None:
    context = getattr(exc, "actor_died_error_context", None) or getattr(exc, "_actor_died_error_context", None)
    node_id = getattr(context, "node_id", None)
    return node_id.hex() if isinstance(node_id, bytes) else (str(node_id) if node_id else None)


def _node_alive(node_id: str) -> bool:
    try:
        return any(n.get("NodeID") == node_id and n.get("Alive") for n in ray.nodes())
    except Exception:  # noqa: BLE001 - cannot ask the cluster: do not claim the node is lost
        return True
