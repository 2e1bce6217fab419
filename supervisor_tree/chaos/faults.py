"""Carrying out one decision on the running tree, and healing afterwards.

Owns how each `FaultKind` is injected, always through the node or the worker itself,
never by a pid of our own choosing: signals go through the node's `kill` op (the node
signals only processes of its tree, by worker id); in-handler faults through the
worker's control socket (worker/faults.py); start faults through a file in the run
directory that the next incarnation reads before `init`, followed by a SIGKILL.

    injector = Injector(client)
    done = injector.inject(decision)     # Injected(pid, generation, at): what was hit, and when
    injector.heal(workers)               # clear every fault, wake stopped workers, drop start-fault files

A fault that cannot be injected (the worker is down, the node refused) raises
`NotInjected` with the reason; the run reports it as skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass

from supervisor_tree.chaos.schedule import Decision, FaultKind
from supervisor_tree.client import Client, ClientError, PeerBusy, PeerUnavailable

__all__ = ["Injector", "Injected", "NotInjected", "TRIGGER"]

TRIGGER = ("__chaos_trigger__",)  # a cast that makes an armed "exception" fault fire now
_SIGNALS = {FaultKind.KILL: "KILL", FaultKind.TERM: "TERM", FaultKind.STOP: "STOP",
            FaultKind.SLOW_START: "KILL", FaultKind.FAIL_START: "KILL"}


class NotInjected(Exception):
    """The decision could not be carried out; the message says why (it is reported as skipped)."""


@dataclass(frozen=True, slots=True)
class Injected:
    pid: int | None
    generation: int
    at: float  # wall clock (time.time()), comparable with the node's report timestamps
    mono: float  # monotonic, for durations


class Injector:
    def __init__(self, client: Client) -> None:
        self.client = client
        self.stopped: dict[str, int] = {}  # worker id -> generation we SIGSTOPped (to wake at heal)
        self.faulted: set[str] = set()  # workers with a fault armed in their handlers

    def _start_faults(self, worker_id: str, plan: dict[str, float]) -> None:
        directory = self.client.run_dir / "faults"
        directory.mkdir(mode=0o700, exist_ok=True)
        path = directory / f"{worker_id}.json"
        tmp = directory / f".{worker_id}.{os.getpid()}"
        tmp.write_text(json.dumps(plan))
        os.replace(tmp, path)

    def inject(self, d: Decision, generation: int) -> Injected:
        """Carry out `d` on the incarnation `generation` of its target (checked by the node's answer)."""
        at, mono = time.time(), time.monotonic()
        try:
            if d.fault is FaultKind.SLOW_START:
                self._start_faults(d.target, {"start_delay": d.params.get("delay", 0.3)})
            elif d.fault is FaultKind.FAIL_START:
                self._start_faults(d.target, {"fail_starts": int(d.params.get("fails", 1))})
            signal = _SIGNALS.get(d.fault)
            if signal is not None:
                answer = self.client.kill(d.target, signal)
                if d.fault is FaultKind.STOP:
                    self.stopped[d.target] = int(answer["generation"])
                return Injected(int(answer["pid"]), int(answer["generation"]), at, mono)
            return self._in_handler(d, generation, at, mono)
        except ClientError as exc:
            raise NotInjected(str(exc)) from None

    def _in_handler(self, d: Decision, generation: int, at: float, mono: float) -> Injected:
        args: dict[str, object] = {"kind": d.fault.value}
        if d.fault is FaultKind.SLOW:
            args |= {"ms": d.params.get("ms", 50.0), "duration": d.params.get("duration", 1.0)}
        elif d.fault is FaultKind.DROP:
            args |= {"probability": d.params.get("probability", 0.5), "duration": d.params.get("duration", 0.5),
                     "seed": d.i}
        target = self.client.resolve(d.target, timeout=1.0)
        if target.generation != generation:
            raise NotInjected(f"worker {d.target!r} restarted meanwhile (generation {target.generation})")
        self.client.control_worker(d.target, "fault", args, timeout=2.0)
        self.faulted.add(d.target)
        if d.fault is FaultKind.EXCEPTION:  # fire now even if no call is on its way; only this incarnation
            try:
                self.client.caller.send_cast(target.mailbox, TRIGGER, alive_fd=target.pidfd)
            except (PeerUnavailable, PeerBusy):
                pass  # it died already (a call got there first), or a call is queued that will fire it
        return Injected(target.pid, target.generation, at, mono)

    def heal(self, workers: list[str]) -> list[str]:
        """Undo what is still in effect; returns what it did, one line each."""
        done = []
        shutil.rmtree(self.client.run_dir / "faults", ignore_errors=True)
        for worker_id, generation in sorted(self.stopped.items()):
            try:
                target = self.client.resolve(worker_id, timeout=0.5)
                if target.generation == generation:
                    self.client.kill(worker_id, "CONT")
                    done.append(f"woke {worker_id} (SIGCONT)")
            except ClientError:
                pass  # already replaced (killed as hung): nothing to wake
        self.stopped.clear()
        for worker_id in sorted(self.faulted & set(workers)):
            try:
                self.client.control_worker(worker_id, "fault", {"kind": "clear"}, timeout=2.0)
                done.append(f"cleared the faults of {worker_id}")
            except ClientError:
                pass  # its incarnation died with them
        self.faulted.clear()
        return done
