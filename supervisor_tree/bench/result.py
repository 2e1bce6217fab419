"""A benchmark run as data: workloads -> measurements, plus the facts; and its JSON file.

Owns the result file format (``SCHEMA``), writing it (one file per run) and
reading it back.  ``scripts/check_regression.py`` reads the same format with
the standard library alone; change both together.

    >>> r = Result(workloads={}, machine={}, versions={}, commit=None,
    ...            started_at="2026-01-01T00:00:00Z", duration_s=0.0)
    >>> Result.from_dict(r.to_dict()) == r
    True

File format (``supervisor_tree.bench/1``)::

    {"schema": "supervisor_tree.bench/1", "started_at": ISO-8601 UTC,
     "duration_s", "quick", "repeats", "commit", "machine": {...}, "versions": {...},
     "workloads": {NAME: {"description", "error": null | "Type: text",
                          "measurements": [Measurement.to_dict(), ...]}}}
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from supervisor_tree.bench.measurement import Measurement

__all__ = ["SCHEMA", "BadResultFile", "Result", "WorkloadResult", "load_result", "save_json"]

SCHEMA = "supervisor_tree.bench/1"


class BadResultFile(ValueError):
    """A file that is not a result of ours; the message names the file and the problem."""


@dataclass(frozen=True, slots=True)
class WorkloadResult:
    measurements: tuple[Measurement, ...] = ()
    description: str = ""
    error: str | None = None  # "ExceptionType: message" when the workload failed
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class Result:
    """One run of one or more workloads."""

    workloads: Mapping[str, WorkloadResult]
    machine: Mapping[str, object]
    versions: Mapping[str, str]
    commit: str | None
    started_at: str  # ISO-8601, UTC, "Z"
    duration_s: float
    quick: bool = False
    repeats: int = 5
    extra: Mapping[str, object] = field(default_factory=dict)

    def measurements(self) -> Iterator[tuple[str, Measurement]]:
        """(workload name, measurement) for every figure, in run order."""
        for name, wl in self.workloads.items():
            for m in wl.measurements:
                yield name, m

    @property
    def failed(self) -> list[str]:
        return [name for name, wl in self.workloads.items() if wl.error is not None]

    def to_dict(self) -> dict[str, object]:
        return {
            "schema": SCHEMA,
            "started_at": self.started_at,
            "duration_s": round(self.duration_s, 3),
            "quick": self.quick,
            "repeats": self.repeats,
            "commit": self.commit,
            "machine": dict(self.machine),
            "versions": dict(self.versions),
            "workloads": {
                name: {
                    "description": wl.description,
                    "error": wl.error,
                    "seconds": round(wl.seconds, 3),
                    "measurements": [m.to_dict() for m in wl.measurements],
                }
                for name, wl in self.workloads.items()
            },
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> Result:
        if d.get("schema") != SCHEMA:
            raise BadResultFile(f'not a supervisor_tree bench result (expected "schema": "{SCHEMA}")')
        raw = d.get("workloads")
        if not isinstance(raw, Mapping):
            raise BadResultFile('"workloads" must be an object')
        workloads: dict[str, WorkloadResult] = {}
        for name, wl in raw.items():
            if not isinstance(wl, Mapping) or not isinstance(wl.get("measurements"), list):
                raise BadResultFile(f'workload "{name}": "measurements" must be a list')
            try:
                ms = tuple(Measurement.from_dict(m) for m in wl["measurements"])
            except (KeyError, TypeError, ValueError) as e:
                raise BadResultFile(f'workload "{name}": bad measurement: {e}') from None
            workloads[str(name)] = WorkloadResult(
                measurements=ms,
                description=str(wl.get("description") or ""),
                error=None if wl.get("error") is None else str(wl["error"]),
                seconds=float(wl.get("seconds") or 0.0),
            )
        machine = d.get("machine")
        vers = d.get("versions")
        extra = d.get("extra")
        commit = d.get("commit")
        return cls(
            workloads=workloads,
            machine=dict(machine) if isinstance(machine, Mapping) else {},
            versions={str(k): str(v) for k, v in vers.items()} if isinstance(vers, Mapping) else {},
            commit=None if commit is None else str(commit),
            started_at=str(d.get("started_at") or ""),
            duration_s=float(d.get("duration_s") or 0.0),  # type: ignore[arg-type]
            quick=bool(d.get("quick", False)),
            repeats=int(d.get("repeats") or 0),  # type: ignore[call-overload]
            extra=dict(extra) if isinstance(extra, Mapping) else {},
        )


def _file_name(result: Result) -> str:
    stamp = result.started_at.replace("-", "").replace(":", "").split(".")[0].rstrip("Z") + "Z"
    commit = (result.commit or "nogit")[:10]
    kind = "quick" if result.quick else "full"
    return f"{stamp}-{commit}-{kind}"


def save_json(result: Result, dir: str | os.PathLike[str] = "bench-results") -> Path:
    """Write `result` to a new file in `dir` (created if missing); return its path.

    The file appears whole or not at all (written beside, then renamed); an
    existing file is never overwritten.
    """
    out_dir = Path(dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = _file_name(result)
    text = json.dumps(result.to_dict(), indent=2, sort_keys=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=out_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        for n in range(1000):
            path = out_dir / (f"{stem}.json" if n == 0 else f"{stem}-{n}.json")
            try:
                os.link(tmp, path)  # fails if path exists, unlike rename
            except FileExistsError:
                continue
            return path
        raise FileExistsError(f"{out_dir}: 1000 result files named {stem}*.json already")
    finally:
        os.unlink(tmp)


def load_result(path: str | os.PathLike[str]) -> Result:
    """Read a result file; BadResultFile (naming the file) if it is not one of ours."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadResultFile(f"{p}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BadResultFile(f"{p}: cannot read: {e}") from None
    except json.JSONDecodeError as e:
        raise BadResultFile(f"{p}: not JSON ({e})") from None
    if not isinstance(data, Mapping):
        raise BadResultFile(f"{p}: not a supervisor_tree bench result (top level is not an object)")
    try:
        return Result.from_dict(data)
    except BadResultFile as e:
        raise BadResultFile(f"{p}: {e}") from None
