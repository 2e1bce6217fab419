"""The one error type of the profiling package (its "worker died" variant is in `exited.py`).

Owns nothing else: every engine and the orchestration raise these, so the CLI maps
one type to one exit code.  Messages are one line: who, what happened, what to change.

    >>> str(ProfilerError('worker "db" (generation 3): pid 4136 is gone'))
    'worker "db" (generation 3): pid 4136 is gone'
"""

from __future__ import annotations


class ProfilerError(Exception):
    """A capture, render or write failed; ``str(error)`` is the whole story in one line."""
