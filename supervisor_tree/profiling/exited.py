"""The worker died while it was being profiled: the error, carrying what was collected.

    raise WorkerExited('worker "db" (generation 3): pid 4136 exited during the capture', partial)
"""

from __future__ import annotations

from supervisor_tree.profiling.collapsed import Profile
from supervisor_tree.profiling.errors import ProfilerError

__all__ = ["WorkerExited"]


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
