"""One look at a running tree: every worker's figures and every supervisor's intensity headroom.

Owns `Sampler`, which every tool of observe/ reads the node through: the node's
`status` (asked without RSS, so the node does no psutil work for us), the workers'
heartbeat figures it carries (`stats`), psutil for CPU and RSS (read here, in the
observer's process), and the event log for restart counts.  Rates (calls/s, CPU %)
come from two samples of the same incarnation.  It never imports the node.

    with Client(run_dir) as c:
        sampler = Sampler(c)
        snap = sampler.sample()          # CPU % and rates are None until the second sample
        time.sleep(1); snap = sampler.sample()
        [(w.id, w.cpu, w.rss, w.mailbox) for w in snap.workers]
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import psutil

from supervisor_tree.observe.events import EventTail

__all__ = ["WorkerRow", "SupervisorRow", "Snapshot", "Sampler", "StatusSource", "RECENT_S"]

RECENT_S = 60.0  # what "restarted recently" means (health's crash-loop check)


class StatusSource(Protocol):
    """What the sampler needs of a `Client`."""

    run_dir: Path

    def status(self, rss: bool = True) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class SupervisorRow:
    path: str
    strategy: str
    intensity: int
    period: int
    restarts: int  # restarts inside the intensity window now
    phase: str

    @property
    def headroom(self) -> int:
        """Restarts left before this supervisor gives up (OTP: more than `intensity` in `period`)."""
        return self.intensity - self.restarts


@dataclass(frozen=True, slots=True)
class WorkerRow:
    id: str
    supervisor: str  # its supervisor's path, e.g. "root/core"
    state: str  # running, restarting, starting, stopping, not_running
    restart: str  # permanent, transient, temporary
    pid: int | None
    generation: int | None
    uptime: float | None
    cpu: float | None  # percent of one core since the previous sample
    cpu_seconds: float | None  # user + system since the incarnation started
    rss: int | None  # bytes
    mailbox: int | None  # messages waiting in its mailbox (heartbeat figure)
    mailbox_limit: int | None
    calls: int | None
    call_rate: float | None  # calls/s since the previous sample
    p99_ms: float | None  # call latency p99 over the last heartbeat window
    restarts: int  # since the node started (from the event log)
    recent_restarts: int  # within the last RECENT_S seconds
    headroom: int  # its supervisor's intensity headroom
    stats: Mapping[str, object] = field(default_factory=dict)

    def as_json(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Snapshot:
    at: float  # time.time()
    node: Mapping[str, object]
    tree: Mapping[str, object] | None  # the status tree as the node sent it (the dashboard draws it)
    workers: tuple[WorkerRow, ...]
    supervisors: tuple[SupervisorRow, ...]
    stopping: bool

    def worker(self, worker_id: str) -> WorkerRow | None:
        return next((w for w in self.workers if w.id == worker_id), None)

    def as_json(self) -> dict[str, object]:
        return {
            "at": self.at,
            "node": dict(self.node),
            "stopping": self.stopping,
            "supervisors": [asdict(s) | {"headroom": s.headroom} for s in self.supervisors],
            "workers": [w.as_json() for w in self.workers],
        }


def walk(tree: Mapping[str, Any]) -> Iterator[tuple[Mapping[str, Any], Mapping[str, Any]]]:
    """(supervisor, child) pairs of a status tree, parents before children, in start order."""
    for child in tree.get("children", ()):
        yield tree, child
        nested = child.get("supervisor")
        if nested:
            yield from walk(nested)


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class Sampler:
    """Samples the tree; keeps what rates need between samples (psutil handles, call counters).

    Not thread-safe: one Sampler per thread, like its Client.
    """

    def __init__(self, client: StatusSource, events: EventTail | None = None) -> None:
        self.client = client
        self.events = events if events is not None else EventTail(client.run_dir / "events.jsonl")
        self._procs: dict[int, psutil.Process] = {}
        self._calls: dict[tuple[str, int], tuple[float, int]] = {}  # (id, generation) -> (when, calls)

    def sample(self) -> Snapshot:
        status = self.client.status(rss=False)
        now = time.monotonic()
        self.events.poll()
        tree = status.get("tree")
        sups: dict[str, SupervisorRow] = {}
        workers: list[WorkerRow] = []
        live: set[int] = set()
        if tree:
            sups[tree["path"]] = _sup_row(tree)
            for sup, child in walk(tree):
                nested = child.get("supervisor")
                if nested:
                    sups[nested["path"]] = _sup_row(nested)
                elif child.get("type") == "worker":
                    workers.append(self._worker_row(sups[sup["path"]], child, now, live))
        for pid in set(self._procs) - live:
            del self._procs[pid]
        seen = {(w.id, w.generation or 0) for w in workers}
        for key in set(self._calls) - seen:
            del self._calls[key]
        return Snapshot(time.time(), status.get("node") or {}, tree, tuple(workers), tuple(sups.values()),
                        bool(status.get("stopping")))

    def _worker_row(self, sup: SupervisorRow, child: Mapping[str, Any], now: float, live: set[int]) -> WorkerRow:
        stats: Mapping[str, object] = child.get("stats") or {}
        pid = _int(child.get("pid")) if child.get("state") == "running" else None
        cpu, cpu_s, rss = self._process(pid, live)
        calls = _int(stats.get("calls"))
        key = (str(child["id"]), int(child.get("generation") or 0))
        rate = None
        if calls is not None:
            before = self._calls.get(key)
            if before is not None and now > before[0]:
                rate = max(0.0, (calls - before[1]) / (now - before[0]))
            if before is None or calls != before[1]:
                self._calls[key] = (now, calls)
        p99 = stats.get("call_p99_us")
        return WorkerRow(
            id=key[0], supervisor=sup.path, state=str(child.get("state")), restart=str(child.get("restart")),
            pid=pid, generation=_int(child.get("generation")), uptime=child.get("uptime"),
            cpu=cpu, cpu_seconds=cpu_s, rss=rss, mailbox=_int(stats.get("mailbox_depth")), mailbox_limit=_int(stats.get("mailbox_limit")),
            calls=calls, call_rate=rate, p99_ms=None if not isinstance(p99, int) else p99 / 1000.0,
            restarts=self.events.restarts.get(key[0], 0), recent_restarts=self.events.restarts_since(key[0], time.time() - RECENT_S),
            headroom=sup.headroom, stats=stats,
        )

    def _process(self, pid: int | None, live: set[int]) -> tuple[float | None, float | None, int | None]:
        """CPU % since this pid's previous sample (None the first time), CPU seconds and RSS: one /proc read."""
        if pid is None:
            return None, None, None
        proc = self._procs.get(pid)
        first = proc is None
        try:
            if proc is None:
                proc = self._procs[pid] = psutil.Process(pid)
            with proc.oneshot():
                cpu = proc.cpu_percent(None)
                times = proc.cpu_times()
                rss = int(proc.memory_info().rss)
        except psutil.Error:
            self._procs.pop(pid, None)
            return None, None, None
        live.add(pid)
        return (None if first else cpu), times.user + times.system, rss


def _sup_row(tree: Mapping[str, Any]) -> SupervisorRow:
    return SupervisorRow(
        path=str(tree["path"]), strategy=str(tree["strategy"]), intensity=int(tree["intensity"]),
        period=int(tree["period"]), restarts=int(tree.get("restarts") or 0), phase=str(tree.get("phase")),
    )
