"""Carrying out a reload in the node's loop: one step at a time, each answered before the next.

Owns the reload in progress: it submits each step of a plan (node/reload_plan.py)
to its supervisor as a dynamic-API call of the node's own (`ControlServer.submit_own`),
or asks the fork server to import the project's code again, and goes on when the
answer comes; it never blocks the loop (a 50 ms node timer watches what has no
answer to wait for: a refresh, the config check of a SIGHUP, a supervisor that
went away).  Every step is an event (`reload_step`); the first step that fails
stops the reload there and the outcome says which step, what was applied and
what was not.  The tree keeps running either way.  The control operations that
start a reload are in node/reload_ops.py.

    service = ReloadService(node)          # a control extension; node.reloads
    service.start(Job(kind="config", steps=..., new_spec=spec, reply=...))
"""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from supervisor_tree.config.diff import child_ids
from supervisor_tree.node.control import ControlServer
from supervisor_tree.node.plan import NODE
from supervisor_tree.node.records import NodeState
from supervisor_tree.node.reload_plan import RESTARTS, Step, step_json, step_line
from supervisor_tree.otp import supervisor as sv
from supervisor_tree.spec import ChildSpec, NodeSpec, SupervisorSpec
from supervisor_tree.worker.code import file_hash

logger = logging.getLogger("supervisor_tree")

__all__ = ["ReloadService", "Job", "ReloadHost", "HashCache", "TIMER"]

TIMER = ("reload",)
POLL = 0.05
REFRESH_TIMEOUT = 120.0

Answer = Callable[[bool, object], None]  # (ok, value) to the client that asked, if any


class ReloadHost(NodeState, Protocol):
    """What a reload needs of the node beyond NodeState."""

    sys_path: tuple[str, ...]
    control: ControlServer | None


@dataclass
class Job:
    """One reload: its plan and how far it got."""

    kind: str  # "config" | "code"
    steps: list[Step]
    answer: Answer | None
    new_spec: NodeSpec | None = None  # config: what node.spec becomes once every step is applied
    summary: dict[str, object] = field(default_factory=dict)  # plan extras for the answer (unchanged, notes, ...)
    at: int = 0  # index of the step in flight
    applied: list[int] = field(default_factory=list)
    skipped: list[dict[str, object]] = field(default_factory=list)
    failed: dict[str, object] | None = None
    waiting: str = ""  # what the step in flight waits for: "reply", "refresh"
    since: float = field(default_factory=time.monotonic)
    refresh_epoch: int = 0
    removing: bool = False  # a remove step between its terminate and its delete

    @property
    def step(self) -> Step:
        return self.steps[self.at]


class HashCache:
    """file -> hash, computed again only when the file's stat changes."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[tuple[int, int, int], str]] = {}

    def __call__(self, path: str) -> str:
        try:
            st = os.stat(path)
        except OSError:
            return "missing"
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        hit = self._cache.get(path)
        if hit is not None and hit[0] == key:
            return hit[1]
        value = file_hash(path)
        self._cache[path] = (key, value)
        return value


class ReloadService:
    """The node's reloads (a control extension): at most one at a time."""

    def __init__(self, node: ReloadHost) -> None:
        self.node = node
        self.job: Job | None = None
        self.declared: set[str] = set(child_ids(node.spec.tree))  # ids some config declared (not start_child's)
        self.hashes = HashCache()
        self.watchers: list[Callable[[], bool]] = []  # polled every 50 ms until they return True (reload_ops)
        self.pending: str | None = None  # a reload being checked before it starts (reload_ops)
        self.checker: subprocess.Popen[bytes] | None = None  # that check (`supervise check`), while it runs

    # ------------------------------------------------------------------ control extension hooks

    def on_stats(self, rec: object) -> None:
        pass

    def on_inbound(self, kind: str, msg: tuple[object, ...]) -> bool:
        return False

    def on_timer(self, key: tuple[object, ...]) -> None:
        if key != TIMER:
            return
        self.watchers = [w for w in self.watchers if not w()]
        if self.job is not None:
            self._watch(self.job)
        if self.job is not None or self.watchers:
            self.node.set_timer(NODE, TIMER, POLL)

    def close(self) -> None:
        if self.checker is not None and self.checker.poll() is None:
            self.checker.kill()
            self.checker.wait()
        job, self.job = self.job, None
        if job is not None and job.answer is not None:
            job.answer(False, f"the node stopped during the reload, at step {job.step.n} ({step_line(job.step)})")

    def poll_soon(self) -> None:
        self.node.set_timer(NODE, TIMER, POLL)

    # ------------------------------------------------------------------ a reload

    def busy(self) -> str | None:
        """Why a new reload cannot start now, or None."""
        if self.pending is not None:
            return f"a reload is being checked ({self.pending})"
        if self.job is not None:
            return f"a reload is in progress (step {self.job.step.n} of {len(self.job.steps)}: {step_line(self.job.step)})"
        if self.node.stopping:
            return "the node is stopping"
        if not self.node.started:
            return "the tree has not finished starting"
        return None

    def start(self, job: Job) -> None:
        assert self.job is None
        self.job = job
        events = self.node.events
        assert events is not None
        config = job.new_spec.source if job.new_spec is not None else None
        events.emit("reload_started", supervisor="root", detail={"kind": job.kind, "config": config, "steps": len(job.steps)})
        if job.new_spec is not None:
            self.declared |= set(child_ids(job.new_spec.tree))
            if job.new_spec.config_dir and (job.new_spec.config_dir,) != self.node.sys_path:
                self.node.sys_path = (job.new_spec.config_dir,)
        if job.kind == "code":
            _drop_bytecode({f for s in job.steps if s.kind == "code" for f in s.why})
        self.poll_soon()
        self._next(job)

    def _next(self, job: Job) -> None:
        while self.job is job and job.at < len(job.steps):
            step = job.step
            path_gone = step.kind not in ("preload", "refresh") and step.supervisor not in self.node.sups
            if path_gone:
                self._skip(job, "its supervisor is not running (its parent holds the new spec)")
                continue
            self._launch(job, step)
            if job.waiting:
                return  # its answer (or the watch) goes on
        if self.job is job:
            self._finish(job)

    def _launch(self, job: Job, step: Step) -> None:
        control = self.node.control
        assert control is not None
        job.waiting, job.since = "reply", time.monotonic()

        def submit(call: object) -> None:
            control.submit_own(step.supervisor, call, lambda result: self._replied(job, result))

        match step.kind:
            case "preload" | "refresh":
                launcher = self.node.launcher
                code = getattr(launcher, "code", None)
                if code is None:
                    return self._skip(job, "this launcher has no fork server")
                job.waiting, job.refresh_epoch = "refresh", code.epoch
                launcher.refresh(step.preload, step.also)  # type: ignore[attr-defined]
            case "flags":
                assert isinstance(step.spec, SupervisorSpec)
                submit(sv.UpdateSpecCall(step.spec))
            case "remove":
                assert step.child is not None
                job.removing = True
                submit(sv.TerminateChildCall(step.child))
            case "change" | "instance" | "code":
                assert step.child is not None and isinstance(step.spec, ChildSpec)
                submit(sv.ReplaceChildCall(step.child, step.spec, step.args, restart=True))
            case "record":
                assert step.child is not None and isinstance(step.spec, ChildSpec)
                submit(sv.ReplaceChildCall(step.child, step.spec, restart=False))
            case "add":
                assert isinstance(step.spec, ChildSpec)
                submit(sv.StartChildCall(step.spec, before=step.before))
            case _:
                self._fail(job, f"unknown step kind {step.kind!r}")

    def _replied(self, job: Job, result: object) -> None:
        if self.job is not job:
            return
        step = job.step
        match result:
            case sv.Ok(pid=pid):
                if job.removing:  # terminated: now delete the spec
                    job.removing = False
                    assert self.node.control is not None and step.child is not None
                    self.node.control.submit_own(step.supervisor, sv.DeleteChildCall(step.child),
                                                 lambda r: self._replied(job, r if not _not_found(r) else sv.Ok()))  # fmt: skip
                    return
                self._done(job, pid)
            case sv.ApiError(reason="not_found") if step.kind in ("remove", "record", *RESTARTS):
                self._skip(job, f"{step.child} is not there any more")
            case sv.ApiError(reason="start_failed", pid=pid, detail=detail) if pid is not None:
                self._fail(job, f"the new spec did not start: {detail}; the previous spec runs again (pid {pid})")
            case sv.ApiError(reason=reason, detail=detail):
                self._fail(job, f"{reason}: {detail}" if detail is not None else str(reason))
            case _:
                self._fail(job, f"unexpected answer {result!r}")
        self._next(job)

    def _watch(self, job: Job) -> None:
        """What has no answer to wait for: a refresh, and supervisors that went away."""
        if job.at >= len(job.steps):
            return
        step = job.step
        if job.waiting == "refresh":
            code = getattr(self.node.launcher, "code", None)
            if code is not None and code.epoch > job.refresh_epoch and not code.refreshing:
                if code.problems:
                    self._fail(job, "the fork server could not import the new code: " + "; ".join(code.problems))
                else:
                    self._done(job, None)
                self._next(job)
            elif time.monotonic() - job.since > REFRESH_TIMEOUT:
                self._fail(job, f"the fork server did not answer the refresh within {REFRESH_TIMEOUT:g}s")
                self._next(job)
        elif job.waiting == "reply" and step.supervisor not in self.node.sups:
            self._fail(job, f"supervisor {step.supervisor} stopped before it answered")
            self._next(job)

    # ------------------------------------------------------------------ outcomes

    def _emit(self, job: Job, outcome: str, **detail: object) -> None:
        step = job.step
        assert self.node.events is not None
        pid = detail.pop("pid", None)
        self.node.events.emit("reload_step", supervisor=step.supervisor, child=step.child, pid=pid,
                              detail={"n": step.n, "of": len(job.steps), "kind": step.kind, "outcome": outcome,
                                      "text": step_line(step), **detail})  # fmt: skip

    def _done(self, job: Job, pid: object) -> None:
        self._emit(job, "done", pid=pid if isinstance(pid, int) else None)
        job.applied.append(job.step.n)
        job.at += 1
        job.waiting, job.removing = "", False

    def _skip(self, job: Job, why: str) -> None:
        self._emit(job, "skipped", why=why)
        job.skipped.append({"n": job.step.n, "why": why})
        job.at += 1
        job.waiting, job.removing = "", False

    def _fail(self, job: Job, error: str) -> None:
        self._emit(job, "failed", error=error)
        job.failed = {"n": job.step.n, "step": step_line(job.step), "error": error}
        job.waiting, job.removing = "", False
        self._finish(job)

    def _finish(self, job: Job) -> None:
        self.job = None
        ok = job.failed is None
        if ok and job.new_spec is not None:
            self.node.spec = job.new_spec
        value = outcome_of(job)
        assert self.node.events is not None
        self.node.events.emit("reload_done" if ok else "reload_failed", supervisor="root",
                              reason=None if ok else job.failed["error"],  # type: ignore[index]
                              detail={"kind": job.kind, "applied": len(job.applied), "steps": len(job.steps)})  # fmt: skip
        if not ok:
            logger.warning("reload stopped at %s: %s", job.failed["step"], job.failed["error"])  # type: ignore[index]
        if job.answer is not None:
            job.answer(True, value)


def outcome_of(job: Job) -> dict[str, object]:
    """The answer: the plan, and what happened to each step."""
    done = set(job.applied) | {int(s["n"]) for s in job.skipped}  # type: ignore[call-overload]
    failed = job.failed
    return {
        "ok": failed is None,
        "kind": job.kind,
        "dry_run": False,
        **job.summary,
        "plan": [step_json(s) for s in job.steps],
        "outcome": {
            "applied": job.applied,
            "skipped": job.skipped,
            "failed": failed,
            "not_applied": [s.n for s in job.steps if s.n not in done and (failed is None or s.n != failed["n"])],
        },
    }


def _not_found(result: object) -> bool:
    return isinstance(result, sv.ApiError) and result.reason == "not_found"


def _drop_bytecode(files: set[str]) -> None:
    """A changed module's cached bytecode goes, so no import can take it for the new source
    (pyc validation compares whole-second mtimes and sizes: an edit within the second of the
    last compile, keeping the size, would otherwise import the old code)."""
    if sys.implementation.cache_tag is None:  # this Python writes no bytecode cache: nothing to drop
        return
    for path in files:
        try:
            os.unlink(importlib.util.cache_from_source(path))
        except (OSError, ValueError):  # no cached file, or a path cache_from_source cannot place
            pass
