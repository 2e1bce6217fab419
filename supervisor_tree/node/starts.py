"""Starting workers: the SpawnRequest for a supervisor's Spawn, and starts prepared ahead of their turn.

A mixin of `node.Node`, which owns the state it reads.  `_spawn_worker` carries out a
Spawn.  `_start_ahead(run)`, after each decision of a supervisor, hands the workers its
plan will start next (a one_for_all or rest_for_one restart: while the node still stops
their siblings) to standbys ahead of their turn (`LocalLauncher.prepare`, with its output
FIFOs made, not yet announced in its log): each builds its incarnation and waits.  Its
Spawn, when it comes, is only the go (one byte): the standby takes its title, binds its
endpoints and runs init then, so init still runs strictly in start
order, each after the previous one's "ready" (OTP: start_link of child N returns before
child N+1 starts).  A prepared start whose plan no longer has it (a start failed, the
supervisor stopped) is discarded: its standby exits, unreported, having run nothing.

Invariant: `_ahead` maps (supervisor path, child id, generation) to the request handed
ahead, keyed by the generation the supervisor's next Spawn of that child will carry.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import cloudpickle

from supervisor_tree.node.plan import NODE
from supervisor_tree.node.records import SupRun, WorkerRec
from supervisor_tree.spec import DEFAULT_MAX_CONCURRENCY, ChildSpec, Heartbeat
from supervisor_tree.worker.spawn import SpawnRequest

if TYPE_CHECKING:
    from supervisor_tree.config.placement import Backend
    from supervisor_tree.node.launchers.base import Launcher
    from supervisor_tree.node.worker_logs import LogCollector

__all__ = ["Starts"]

_Ahead = tuple[str, str, int]  # (supervisor path, child id, generation)


class Starts:
    """Spawns, and the spawns handed ahead.  See the module docstring."""

    run_dir: Path
    backend: Backend
    inbound_ep: str
    sys_path: tuple[str, ...]
    launcher: Launcher
    logs: LogCollector
    sups: dict[str, SupRun]
    by_token: dict[int, WorkerRec]
    by_id: dict[str, WorkerRec]
    _generations: dict[str, int]
    _tokens: Iterator[int]
    _ahead: dict[_Ahead, SpawnRequest]

    # The host's (WorkerEvents', Node's), declared without a body: nothing here can shadow them.
    heartbeat_for: Callable[[ChildSpec], Heartbeat]
    set_timer: Callable[[str, tuple[object, ...], float], None]

    def _request(self, key: str, spec: ChildSpec, args: object, gen: int, token: int,
                 output: tuple[str, str] | None) -> SpawnRequest:
        here = self.backend.is_local  # elsewhere: the launcher names the endpoints (Spawned.where)
        base = self.run_dir / "w" / f"{key}-{gen}"
        start = spec.start if isinstance(spec.start, str) or spec.start is None else cloudpickle.dumps(spec.start)
        return SpawnRequest(
            token=token,
            worker_id=key,
            generation=gen,
            start=start or "",
            args=dict(args),  # type: ignore[call-overload]
            run_dir=str(self.run_dir),
            inbound=self.inbound_ep,
            mailbox=f"ipc://{base}.mbx" if here else "",
            control=f"ipc://{base}.ctl" if here else "",
            heartbeat_interval=self.heartbeat_for(spec).interval,
            sys_path=self.sys_path,
            oom_score_adj=spec.oom_score_adj,
            command=spec.command,
            output=output,
            max_concurrency=spec.max_concurrency or DEFAULT_MAX_CONCURRENCY,
            mailbox_limit=spec.mailbox_limit,
            mailbox_overflow=spec.mailbox_overflow.value,
        )

    def _spawn_worker(self, sup: str, key: str, spec: ChildSpec, args: object, gen: int) -> None:
        decided = time.monotonic_ns()  # the "spawning" mark: the supervisor decided to start it
        token = next(self._tokens)
        req = self._request(key, spec, args, gen, token, None)
        held = self._ahead.pop((sup, key, gen), None)
        if held is not None and held == dataclasses.replace(req, token=held.token, output=held.output):
            req = held  # its go: the standby holding it starts now
            self.logs.announce(key, gen)
        elif held is not None:
            self._discard(held)  # the spec changed meanwhile
        self._generations[key] = max(gen, self._generations.get(key, 0))
        rec = WorkerRec(key, sup, gen, spec, req.token, req.mailbox, req.control)
        previous = self.by_id.get(key)
        if previous is not None:
            rec.last_exit = previous.last_exit
            rec.marks = {k: v for k, v in previous.marks.items() if k in ("woke", "reaped")}
        rec.marks["spawning"] = decided
        self.by_token[req.token] = rec
        self.by_id[key] = rec
        if self.backend.is_local and req is not held:
            req = dataclasses.replace(req, output=self.logs.open(key, gen))
        self.launcher.spawn(req)
        self.set_timer(NODE, ("start_timeout", req.token), spec.start_timeout)

    def _start_ahead(self, run: SupRun) -> None:
        """Hand the workers `run`'s plan starts next to standbys; discard what it no longer starts."""
        wanted: dict[_Ahead, tuple[ChildSpec, object]] = {}
        plan = run.state.plan
        if plan is not None and self.backend.is_local:
            for key in plan.to_start:
                child = run.state.child(key)
                if child is not None and not child.spec.is_supervisor and child.spec.command is None:
                    wanted[(run.path, key, child.generation + 1)] = (child.spec, child.args)
        for ahead in [a for a in self._ahead if a[0] == run.path and a not in wanted]:
            self._discard(self._ahead.pop(ahead))
        for ahead, (spec, args) in wanted.items():
            if ahead not in self._ahead:
                _, key, gen = ahead
                output = self.logs.open(key, gen, announce=False)
                req = self._request(key, spec, args, gen, next(self._tokens), output)
                if not self.launcher.prepare(req):
                    self.logs.drop(key, gen)
                    return  # no standby at hand: the rest start as usual
                self._ahead[ahead] = req

    def _forget_ahead(self) -> None:
        """Discard the starts prepared for supervisors that are gone."""
        for ahead in [a for a in self._ahead if a[0] not in self.sups]:
            self._discard(self._ahead.pop(ahead))

    def _discard(self, req: SpawnRequest) -> None:
        self.launcher.discard(req.token)
        self.logs.drop(req.worker_id, req.generation)
