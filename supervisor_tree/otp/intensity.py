"""Restart intensity (OTP's add_restart, R4) and the backoff extension's delays.

Owns two pure computations; the supervisor decides when to call them.  No clock
reads: time comes in as `now`, in seconds of a monotonic clock.

    >>> window, ok = add_restart((), now=10.4, intensity=1, period=5)
    >>> window, ok
    ((10,), True)
    >>> add_restart(window, now=12.0, intensity=1, period=5)
    ((12, 10), False)
    >>> backoff_delay(Backoff(initial=0.1, factor=2.0, cap=1.0), attempt=3, seed="root/db/3")
    0.4
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import cast

import tenacity

from supervisor_tree.spec import Backoff


def add_restart(restarts: tuple[int, ...], now: float, intensity: int, period: int) -> tuple[tuple[int, ...], bool]:
    """Record one restart at `now`; return the new window (newest first) and whether it is allowed.

    As OTP: timestamps are whole seconds; a recorded restart is forgotten once its
    second is older than now - period; more than `intensity` remaining means give up.
    So two restarts at most `period` s apart always count together and two at least
    `period + 1` s apart never do; in between it depends on the second boundaries (S15).
    """
    second = math.floor(now)
    threshold = second - period
    window = (second,) + tuple(r for r in restarts if r >= threshold)
    return window, len(window) <= intensity


@dataclass(frozen=True, slots=True)
class _Attempt:
    """The one field of tenacity's RetryCallState that wait_exponential reads.

    A real RetryCallState reads the clock when built; the supervisor must not."""

    attempt_number: int


def backoff_delay(backoff: Backoff, attempt: int, seed: str) -> float:
    """Seconds to wait before the `attempt`-th consecutive restart (attempt >= 1).

    The policy is tenacity's wait_exponential: min(cap, initial * factor**(attempt-1)).
    With `jitter` it is multiplied by a factor in [0.5, 1.0] drawn from a generator
    seeded with `seed` (built from state the supervisor keeps), so the same state
    always gives the same delay and decide stays pure.
    """
    wait = tenacity.wait_exponential(multiplier=backoff.initial, exp_base=backoff.factor, max=backoff.cap)
    delay = float(wait(cast(tenacity.RetryCallState, _Attempt(attempt))))
    if backoff.jitter:
        delay *= random.Random(seed).uniform(0.5, 1.0)
    return delay
