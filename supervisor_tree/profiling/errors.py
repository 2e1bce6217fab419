"""The one error type of the profiling package, and its "worker died" variant.

Owns nothing else: every engine and the orchestration raise these, so the CLI maps
one type to one exit code.  Messages are one line: who, what happened, what to change.

    >>> str(ProfilerError('worker "db" (generation 3): pid 4136 is gone'))
    'worker "db" (generation 3): pid 4136 is gone'
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from supervisor_tree.profiling.collapsed import Profile


class ProfilerError(Exception):
    """A capture, render or write failed; ``str(error)`` is the whole story in one line."""


class WorkerExited(ProfilerError):
    """The worker exited while it was being profiled.

    ``partial`` holds what was collected before it died (py-spy keeps its samples),
    or None when nothing survived (yappi's data lived inside the dead process).
    The CLI writes ``partial`` when there is one and prints the message either way.
    """

    def __init__(self, message: str, partial: Profile | None = None) -> None:
        super().__init__(message)
        self.partial = partial

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (str(self), self.partial))
