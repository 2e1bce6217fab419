"""Profiling the workers of a running node: what ``supervise profile`` and ``Client.profile`` run.

Owns the glue between a ``Client`` (worker ids to pids and generations, each worker's
control channel, the node's configured profiles directory) and the capture library
(``capture``): which worker, which options, where the file goes, and what is kept
when the worker dies mid-capture.  It prints nothing; the CLI does.

    >>> from supervisor_tree.client import Client
    >>> with Client(run_dir) as node:                                   # doctest: +SKIP
    ...     path, profile = node.profile("db", engine="yappi", duration=2)
    >>> path                                                            # doctest: +SKIP
    '/srv/app/profiles/db-yappi-20261126-132926.svg'

Defaults follow the CLI's: py-spy, 10 s, 100 Hz, an SVG under the node's
``[profile].dir``.  yappi's clock defaults to ``cpu``: on the wall clock the worker's
heartbeat thread, waiting, would take a visible share of every graph.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

# From the module itself: the package's attribute `capture` is the function, not this module.
from supervisor_tree.profiling.capture import (
    SUFFIX,
    AllProfiles,
    Control,
    Format,
    Target,
    capture,
    capture_all,
    default_path,
    load,
    write,
)
from supervisor_tree.profiling.capture import diff as _diff
from supervisor_tree.profiling.collapsed import Engine, Profile
from supervisor_tree.profiling.errors import ProfilerError
from supervisor_tree.profiling.exited import WorkerExited
from supervisor_tree.profiling.options import CaptureOptions

if TYPE_CHECKING:
    import threading


class Client(Protocol):
    """What profiling needs of a `supervisor_tree.client.Client` (which imports this module lazily)."""

    def control(self, op: str, _wait: float | None = None, **args: object) -> Any: ...
    def resolve(self, worker_id: str, *, after_generation: int = 0, timeout: float | None = None) -> Any: ...
    def control_worker(self, worker_id: str, op: str, kwargs: dict[str, object], timeout: float = 10.0) -> Any: ...
    def status(self) -> dict[str, Any]: ...
    def clone(self) -> Client: ...
    def close(self) -> None: ...

DEFAULT_PROFILES_DIR = "profiles"
YAPPI_ONLY = (Format.PSTATS, Format.CALLGRIND)
PYSPY_FLAGS = ("native", "idle", "gil", "subprocesses")


class ProfileResult(NamedTuple):
    """One capture: the file written and the profile (``.stacks``: collapsed stacks -> weight)."""

    path: str
    profile: Profile

    @property
    def stacks(self) -> Mapping[str, float]:
        return self.profile.stacks


class AllResult(NamedTuple):
    """``--all``: a file per worker that was profiled, the merged graph, and who failed why."""

    paths: dict[str, str]
    merged_path: str
    profiles: AllProfiles

    @property
    def errors(self) -> dict[str, str]:
        return self.profiles.errors


class PartialWritten(WorkerExited):
    """The worker died mid-capture; ``path`` is where what was collected went (None: nothing was)."""

    def __init__(self, message: str, partial: Profile | None, path: str | None) -> None:
        super().__init__(message, partial)
        self.path = path

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (str(self), self.partial, self.path))


# ---------------------------------------------------------------------- options


def capture_options(*, engine: str | Engine = "py-spy", duration: float = 10.0, rate: int = 100,
                    fmt: str | Format = "svg", clock: str | None = None,
                    **flags: bool) -> tuple[CaptureOptions, Format]:
    """Validated options and format; every problem in one ``ProfilerError``, before any capture."""
    engine_name = engine.value if isinstance(engine, Engine) else str(engine)
    problems = []
    try:
        chosen_fmt = fmt if isinstance(fmt, Format) else Format(str(fmt))
    except ValueError:
        chosen_fmt = Format.SVG
        problems.append(f"format must be one of {', '.join(f.value for f in Format)}; got {fmt!r}")
    unknown = sorted(set(flags) - {*PYSPY_FLAGS, "builtins"})
    if unknown:
        problems.append(f"unknown option(s) {', '.join(unknown)}; known: {', '.join((*PYSPY_FLAGS, 'builtins'))}")
    if engine_name != "yappi":
        if clock is not None:
            problems.append("--clock is a yappi option; py-spy samples on-CPU stacks, add --idle to see "
                            "where the worker waits too")
        if chosen_fmt in YAPPI_ONLY:
            problems.append(f"{chosen_fmt.value} files need --engine yappi: py-spy samples stacks and records "
                            "no per-function call counts or timings; use --format svg, speedscope or collapsed")
    if problems:
        raise ProfilerError("; ".join(problems))
    try:
        options = CaptureOptions.from_strings(
            engine=engine_name, clock=clock or ("cpu" if engine_name == "yappi" else "wall"),
            duration_s=float(duration), rate_hz=int(rate), **flags)
    except TypeError as exc:
        raise ProfilerError(f"bad profile option: {exc}") from None
    return options, chosen_fmt


# ---------------------------------------------------------------------- the node's side


def profiles_dir_of(client: Client, profiles_dir: str | None = None) -> str:
    """``profiles_dir`` if given, else the node's configured ``[profile].dir``, else ./profiles."""
    if profiles_dir:
        return profiles_dir
    try:
        configured = client.control("ping").get("profiles_dir")
    except Exception:  # noqa: BLE001 - an old node, or one going away: the default still works
        configured = None
    return str(configured) if configured else DEFAULT_PROFILES_DIR


def target_of(client: Client, worker_id: str) -> Target:
    """The running incarnation of ``worker_id`` (waiting for one that is restarting)."""
    found = client.resolve(worker_id)
    return Target(worker_id, int(found.pid), int(found.generation))


def control_of(client: Client, worker_id: str) -> Control:
    """yappi's channel: one control op served by the worker itself."""

    def control(op: str, args: Mapping[str, object], timeout: float) -> Mapping[str, object]:
        return client.control_worker(worker_id, op, dict(args), timeout)  # type: ignore[no-any-return]

    return control


def running_workers(client: Client) -> list[Target]:
    """Every worker of the tree that has a live process now, in start order."""
    found: list[Target] = []

    def walk(view: Mapping[str, Any] | None) -> None:
        for child in (view or {}).get("children", ()):
            if child.get("type") == "supervisor":
                walk(child.get("supervisor"))
            elif child.get("state") == "running" and isinstance(child.get("pid"), int):
                found.append(Target(str(child["key"]), int(child["pid"]), int(child["generation"])))

    walk(client.status().get("tree"))
    return found


# ---------------------------------------------------------------------- files


def output_path(meta_profile: Profile, fmt: Format, output: str | None, profiles_dir: str) -> str:
    """Where ``capture.write`` puts ``meta_profile``: ``output`` (a file or a directory) or the default."""
    if output is None or os.path.isdir(output):
        return default_path(meta_profile.meta, fmt, output or profiles_dir)
    return output


def write_partial(exc: WorkerExited, fmt: Format, output: str | None, profiles_dir: str) -> PartialWritten:
    """Write what a dying worker left (``NAME.partial.svg``); the error to raise, naming the file."""
    if exc.partial is None:
        return PartialWritten(str(exc), None, None)
    if fmt in YAPPI_ONLY:  # only py-spy keeps samples, and py-spy has no pstats/callgrind
        fmt = Format.SVG
    path = output_path(exc.partial, fmt, output, profiles_dir)
    suffix = SUFFIX[fmt]
    base = path[: -len(suffix)] if path.endswith(suffix) else path
    path = f"{base}.partial{suffix if path.endswith(suffix) else ''}"
    try:
        written = write(exc.partial, fmt, path, profiles_dir)
    except (OSError, ProfilerError) as err:
        return PartialWritten(f"{exc}; the partial profile could not be written: {err}", exc.partial, None)
    return PartialWritten(f"{exc}; partial profile written to {written}", exc.partial, written)


# ---------------------------------------------------------------------- captures


def profile(client: Client, worker: str, *, engine: str | Engine = "py-spy", duration: float = 10.0,
            rate: int = 100, fmt: str | Format = "svg", output: str | None = None,
            profiles_dir: str | None = None, clock: str | None = None,
            cancel: threading.Event | None = None, **options: bool) -> ProfileResult:
    """Profile ``worker`` of the node ``client`` talks to; write it; return the path and the profile.

    ``options``: py-spy's ``native``, ``idle``, ``gil``, ``subprocesses``; yappi's
    ``builtins``.  Raises ``ProfilerError`` (one line, naming the worker), or
    ``PartialWritten`` (a ``WorkerExited``) when the worker died mid-capture, after
    writing what was collected.  Client errors (no such worker, node gone) pass through.
    """
    capture_opts, chosen = capture_options(engine=engine, duration=duration, rate=rate, fmt=fmt,
                                           clock=clock, **options)
    directory = profiles_dir_of(client, profiles_dir)
    found = client.resolve(worker)
    if found.host:  # placed on another host: py-spy runs there (profiling/hosted.py)
        from supervisor_tree.profiling.hosted import record_on_host

        hosted = record_on_host(client, found, capture_opts)
        return ProfileResult(write(hosted, chosen, output, directory), hosted)
    target = Target(worker, int(found.pid), int(found.generation))
    control = control_of(client, worker) if capture_opts.engine is Engine.YAPPI else None
    try:
        result = capture(target, capture_opts, control, cancel=cancel)
    except WorkerExited as exc:
        raise write_partial(exc, chosen, output, directory) from None
    return ProfileResult(write(result, chosen, output, directory), result)


def profile_all(client: Client, *, engine: str | Engine = "py-spy", duration: float = 10.0, rate: int = 100,
                fmt: str | Format = "svg", output: str | None = None, profiles_dir: str | None = None,
                clock: str | None = None, workers: list[str] | None = None,
                **options: bool) -> AllResult:
    """Profile every running worker (or ``workers``) at once: one file each plus a merged graph.

    The merged graph has each worker's id as its root frame; it is written as ``fmt``
    unless that is pstats or callgrind (one worker's yappi data only), then as SVG.
    ``output``, if given, is a directory.  A worker that fails is in ``errors``; one
    that died mid-capture has its partial file (``.partial``) and an error.
    """
    capture_opts, chosen = capture_options(engine=engine, duration=duration, rate=rate, fmt=fmt,
                                           clock=clock, **options)
    directory = profiles_dir_of(client, profiles_dir)
    if output is not None:
        Path(output).mkdir(parents=True, exist_ok=True)
    targets = running_workers(client)
    if workers is not None:
        missing = sorted(set(workers) - {t.worker_id for t in targets})
        if missing:
            raise ProfilerError(f"not running workers of this tree: {', '.join(missing)}")
        targets = [t for t in targets if t.worker_id in workers]
    # One Client per capture thread (a Client is not thread-safe), sharing this one's context.
    clients: list[Client] = []

    def control_for(target: Target) -> Control:
        own = client.clone()
        clients.append(own)
        return control_of(own, target.worker_id)

    try:
        everything = capture_all(
            targets, capture_opts, control_for if capture_opts.engine is Engine.YAPPI else None)
    finally:
        for own in clients:
            own.close()
    paths: dict[str, str] = {}
    for worker_id, one in everything.profiles.items():
        if worker_id in everything.errors:  # died mid-capture: its partial file
            written = write_partial(WorkerExited("", one), chosen, output, directory).path
            if written:
                paths[worker_id] = written
        else:
            paths[worker_id] = write(one, chosen, output, directory)
    merged_fmt = Format.SVG if chosen in YAPPI_ONLY else chosen
    merged_path = write(everything.merged, merged_fmt, output, directory)
    return AllResult(paths, merged_path, everything)


def diff(path_a: str, path_b: str, output: str | None = None,
         profiles_dir: str = DEFAULT_PROFILES_DIR) -> tuple[str, Profile, Profile]:
    """A differential flame graph of ``path_b`` against ``path_a``: its path, and both profiles."""
    before, after = load(path_a), load(path_b)
    return _diff(path_a, path_b, output, profiles_dir), before, after


def share_changes(before: Profile, after: Profile, n: int = 10) -> list[tuple[str, float, float]]:
    """The ``n`` frames whose total share moved most: (frame, before %, after %)."""
    from supervisor_tree.profiling.collapsed import top_frames

    a = {frame: total for frame, _, total in top_frames(before, 1_000_000)}
    b = {frame: total for frame, _, total in top_frames(after, 1_000_000)}
    rows = [(frame, a.get(frame, 0.0), b.get(frame, 0.0)) for frame in set(a) | set(b)]
    rows.sort(key=lambda row: (-abs(row[2] - row[1]), row[0]))
    return rows[:n]
