"""Prometheus metrics of a running tree, served on 127.0.0.1 (prometheus_client).

Owns `TreeCollector` (one `Snapshot` per scrape, turned into metric families) and
`Exporter` (the HTTP endpoint).  The exporter samples only when scraped, so an
unscraped endpoint costs the node nothing; a scrape costs the node one `status`
request without RSS (observe reads CPU and RSS itself, with psutil).

    exporter = Exporter(run_dir, port=9464)      # or port=0: any free port (exporter.port)
    exporter.start()                             # a daemon thread; curl 127.0.0.1:9464/metrics
    exporter.close()

A scrape costs the exporter's process about 25 ms of CPU with 200 workers (psutil for
each, the exposition text), so `supervise start` runs it beside the node, not in it.

Label cardinality is bounded: a worker's series carry `worker` and `supervisor`
labels; past `max_workers` running workers (simple_one_for_one pools can grow), the
rest are summed into worker="_other" (p99: their maximum).  Event kinds are a closed
set (others count as "other").  Started by `supervise start --metrics-port` or
`[metrics] port` (as a companion process that dies with the node), or on its own by
`supervise metrics`.
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from supervisor_tree.client import Client, ClientError
from supervisor_tree.observe.snapshot import Sampler, Snapshot, WorkerRow

__all__ = ["TreeCollector", "Exporter", "EVENT_KINDS", "OTHER", "die_with_parent"]

OTHER = "_other"
EVENT_KINDS = frozenset({
    "node_started", "tree_started", "started", "exited", "child_terminated", "restarting", "start_error",
    "shutdown_error", "reached_max_restart_intensity", "supervisor_exited", "auto_shutdown", "ignored", "hung",
    "node_stop", "node_failed", "profile_triggered", "profile_captured", "profile_failed",
})  # fmt: skip
_W = ["worker", "supervisor"]


class TreeCollector(Collector):
    """Samples the tree at each scrape.  Thread-safe: scrapes are served one at a time."""

    def __init__(self, run_dir: Path, max_workers: int = 500) -> None:
        self.run_dir = Path(run_dir)
        self.max_workers = max_workers
        self._lock = threading.Lock()
        self._client: Client | None = None
        self._sampler: Sampler | None = None

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            snap = self._sample()
        up = GaugeMetricFamily("supervise_up", "1 when the node answered this scrape's status request")
        up.add_metric([], 0.0 if snap is None else 1.0)
        yield up
        if snap is None:
            return
        yield from _worker_families(_bounded(snap.workers, self.max_workers))
        yield from _supervisor_families(snap, self._sampler)

    def _sample(self) -> Snapshot | None:
        # ZeroMQ sockets may change threads (scrapes come on the server's threads) under a lock.
        try:
            if self._client is None:
                self._client = Client(self.run_dir, timeout=5.0)
                self._sampler = Sampler(self._client)
            assert self._sampler is not None
            return self._sampler.sample()
        except ClientError:
            self._drop()  # the node is gone or restarting: a new client next scrape
            return None

    def _drop(self) -> None:
        if self._client is not None:
            self._client.close()
        self._client = self._sampler = None

    def close(self) -> None:
        with self._lock:
            self._drop()


def _bounded(workers: tuple[WorkerRow, ...], cap: int) -> list[tuple[str, str, WorkerRow | list[WorkerRow]]]:
    """(worker label, supervisor label, row or the rows summed into _other)."""
    rows = sorted(workers, key=lambda w: (w.state != "running", w.supervisor, w.id))
    out: list[tuple[str, str, WorkerRow | list[WorkerRow]]] = [(w.id, w.supervisor, w) for w in rows[:cap]]
    if len(rows) > cap:
        out.append((OTHER, OTHER, list(rows[cap:])))
    return out


def _sum(rows: WorkerRow | list[WorkerRow], get: Any, agg: Any = sum) -> float | None:
    values = [get(r) for r in (rows if isinstance(rows, list) else [rows])]
    known = [float(v) for v in values if v is not None]
    return agg(known) if known else None


def _worker_families(rows: list[tuple[str, str, WorkerRow | list[WorkerRow]]]) -> Iterator[Metric]:
    gauges = [
        ("supervise_worker_up", "1 while the worker's incarnation is running", lambda w: 1.0 if w.state == "running" else 0.0, sum),
        ("supervise_worker_rss_bytes", "resident set size (psutil)", lambda w: w.rss, sum),
        ("supervise_worker_mailbox_depth", "messages waiting in the worker's mailbox (heartbeat)", lambda w: w.mailbox, sum),
        ("supervise_worker_call_p99_seconds", "call latency p99 over the last heartbeat window",
         lambda w: None if w.p99_ms is None else w.p99_ms / 1000.0, max),
        ("supervise_worker_generation", "the incarnation's generation (node-wide)", lambda w: w.generation, max),
    ]
    for name, doc, get, agg in gauges:
        fam = GaugeMetricFamily(name, doc, labels=_W)
        for worker, sup, r in rows:
            value = _sum(r, get, agg)
            if value is not None:
                fam.add_metric([worker, sup], value)
        yield fam
    counters = [
        ("supervise_worker_cpu_seconds", "user + system CPU of the current incarnation (psutil)", lambda w: w.cpu_seconds),
        ("supervise_worker_calls", "calls handled by the current incarnation", lambda w: w.stats.get("calls")),
        ("supervise_worker_casts", "casts handled by the current incarnation", lambda w: w.stats.get("casts")),
        ("supervise_worker_errors", "callbacks that raised in the current incarnation", lambda w: w.stats.get("errors")),
        ("supervise_worker_mailbox_refused", "messages the mailbox_limit policy dropped or rejected",
         lambda w: _plus(w.stats.get("mailbox_dropped"), w.stats.get("mailbox_rejected"))),
        ("supervise_worker_restarts", "restarts of the worker since the node started (event log)", lambda w: w.restarts),
    ]
    for name, doc, get in counters:
        cfam = CounterMetricFamily(name, doc, labels=_W)
        for worker, sup, r in rows:
            value = _sum(r, lambda w, g=get: g(w) if isinstance(g(w), (int, float)) else None)
            if value is not None:
                cfam.add_metric([worker, sup], value)
        yield cfam


def _plus(a: object, b: object) -> int | None:
    if not isinstance(a, int) and not isinstance(b, int):
        return None
    return (a if isinstance(a, int) else 0) + (b if isinstance(b, int) else 0)


def _supervisor_families(snap: Snapshot, sampler: Sampler | None) -> Iterator[Metric]:
    intensity = GaugeMetricFamily("supervise_supervisor_intensity", "restarts allowed within the period", labels=["supervisor"])
    window = GaugeMetricFamily("supervise_supervisor_restarts_in_period", "restarts inside the intensity window now", labels=["supervisor"])
    headroom = GaugeMetricFamily("supervise_supervisor_headroom", "restarts left before the supervisor escalates", labels=["supervisor"])
    for s in snap.supervisors:
        intensity.add_metric([s.path], s.intensity)
        window.add_metric([s.path], s.restarts)
        headroom.add_metric([s.path], s.headroom)
    yield from (intensity, window, headroom)
    escalations = CounterMetricFamily("supervise_supervisor_escalations", "times the supervisor reached its restart intensity",
                                      labels=["supervisor"])
    events = CounterMetricFamily("supervise_events", "supervisor reports since the node started, by kind", labels=["event"])
    if sampler is not None:
        for s in snap.supervisors:
            escalations.add_metric([s.path], sampler.events.escalations.get(s.path, 0))
        kinds: dict[str, int] = {}
        for kind, n in sampler.events.kinds.items():
            key = kind if kind in EVENT_KINDS else "other"
            kinds[key] = kinds.get(key, 0) + n
        for kind, n in sorted(kinds.items()):
            events.add_metric([kind], n)
    yield from (escalations, events)


class Exporter:
    """The /metrics endpoint on 127.0.0.1:`port` (0: a free port, see `.port` after `start`)."""

    def __init__(self, run_dir: Path, port: int, max_workers: int = 500) -> None:
        self.collector = TreeCollector(run_dir, max_workers)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)
        self.requested = port
        self.port: int | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> int:
        from prometheus_client import start_http_server

        try:
            self._server, self._thread = start_http_server(self.requested, addr="127.0.0.1", registry=self.registry)
        except OSError as exc:
            raise OSError(f"metrics: cannot listen on 127.0.0.1:{self.requested} ({exc.strerror}); "
                          f"choose another port (--metrics-port or [metrics] port)") from None
        self.port = int(self._server.server_address[1])
        return self.port

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.collector.close()


def die_with_parent(parent_pid: int) -> None:
    """SIGTERM this process when `parent_pid` (the node that started it) dies, even by SIGKILL."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(1, signal.SIGTERM, 0, 0, 0) != 0:  # PR_SET_PDEATHSIG
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:  # it died before the prctl
        raise SystemExit(0)
