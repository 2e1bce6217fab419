"""What a capture should do: the validated options of ``supervise profile``.

Owns one frozen record and its checks, so every problem with a request is reported
at once, before any process is touched.  No I/O.

    >>> CaptureOptions.from_strings(engine="yappi", clock="cpu", duration_s=5).clock
    <Clock.CPU: 'cpu'>
    >>> CaptureOptions(engine=Engine.YAPPI, native=True)
    Traceback (most recent call last):
    ...
    supervisor_tree.profiling.errors.ProfilerError: --native is a py-spy option; the yappi engine profiles Python calls only
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from supervisor_tree.profiling.collapsed import Clock, Engine
from supervisor_tree.profiling.errors import ProfilerError

MAX_RATE_HZ = 10_000
MAX_DURATION_S = 24 * 3600.0
_PYSPY_ONLY = ("native", "idle", "gil", "subprocesses")


@dataclass(frozen=True, slots=True)
class CaptureOptions:
    """``native``, ``idle``, ``gil`` and ``subprocesses`` are py-spy's flags, passed
    through; ``clock`` and ``builtins`` are yappi's.  ``rate_hz`` is py-spy's."""

    engine: Engine = Engine.PYSPY
    duration_s: float = 10.0
    rate_hz: int = 100
    native: bool = False
    idle: bool = False
    gil: bool = False
    subprocesses: bool = False
    clock: Clock = Clock.WALL
    builtins: bool = False

    def __post_init__(self) -> None:
        problems = []
        if self.engine not in (Engine.PYSPY, Engine.YAPPI):
            problems.append(f"engine must be py-spy or yappi; got {self.engine.value}")
        if not (math.isfinite(self.duration_s) and 0 < self.duration_s <= MAX_DURATION_S):
            problems.append(f"duration must be > 0 and <= {MAX_DURATION_S:g} seconds; got {self.duration_s!r}")
        if not 1 <= self.rate_hz <= MAX_RATE_HZ:
            problems.append(f"rate must be 1..{MAX_RATE_HZ} Hz; got {self.rate_hz!r}")
        if self.engine is Engine.YAPPI:
            problems += [f"--{flag} is a py-spy option; the yappi engine profiles Python calls only"
                         for flag in _PYSPY_ONLY if getattr(self, flag)]
        if problems:
            raise ProfilerError("; ".join(problems))

    @classmethod
    def from_strings(cls, *, engine: str = "py-spy", clock: str = "wall",
                     **rest: object) -> CaptureOptions:
        """Options from the CLI's words ("py-spy", "wall"), naming a bad one."""
        try:
            chosen_engine = Engine(engine)
        except ValueError:
            raise ProfilerError(f"engine must be py-spy or yappi; got {engine!r}") from None
        try:
            chosen_clock = Clock(clock)
        except ValueError:
            raise ProfilerError(f"clock must be wall or cpu; got {clock!r}") from None
        return cls(engine=chosen_engine, clock=chosen_clock, **rest)  # type: ignore[arg-type]
