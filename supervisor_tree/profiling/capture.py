"""Capturing a worker's profile, and writing it out: what ``supervise profile`` runs.

Owns the orchestration of one capture (py-spy from outside by pid; yappi inside the
worker over its control channel), of ``--all`` (every worker at once, one failure
not stopping the others), of file names and formats, and of ``diff``.  It does not
know how workers are reached: the caller gives a ``Target`` (id, pid, generation)
and, for yappi, a ``Control`` callable that sends one control op to that worker.

    >>> target = Target("counter", pid=4136, generation=3)              # doctest: +SKIP
    >>> profile = capture(target, CaptureOptions(duration_s=2))         # doctest: +SKIP
    >>> write(profile, Format.SVG, None, "profiles")                    # doctest: +SKIP
    'profiles/counter-py-spy-20261126-132926.svg'

The worker side of yappi: ``control("profile_start", {"clock", "builtins"}, timeout)``
must call ``yappi_engine.start(**args)`` in the worker and return its dict, and
``control("profile_stop", {"formats", "output_prefix"}, timeout)`` likewise
``yappi_engine.stop(**args)``.  A worker error comes back as an exception.
"""

from __future__ import annotations

import enum
import json
import marshal
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import psutil

from supervisor_tree.profiling import pyspy
from supervisor_tree.profiling.collapsed import (
    Clock,
    Engine,
    Profile,
    ProfileMeta,
    Unit,
    format_collapsed,
    merge,
    parse_collapsed,
)
from supervisor_tree.profiling.errors import ProfilerError
from supervisor_tree.profiling.exited import WorkerExited
from supervisor_tree.profiling.flamegraph import profile_from_svg, render_diff_svg, render_svg
from supervisor_tree.profiling.options import CaptureOptions
from supervisor_tree.profiling.speedscope import to_speedscope

Control = Callable[[str, Mapping[str, object], float], Mapping[str, object]]

START_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 60.0  # the worker builds stacks and writes pstats/callgrind meanwhile
POLL_S = 0.05  # how often a yappi capture checks that its worker is still alive
YAPPI_FILES = ("pstats", "callgrind")


class Format(enum.Enum):
    SVG = "svg"
    SPEEDSCOPE = "speedscope"
    COLLAPSED = "collapsed"
    PSTATS = "pstats"
    CALLGRIND = "callgrind"


SUFFIX = {Format.SVG: ".svg", Format.SPEEDSCOPE: ".speedscope.json",
          Format.COLLAPSED: ".collapsed", Format.PSTATS: ".pstats",
          Format.CALLGRIND: ".callgrind"}


@dataclass(frozen=True, slots=True)
class Target:
    worker_id: str
    pid: int
    generation: int

    def who(self) -> str:
        return f'worker "{self.worker_id}" (generation {self.generation})'


@dataclass(frozen=True, slots=True)
class AllProfiles:
    """``--all``: each worker's profile, their merge, and the workers that failed."""

    profiles: dict[str, Profile]
    merged: Profile
    errors: dict[str, str]


def capture(target: Target, options: CaptureOptions, control: Control | None = None,
            *, cancel: threading.Event | None = None) -> Profile:
    """Profile one worker as ``options`` say; errors name the worker."""
    if options.engine is Engine.PYSPY:
        try:
            profile = pyspy.record(target.pid, options, cancel)
        except WorkerExited as exc:
            partial = _named(exc.partial, target) if exc.partial else None
            raise WorkerExited(f"{target.who()}: {exc}", partial) from None
        except ProfilerError as exc:
            raise ProfilerError(f"{target.who()}: {exc}") from None
        return _named(profile, target)
    if control is None:
        raise ProfilerError(f"{target.who()}: the yappi engine runs inside the worker and "
                            "needs its control channel; none was given")
    return _YappiCapture(target, options, control, cancel).run()


def _named(profile: Profile, target: Target) -> Profile:
    meta = replace(profile.meta, worker_id=target.worker_id, generation=target.generation)
    return Profile(profile.stacks, meta, profile.artifacts)


class _YappiCapture:
    """start, wait while the worker lives, stop; yappi is never left running."""

    def __init__(self, target: Target, options: CaptureOptions, control: Control,
                 cancel: threading.Event | None) -> None:
        self.target, self.options, self.control = target, options, control
        self.cancel = cancel or threading.Event()
        self.t0 = time.monotonic()
        try:
            self.process = psutil.Process(target.pid)
        except psutil.Error:
            raise WorkerExited(f"{target.who()}: pid {target.pid} is gone") from None

    def run(self) -> Profile:
        tmp = tempfile.mkdtemp(prefix="supervisor_tree-yappi-")  # the worker writes files here
        started: Mapping[str, object] | None = None
        stopped = False
        try:
            args: dict[str, object] = {"clock": self.options.clock.value, "builtins": self.options.builtins}
            started = self._call("profile_start", args, START_TIMEOUT_S)
            self._check_pid(started, "profile_start")
            self._wait()
            args = {"formats": ["collapsed", *YAPPI_FILES], "output_prefix": os.path.join(tmp, "p")}
            reply = self._call("profile_stop", args, STOP_TIMEOUT_S)
            stopped = True
            self._check_pid(reply, "profile_stop")
            return self._profile(reply)
        finally:
            if started is not None and not stopped and self._alive():
                try:  # best effort: yappi must not stay on in a worker nobody profiles
                    self.control("profile_stop", {"formats": []}, START_TIMEOUT_S)
                except Exception:  # noqa: BLE001 - cleanup, then re-raised or reported
                    pass
            shutil.rmtree(tmp, ignore_errors=True)

    def _alive(self) -> bool:
        try:
            return bool(self.process.is_running() and self.process.status() != psutil.STATUS_ZOMBIE)
        except psutil.Error:
            return False

    def _died(self) -> WorkerExited:
        return WorkerExited(
            f"{self.target.who()}: pid {self.target.pid} exited "
            f"{time.monotonic() - self.t0:.1f} s into a {self.options.duration_s:g} s yappi "
            "capture; yappi's data lived in that process and is lost "
            "(py-spy keeps what it sampled: --engine py-spy)")

    def _wait(self) -> None:
        # From the start reply, not from our request: a busy worker answers late.
        deadline = time.monotonic() + self.options.duration_s
        while (left := deadline - time.monotonic()) > 0:
            if not self._alive():
                raise self._died()
            if self.cancel.wait(min(POLL_S, left)):
                raise ProfilerError(f"{self.target.who()}: yappi capture cancelled")

    def _call(self, op: str, args: Mapping[str, object], timeout: float) -> Mapping[str, object]:
        try:
            return self.control(op, args, timeout)
        except Exception as exc:  # noqa: BLE001 - cleanup, then re-raised or reported
            if not self._alive():
                raise self._died() from None
            hint = ("; a worker busy inside one long call answers no control op "
                    "(py-spy sees it: --engine py-spy)" if isinstance(exc, TimeoutError) else "")
            raise ProfilerError(f"{self.target.who()}: {op} failed: "
                                f"{exc or type(exc).__name__}{hint}") from None

    def _check_pid(self, reply: Mapping[str, object], op: str) -> None:
        if reply.get("pid") != self.target.pid:
            raise ProfilerError(
                f"{self.target.who()}: {op} was answered by pid {reply.get('pid')}, not "
                f"{self.target.pid}: the worker restarted; profile the new incarnation")

    def _profile(self, reply: Mapping[str, object]) -> Profile:
        try:
            stacks = parse_collapsed(str(reply["collapsed"])).stacks
            artifacts = {f: Path(str(reply[f])).read_bytes() for f in YAPPI_FILES if f in reply}
            meta = ProfileMeta(
                engine=Engine.YAPPI, worker_id=self.target.worker_id, pid=self.target.pid,
                generation=self.target.generation, duration_s=float(str(reply["duration_s"])),
                samples=int(str(reply["calls"])), started_at=str(reply["started_at"]),
                rate_hz=None, clock=Clock(reply["clock"]), unit=Unit.MICROSECONDS,
                extra={"threads": reply.get("threads"), "builtins": self.options.builtins},
            )
        except (KeyError, ValueError, OSError) as exc:
            raise ProfilerError(f"{self.target.who()}: unusable profile_stop reply ({exc!r})") from None
        if not stacks:
            raise ProfilerError(
                f"{self.target.who()}: yappi recorded no Python calls in "
                f"{meta.duration_s:g} s; a worker stuck inside one long call makes none "
                "(py-spy sees it: --engine py-spy)")
        return Profile(stacks, meta, artifacts)


def capture_all(targets: Iterable[Target], options: CaptureOptions,
                control_for: Callable[[Target], Control] | None = None) -> AllProfiles:
    """Profile every target at once (one thread each); merge what succeeded.

    A worker that failed is named in ``errors``; one that exited mid-capture with
    samples is in both.  Raises only if no worker could be profiled.  On Ctrl-C every
    running capture is stopped before the KeyboardInterrupt propagates.
    """
    targets = list(targets)
    if not targets:
        raise ProfilerError("no workers to profile: the tree has no running workers")
    cancel = threading.Event()
    with ThreadPoolExecutor(max_workers=max(1, len(targets)),
                            thread_name_prefix="supervisor_tree-profile") as pool:
        try:
            futures = {t.worker_id: pool.submit(
                capture, t, options, control_for(t) if control_for else None, cancel=cancel)
                for t in targets}
            for future in futures.values():
                future.exception()  # wait here, where a KeyboardInterrupt can land
        except BaseException:
            cancel.set()
            raise
    profiles: dict[str, Profile] = {}
    errors: dict[str, str] = {}
    for worker_id, future in futures.items():
        try:
            profiles[worker_id] = future.result()
        except WorkerExited as exc:
            errors[worker_id] = str(exc)
            if exc.partial is not None:
                profiles[worker_id] = exc.partial
        except ProfilerError as exc:
            errors[worker_id] = str(exc)
    if not profiles:
        raise ProfilerError("no worker could be profiled: " + "; ".join(errors.values()))
    return AllProfiles(profiles, merge(profiles), errors)


def default_path(meta: ProfileMeta, fmt: Format, profiles_dir: str) -> str:
    """``profiles/<worker>-<engine>-<YYYYmmdd-HHMMSS>.<ext>``, never an existing file."""
    try:
        stamp = datetime.fromisoformat(meta.started_at).strftime("%Y%m%d-%H%M%S")
    except ValueError:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    worker = "".join(c if c.isalnum() or c in "._-" else "_" for c in meta.worker_id) or "profile"
    base = os.path.join(profiles_dir, f"{worker}-{meta.engine.value}-{stamp}")
    path, n = base + SUFFIX[fmt], 2
    while os.path.exists(path):
        path, n = f"{base}-{n}{SUFFIX[fmt]}", n + 1
    return path


def write(profile: Profile, fmt: Format, output: str | None, profiles_dir: str) -> str:
    """Write ``profile`` as ``fmt`` to ``output`` (a file or directory) or the default name."""
    data = _encode(profile, fmt)
    if output is None or os.path.isdir(output):
        path = default_path(profile.meta, fmt, output or profiles_dir)
    else:
        path = output
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(data)
    return path


def _encode(profile: Profile, fmt: Format) -> bytes:
    if fmt is Format.SVG:
        return render_svg(profile).encode()
    if fmt is Format.SPEEDSCOPE:
        return json.dumps(to_speedscope(profile), separators=(",", ":")).encode()
    if fmt is Format.COLLAPSED:
        return format_collapsed(profile).encode()
    data = profile.artifacts.get(fmt.value)
    if data is None:
        if profile.meta.engine is not Engine.YAPPI:
            raise ProfilerError(
                f"{fmt.value} files need --engine yappi: py-spy samples stacks and records no "
                "per-function call counts or timings; use --format svg, speedscope or collapsed")
        raise ProfilerError(f"this profile carries no {fmt.value} data: only a single worker's "
                            "yappi capture does (not a merged or reloaded one)")
    return _stamp_pstats(data, profile.meta) if fmt is Format.PSTATS else _stamp_callgrind(data, profile.meta)


def _stamp_pstats(data: bytes, meta: ProfileMeta) -> bytes:
    """pstats has no header: the meta rides as one zero-cost pseudo-function entry."""
    stats = marshal.loads(data)
    stats[("supervisor_tree profile", 0, meta.describe())] = (0, 0, 0.0, 0.0, {})
    return marshal.dumps(stats)


def _stamp_callgrind(data: bytes, meta: ProfileMeta) -> bytes:
    """callgrind headers take ``desc:`` lines; KCachegrind shows them as file info."""
    first, _, rest = data.partition(b"\n")
    desc = f"desc: supervisor_tree: {meta.describe()}\n".encode()
    return first + b"\n" + desc + rest


def load(path: str) -> Profile:
    """A profile back from a file we wrote: an .svg (embedded stacks) or collapsed text."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as exc:
        raise ProfilerError(f"cannot read {path}: {exc.strerror}") from None
    try:
        profile = profile_from_svg(text) if path.endswith(".svg") else parse_collapsed(text)
    except ProfilerError as exc:
        raise ProfilerError(f"{path}: {exc}") from None
    if not profile.stacks:
        raise ProfilerError(f"{path}: no stacks in it (expected a .svg or .collapsed from supervise profile)")
    return profile


def diff(path_a: str, path_b: str, output: str | None = None, profiles_dir: str = "profiles") -> str:
    """A differential flame graph of ``path_b`` against ``path_a``; returns its path."""
    before, after = load(path_a), load(path_b)
    if output is None or os.path.isdir(output):
        a, b = (Path(p).name.split(".")[0] for p in (path_a, path_b))
        output = os.path.join(output or profiles_dir, f"diff-{a}-vs-{b}.svg")
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    Path(output).write_text(render_diff_svg(before, after))
    return output
