"""Profiles captured by themselves: ``[profile.trigger]`` thresholds, watched in the node.

Owns ``TriggerWatcher``, a ``ControlServer`` extension.  On every worker heartbeat it
compares the worker's mailbox depth (``max_batch``: the most messages one batch
drained since the last beat) and call p99 (``call_p99_us``, over the same window)
with the configured thresholds; when one is reached and the worker's cool-down has
passed, it emits ``profile_triggered`` and starts a capture in a background thread.
The thread never touches the node: it puts its outcome on a queue, and the node
thread, polling it from a node timer, emits ``profile_captured`` (detail: path,
samples) or ``profile_failed`` (reason; detail: the partial file, if any).  The
EventLog is not thread-safe, and the node loop must never wait for a capture.

    [profile.trigger]
    call_p99_ms = 50        # and/or mailbox_depth = 100
    cooldown = 300          # s between two captures of one worker
    duration = 10           # s per capture
    engine = "py-spy"       # py-spy needs only the pid; yappi opens its own Client
    workers = ["db"]        # default: every worker

At node stop, running captures are cancelled and joined (py-spy is stopped, yappi
is switched off in a worker that still lives).  The node registers it only when
``[profile.trigger]`` is configured.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from supervisor_tree.node.records import NodeState, WorkerRec

logger = logging.getLogger("supervisor_tree")

NODE = "__node__"
POLL_KEY: tuple[object, ...] = ("profile_trigger", "poll")
POLL_S = 0.1  # how often the node thread looks for finished captures while any runs
JOIN_S = 15.0  # at node stop: what a cancelled capture may take to let go


@dataclass(frozen=True, slots=True)
class TriggerConfig:
    mailbox_depth: int | None
    call_p99_ms: float | None
    cooldown: float
    duration: float
    engine: str
    workers: frozenset[str] | None  # None: every worker

    @classmethod
    def from_mapping(cls, t: Mapping[str, object]) -> TriggerConfig:
        workers = t.get("workers")
        depth, p99 = t.get("mailbox_depth"), t.get("call_p99_ms")
        return cls(
            mailbox_depth=None if depth is None else int(depth),  # type: ignore[call-overload]
            call_p99_ms=None if p99 is None else float(p99),  # type: ignore[arg-type]
            cooldown=float(t.get("cooldown", 300.0)),  # type: ignore[arg-type]
            duration=float(t.get("duration", 10.0)),  # type: ignore[arg-type]
            engine=str(t.get("engine") or "py-spy"),
            workers=None if workers is None else frozenset(str(w) for w in workers),  # type: ignore[attr-defined]
        )


@dataclass(slots=True)
class _Job:
    worker_id: str
    supervisor: str | None
    pid: int
    generation: int
    thread: threading.Thread | None = None
    cancel: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True, slots=True)
class _Outcome:
    job: _Job
    path: str | None
    samples: int | None
    error: str | None


class TriggerWatcher:
    """The node extension; see the module docstring.  All methods run in the node thread."""

    def __init__(self, node: NodeState, config: TriggerConfig, profiles_dir: str) -> None:
        self.node = node
        self.config = config
        self.profiles_dir = profiles_dir
        self.last_fired: dict[str, float] = {}  # worker id -> monotonic time of its last trigger
        self.jobs: dict[str, _Job] = {}  # worker id -> the capture running for it
        self.outcomes: queue.SimpleQueue[_Outcome] = queue.SimpleQueue()
        self._closed = False

    @classmethod
    def from_node(cls, node: NodeState) -> list[TriggerWatcher]:
        """``[watcher]`` when the node's config has ``[profile.trigger]``, else ``[]``."""
        profile = node.spec.extra.get("profile")
        if not isinstance(profile, Mapping) or not isinstance(profile.get("trigger"), Mapping):
            return []
        return [cls(node, TriggerConfig.from_mapping(profile["trigger"]), str(profile.get("dir") or "profiles"))]

    # ------------------------------------------------------------------ hooks

    def on_stats(self, rec: WorkerRec) -> None:
        cfg = self.config
        wid = rec.worker_id
        if self._closed or rec.pid is None or wid in self.jobs:
            return
        if cfg.workers is not None and wid not in cfg.workers:
            return
        crossed = self._crossed(rec.stats)
        if crossed is None:
            return
        now = time.monotonic()
        last = self.last_fired.get(wid)
        if last is not None and now - last < cfg.cooldown:
            return
        self.last_fired[wid] = now
        threshold, value, limit, reason = crossed
        assert self.node.events is not None
        self.node.events.emit(
            "profile_triggered", supervisor=rec.sup, child=wid, pid=rec.pid, generation=rec.generation,
            reason=reason, detail={"threshold": threshold, "value": value, "limit": limit,
                                   "engine": cfg.engine, "duration": cfg.duration},
        )
        job = _Job(wid, rec.sup, rec.pid, rec.generation)
        job.thread = threading.Thread(target=self._capture, args=(job,), daemon=True,
                                      name=f"supervisor_tree-profile-trigger-{wid}")
        self.jobs[wid] = job
        job.thread.start()
        self.node.set_timer(NODE, POLL_KEY, POLL_S)

    def _crossed(self, stats: Mapping[str, object]) -> tuple[str, float, float, str] | None:
        cfg = self.config
        if cfg.mailbox_depth is not None:
            depth = stats.get("max_batch")
            if isinstance(depth, (int, float)) and depth >= cfg.mailbox_depth:
                return ("mailbox_depth", float(depth), float(cfg.mailbox_depth),
                        f"mailbox depth {depth:g} >= {cfg.mailbox_depth} (threshold mailbox_depth)")
        if cfg.call_p99_ms is not None:
            p99_us = stats.get("call_p99_us")
            if isinstance(p99_us, (int, float)) and p99_us / 1000.0 >= cfg.call_p99_ms:
                ms = round(p99_us / 1000.0, 3)
                return ("call_p99_ms", ms, cfg.call_p99_ms,
                        f"call p99 {ms:g} ms >= {cfg.call_p99_ms:g} ms (threshold call_p99_ms)")
        return None

    def on_inbound(self, kind: str, msg: tuple[object, ...]) -> bool:
        return False

    def on_timer(self, key: tuple[object, ...]) -> None:
        if key != POLL_KEY:
            return
        self._drain()
        if self.jobs:
            self.node.set_timer(NODE, POLL_KEY, POLL_S)

    def close(self) -> None:
        """NodeState stop: cancel every running capture and wait for it (bounded)."""
        self._closed = True
        jobs = list(self.jobs.values())
        for job in jobs:
            job.cancel.set()
        deadline = time.monotonic() + JOIN_S
        for job in jobs:
            if job.thread is not None:
                job.thread.join(max(0.0, deadline - time.monotonic()))
                if job.thread.is_alive():
                    logger.warning("profile capture of %s did not stop within %gs", job.worker_id, JOIN_S)
        # The event log may be closed already: outcomes now go to the log only.
        while True:
            try:
                out = self.outcomes.get_nowait()
            except queue.Empty:
                break
            logger.info("profile of %s at node stop: %s", out.job.worker_id, out.error or out.path)
        self.jobs.clear()

    # ------------------------------------------------------------------ node thread

    def _drain(self) -> None:
        assert self.node.events is not None
        while True:
            try:
                out = self.outcomes.get_nowait()
            except queue.Empty:
                return
            job = out.job
            self.jobs.pop(job.worker_id, None)
            common = {"supervisor": job.supervisor, "child": job.worker_id, "pid": job.pid,
                      "generation": job.generation}
            if out.error is None:
                self.node.events.emit("profile_captured", **common,  # type: ignore[arg-type]
                                      detail={"path": out.path, "samples": out.samples})
            else:
                detail: dict[str, object] | None = {"path": out.path, "samples": out.samples} if out.path else None
                self.node.events.emit("profile_failed", **common, reason=out.error,  # type: ignore[arg-type]
                                      detail=detail)

    # ------------------------------------------------------------------ capture thread

    def _capture(self, job: _Job) -> None:
        """The capture thread: never touches the node or its event log; reports on the queue."""
        try:
            written, taken = self._run(job)
            outcome = _Outcome(job, written, taken, None)
        except Exception as exc:  # noqa: BLE001 - every outcome is reported, the thread never dies silently
            path: str | None = getattr(exc, "path", None)
            partial = getattr(exc, "partial", None)
            samples = int(partial.meta.samples) if partial is not None and path else None
            outcome = _Outcome(job, path, samples, str(exc) or type(exc).__name__)
        self.outcomes.put(outcome)

    def _run(self, job: _Job) -> tuple[str, int]:
        from supervisor_tree.profiling.capture import Format, Target, capture, write
        from supervisor_tree.profiling.exited import WorkerExited
        from supervisor_tree.profiling.remote import capture_options, control_of, write_partial

        options, fmt = capture_options(engine=self.config.engine, duration=self.config.duration, fmt="svg")
        target = Target(job.worker_id, job.pid, job.generation)
        try:
            if options.engine.value == "yappi":
                from supervisor_tree.client import Client

                # Its own Client and zmq context: this thread is not the node's.
                with Client(self.node.run_dir, timeout=10.0) as client:
                    profile = capture(target, options, control_of(client, job.worker_id), cancel=job.cancel)
            else:
                profile = capture(target, options, cancel=job.cancel)
        except WorkerExited as exc:
            raise write_partial(exc, fmt, None, self.profiles_dir) from None
        return write(profile, Format.SVG, None, self.profiles_dir), profile.meta.samples
