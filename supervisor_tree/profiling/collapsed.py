"""Collapsed stacks: the one shape every profile takes, and its text format.

Owns the ``Profile`` record (stacks plus a self-describing ``ProfileMeta``), the
collapsed text format that flamegraph.pl, inferno and speedscope read, merging the
profiles of several workers, and the summaries the CLI prints.  No processes, no
rendering: both engines produce a ``Profile``; every output format starts from one.

    >>> p = parse_collapsed("main;work;hot_spin 80\\nmain;work;cool_spin 20\\n")
    >>> p.total, top_frames(p, 1)
    (100.0, [('hot_spin', 80.0, 80.0)])
    >>> round(subtree_share(p, "cool_spin", under="work"), 2)
    0.2

The file format is collapsed stacks (``frame;frame;frame weight``) led by comment
lines ``# key=value`` with JSON values.  Why ``=`` and not ``: ``?  Other tools read
every line ending in whitespace and a number as a stack, so ``# pid: 4136`` would
show up in flamegraph.pl or speedscope as a frame "# pid:" weighing 4136; with
``=`` no header line ends in whitespace plus digits, and those tools skip them.
"""

from __future__ import annotations

import datetime as _dt
import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace

from supervisor_tree.profiling.errors import ProfilerError

HEADER = "# supervisor_tree profile"
MERGED_WORKER_ID = "all"


class Engine(enum.Enum):
    PYSPY = "py-spy"
    YAPPI = "yappi"
    EXTERNAL = "external"  # a plain collapsed file written by another tool


class Clock(enum.Enum):
    WALL = "wall"
    CPU = "cpu"


class Unit(enum.Enum):
    SAMPLES = "samples"  # py-spy: one per stack seen per tick
    MICROSECONDS = "microseconds"  # yappi: time on the chosen clock


@dataclass(frozen=True, slots=True)
class ProfileMeta:
    """Who was profiled, how, and for how long.

    ``samples`` counts py-spy's sampling ticks, or yappi's recorded calls.
    ``clock`` is yappi's clock; for py-spy it is CPU unless idle stacks were kept.
    ``extra`` holds JSON-able odds and ends (py-spy errors, worker list of a merge).
    """

    engine: Engine
    worker_id: str
    pid: int
    generation: int
    duration_s: float
    samples: int
    started_at: str  # ISO 8601 with UTC offset; "" when unknown
    rate_hz: int | None = None
    clock: Clock = Clock.CPU
    unit: Unit = Unit.SAMPLES
    extra: Mapping[str, object] = field(default_factory=dict)

    @classmethod
    def external(cls, samples: int = 0) -> ProfileMeta:
        """Meta of a plain collapsed file that carries none of its own."""
        return cls(Engine.EXTERNAL, "", 0, 0, 0.0, samples, "")

    def describe(self) -> str:
        """One line for subtitles and tables: engine, worker, pid, generation, sizes."""
        if self.engine is Engine.EXTERNAL and not self.worker_id:
            return f"external profile · {self.samples} samples"
        what = f"{self.samples} samples" if self.unit is Unit.SAMPLES else f"{self.samples} calls"
        rate = f" @ {self.rate_hz} Hz" if self.rate_hz else ""
        return (
            f"{self.engine.value} · worker {self.worker_id} · pid {self.pid} · "
            f"generation {self.generation} · {self.duration_s:.1f} s · {what}{rate} · "
            f"{self.clock.value} clock · started {self.started_at}"
        )


@dataclass(frozen=True, slots=True)
class Profile:
    """Collapsed stacks with their meta.

    Invariant: every key is a non-empty ``"root;...;leaf"`` path and every weight is
    > 0, in ``meta.unit``.  ``artifacts`` carries the files an engine wrote besides
    stacks (yappi's "pstats" and "callgrind" bytes), keyed by format name.
    """

    stacks: Mapping[str, float]
    meta: ProfileMeta
    artifacts: Mapping[str, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for stack, weight in self.stacks.items():
            if not stack or weight <= 0:
                raise ProfilerError(f"bad collapsed stack {stack!r} with weight {weight!r}")
        object.__setattr__(self, "stacks", dict(self.stacks))
        object.__setattr__(self, "artifacts", dict(self.artifacts))

    @property
    def total(self) -> float:
        return float(sum(self.stacks.values()))


def now_iso() -> str:
    """Local wall-clock time with its UTC offset, to the second: ``started_at`` values."""
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def clean_frame(name: str) -> str:
    """A frame name safe inside a collapsed line: no ';' (the separator), no newline."""
    return name.replace(";", ":").replace("\n", " ").replace("\r", " ").strip() or "?"


def format_weight(weight: float) -> str:
    return str(int(weight)) if float(weight).is_integer() else f"{weight:.6f}".rstrip("0")


def format_collapsed(profile: Profile, *, with_meta: bool = True) -> str:
    """The collapsed text, heaviest stacks first, led by the meta header lines."""
    lines = [HEADER] + _meta_lines(profile.meta) if with_meta else []
    ordered = sorted(profile.stacks.items(), key=lambda item: (-item[1], item[0]))
    lines += [f"{stack} {format_weight(weight)}" for stack, weight in ordered]
    return "\n".join(lines) + "\n"


def _meta_lines(meta: ProfileMeta) -> list[str]:
    lines = []
    for f in fields(meta):
        value = getattr(meta, f.name)
        if isinstance(value, enum.Enum):
            value = value.value
        elif f.name == "extra":
            value = dict(value)
        lines.append(f"# {f.name}={json.dumps(value, sort_keys=True, separators=(',', ':'))}")
    return lines


def parse_collapsed(text: str) -> Profile:
    """Stacks and meta from collapsed text: ours, py-spy's raw output, flamegraph.pl's.

    Lines that are neither a stack nor a known ``# key=value`` are skipped, as
    flamegraph.pl skips them; repeated stacks add up; an empty stack (py-spy writes
    `` 1`` for the tick that saw its target exit) is dropped.
    """
    stacks: dict[str, float] = {}
    meta_values: dict[str, object] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            _read_meta_line(line, meta_values)
            continue
        parts = line.rsplit(None, 1)
        if len(parts) != 2:
            continue
        try:
            weight = float(parts[1])
        except ValueError:
            continue
        if weight > 0:
            stacks[parts[0]] = stacks.get(parts[0], 0.0) + weight
    return Profile(stacks, _meta_from(meta_values, stacks))


def _read_meta_line(line: str, into: dict[str, object]) -> None:
    key, sep, value = line[1:].strip().partition("=")
    if not sep or key not in _COERCE:
        return
    try:
        into[key] = json.loads(value)
    except ValueError:
        return


def _optional_int(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]


def _json_object(value: object) -> dict[str, object]:
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {value!r}")
    return value


_COERCE: dict[str, object] = {
    "engine": Engine, "worker_id": str, "pid": int, "generation": int,
    "duration_s": float, "samples": int, "started_at": str, "rate_hz": _optional_int,
    "clock": Clock, "unit": Unit, "extra": _json_object,
}


def _meta_from(values: Mapping[str, object], stacks: Mapping[str, float]) -> ProfileMeta:
    meta = ProfileMeta.external(samples=int(sum(stacks.values())))
    converted: dict[str, object] = {}
    for key, value in values.items():
        try:
            converted[key] = _COERCE[key](value)  # type: ignore[operator]
        except (TypeError, ValueError) as exc:
            raise ProfilerError(f"collapsed file header: {key}={value!r} is not valid ({exc})") from None
    return replace(meta, **converted)  # type: ignore[arg-type]  # each value coerced for its key


def merge(profiles_by_worker: Mapping[str, Profile]) -> Profile:
    """One profile with each worker's id as the root frame of its stacks.

    All profiles must share a unit (samples cannot be added to microseconds).  The
    merged meta: worker ``"all"``, pid 0, the longest duration, summed samples, the
    earliest start, the worker ids in ``extra["workers"]``.
    """
    if not profiles_by_worker:
        raise ProfilerError("nothing to merge: no worker profiles were captured")
    units = {p.meta.unit for p in profiles_by_worker.values()}
    if len(units) > 1:
        raise ProfilerError(
            f"cannot merge profiles in different units ({', '.join(sorted(u.value for u in units))}); "
            "capture every worker with the same engine"
        )
    stacks: dict[str, float] = {}
    for worker_id, profile in profiles_by_worker.items():
        root = clean_frame(worker_id)
        for stack, weight in profile.stacks.items():
            key = f"{root};{stack}"
            stacks[key] = stacks.get(key, 0.0) + weight
    metas = [p.meta for p in profiles_by_worker.values()]
    engines = {m.engine for m in metas}
    rates = {m.rate_hz for m in metas}
    meta = ProfileMeta(
        engine=engines.pop() if len(engines) == 1 else Engine.EXTERNAL,
        worker_id=MERGED_WORKER_ID,
        pid=0,
        generation=0,
        duration_s=max(m.duration_s for m in metas),
        samples=sum(m.samples for m in metas),
        started_at=min((m.started_at for m in metas if m.started_at), default=""),
        rate_hz=rates.pop() if len(rates) == 1 else None,
        clock=metas[0].clock,
        unit=units.pop(),
        extra={"workers": sorted(profiles_by_worker)},
    )
    return Profile(stacks, meta)


def top_frames(profile: Profile, n: int = 10) -> list[tuple[str, float, float]]:
    """The ``n`` hottest frames as (frame, self %, total %), by self time first.

    Self is time with the frame on top of the stack; total counts every stack the
    frame appears in once, however deep its recursion.
    """
    grand = profile.total
    if grand <= 0:
        return []
    self_w: dict[str, float] = {}
    total_w: dict[str, float] = {}
    for stack, weight in profile.stacks.items():
        frames = stack.split(";")
        self_w[frames[-1]] = self_w.get(frames[-1], 0.0) + weight
        for frame in set(frames):
            total_w[frame] = total_w.get(frame, 0.0) + weight
    rows = [(f, 100.0 * self_w.get(f, 0.0) / grand, 100.0 * t / grand) for f, t in total_w.items()]
    rows.sort(key=lambda row: (-row[1], -row[2], row[0]))
    return rows[:n]


def subtree_share(profile: Profile, frame_substring: str, under: str | None = None) -> float:
    """Fraction (0..1) of the whole profile spent in frames containing ``frame_substring``.

    With ``under``, only stacks where a frame containing ``under`` sits closer to the
    root than the match count (e.g. the share of ``hot_spin`` within worker "db" of a
    merged profile: ``subtree_share(merged, "hot_spin", under="db")``).  Both are
    substrings: pick ones that no other frame contains.
    """
    grand = profile.total
    if grand <= 0:
        return 0.0
    hit = 0.0
    for stack, weight in profile.stacks.items():
        frames = stack.split(";")
        start = 0
        if under is not None:
            parents = [i for i, frame in enumerate(frames) if under in frame]
            if not parents:
                continue
            start = parents[0] + 1
        if any(frame_substring in frame for frame in frames[start:]):
            hit += weight
    return hit / grand
