"""Retrying a call: tenacity's `Retrying`, built from a `spec.RetryPolicy`, gated by idempotency and a budget.

Owns which failures a retry may cure (`failure_kind`), whether a message may be sent
twice (`is_idempotent`), the wait strategies, and the attempt loop (`call_with_retry`).
The shared retry budget lives in the node; this module only asks it (`Budget`) before
each retry, and counts what happened (`Figures`) for the node's per-pair report.

    >>> from supervisor_tree.spec import RetryPolicy, RetryWait
    >>> w = wait_strategy(RetryPolicy(wait=RetryWait.EXPONENTIAL, initial=0.01, multiplier=3, max=1, jitter=False))
    >>> [round(w(_State(n)), 3) for n in (1, 2, 3, 4, 5)]
    [0.01, 0.03, 0.09, 0.27, 0.81]
    >>> is_idempotent(frozenset({"get"}), ("get", 7)), is_idempotent(frozenset({"get"}), {"op": "put"})
    (True, False)

Rules: a failure is retried only if (1) its kind is in the policy's `retry_on`, (2) the
handler is idempotent (declared by the worker, or the caller says so), (3) attempts and
the deadline are not used up, and (4) the callee's budget grants the retry.  A refused
retry raises `RetryRefused` (its `cause` is the failure); any other failure comes back
as it was raised, with a note saying how many attempts were made.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Protocol, TypeVar

import tenacity

from supervisor_tree.client.errors import (
    CalleeBusy,
    CalleeExited,
    CalleeUnavailable,
    CallError,
    CallTimeout,
    RetryRefused,
)
from supervisor_tree.spec import RetryOn, RetryPolicy, RetryWait
from supervisor_tree.wire.channel import readable

__all__ = ["Budget", "Figures", "failure_kind", "op_name", "is_idempotent", "wait_strategy", "call_with_retry",
           "Idempotency"]

T = TypeVar("T")
Idempotency = bool | frozenset[str]
"""What a worker declares: every call (True), none (False), or the op names of the idempotent ones."""


class Budget(Protocol):
    """The callee's retry budget as a caller sees it (the node's, through `book.RetryBook`)."""

    def withdraw(self, worker_id: str) -> bool: ...
    def describe(self, worker_id: str) -> str: ...


@dataclass(slots=True)
class Figures:
    """What one caller saw of one callee since its last report to the node."""

    requests: int = 0  # calls made (first attempts)
    attempts: int = 0  # attempts, first ones included (only calls under a policy are counted here)
    retries: int = 0  # attempts after the first
    recovered: int = 0  # calls that succeeded after at least one retry
    gave_up: int = 0  # retryable failures that used up the attempts or the deadline
    refused: int = 0  # retries the budget refused
    not_retried: int = 0  # retryable kinds not retried: the handler is not idempotent

    def add(self, other: Figures) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def take(self) -> Figures:
        """A copy, and zero these (in place: a call under way keeps counting into this object)."""
        copy = Figures(**self.as_dict())
        for f in fields(self):
            setattr(self, f.name, 0)
        return copy

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self))


def failure_kind(exc: BaseException) -> RetryOn | None:
    """The `retry_on` kind of a failure, or None for one no retry can cure."""
    if isinstance(exc, CalleeExited):
        return RetryOn.EXITED
    if isinstance(exc, CalleeBusy):
        return RetryOn.BUSY
    if isinstance(exc, CallTimeout):
        return RetryOn.TIMEOUT
    if isinstance(exc, CalleeUnavailable):
        return RetryOn.UNAVAILABLE
    if isinstance(exc, CallError):
        return RetryOn.ERROR
    return None


def op_name(msg: object) -> str | None:
    """A message's op: the first item of a tuple, or the "op" key of a dict (the components' two shapes)."""
    if type(msg) is tuple and msg and isinstance(msg[0], str):
        return msg[0]
    if isinstance(msg, dict):
        name = msg.get("op", msg.get("cmd"))
        return name if isinstance(name, str) else None
    return None


def is_idempotent(declared: Idempotency, msg: object) -> bool:
    if isinstance(declared, bool):
        return declared
    name = op_name(msg)
    return name is not None and name in declared


class _State:
    """The one field of tenacity's RetryCallState that the waits read (for the doctest)."""

    def __init__(self, attempt_number: int) -> None:
        self.attempt_number = attempt_number


class wait_decorrelated(tenacity.wait.wait_base):
    """AWS's decorrelated jitter: sleep = min(max, uniform(initial, 3 * previous sleep)).  One per call."""

    def __init__(self, initial: float, most: float, rng: random.Random) -> None:
        self.initial, self.most, self.rng = initial, most, rng
        self.previous = initial

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        self.previous = min(self.most, self.rng.uniform(self.initial, max(self.initial, self.previous * 3)))
        return self.previous


def wait_strategy(policy: RetryPolicy, rng: random.Random | None = None) -> tenacity.wait.wait_base:
    """The policy's wait as a tenacity wait (a new object per call: decorrelated keeps state)."""
    r = rng or random.Random()
    match policy.wait:
        case RetryWait.FIXED:
            base: tenacity.wait.wait_base = tenacity.wait_fixed(policy.initial)
        case RetryWait.EXPONENTIAL:
            base = tenacity.wait_exponential(multiplier=policy.initial, exp_base=policy.multiplier, max=policy.max)
        case RetryWait.RANDOM_EXPONENTIAL:
            return tenacity.wait_random_exponential(multiplier=policy.initial, exp_base=policy.multiplier,
                                                    max=policy.max)
        case RetryWait.DECORRELATED:
            return wait_decorrelated(policy.initial, policy.max, r)
    if policy.jitter and policy.initial > 0:
        return base + tenacity.wait_random(0, policy.initial)
    return base


def died_soon(pidfd: int | None, grace: float = 0.1) -> bool:
    """Whether the process behind `pidfd` exits within `grace` s (a handler that raised takes its worker down)."""
    if pidfd is None:
        return True
    return readable(pidfd, grace)


@dataclass(slots=True)
class _Run:
    """One call's progress through its attempts."""

    attempts: int = 0
    retryable: bool = False  # the last failure was one the policy retries


def call_with_retry(attempt: Callable[[float], T], worker_id: str, policy: RetryPolicy, timeout: float, *,
                    idempotent: bool, budget: Budget, figures: Figures,
                    crashed: Callable[[], bool] = lambda: False) -> T:
    """Run `attempt(timeout_s)` until it returns, under `policy`; see the module docstring for the rules.

    `crashed()`: whether the callee died after answering with an error (for `retry_on = ["error"]`).
    """
    run = _Run()
    start = time.monotonic()
    if not idempotent:  # one attempt, whatever the policy: its timeouts are for attempts that can be repeated
        policy = RetryPolicy(attempts=1, retry_on=policy.retry_on)
    per_attempt = policy.per_attempt_timeout or timeout

    def one_attempt() -> T:
        run.attempts += 1
        left = per_attempt
        if policy.deadline is not None:
            left = min(left, max(0.001, start + policy.deadline - time.monotonic()))
        return attempt(left)

    def retryable(state: tenacity.RetryCallState) -> bool:
        exc = state.outcome.exception() if state.outcome is not None else None
        kind = failure_kind(exc) if exc is not None else None
        run.retryable = kind is not None and kind in policy.retry_on and (kind is not RetryOn.ERROR or crashed())
        if run.retryable and not idempotent:
            figures.not_retried += 1
            run.retryable = False
            if exc is not None:
                exc.add_note(f"not retried: the handler of {worker_id!r} is not declared idempotent")
        return run.retryable

    def ask_budget(state: tenacity.RetryCallState) -> None:
        if not budget.withdraw(worker_id):
            exc = state.outcome.exception() if state.outcome is not None else None
            assert exc is not None
            raise RetryRefused(worker_id, exc, budget.describe(worker_id)) from exc
        figures.retries += 1

    stop: tenacity.stop.stop_base = tenacity.stop_after_attempt(policy.attempts)
    if policy.deadline is not None:
        stop = stop | tenacity.stop_before_delay(policy.deadline)
    retrying = tenacity.Retrying(stop=stop, wait=wait_strategy(policy), retry=retryable, before_sleep=ask_budget,
                                 reraise=True)
    try:
        value = retrying(one_attempt)
    except RetryRefused:
        figures.refused += 1
        raise
    except Exception as exc:
        if run.retryable:
            figures.gave_up += 1
            exc.add_note(f"gave up after {run.attempts} attempt(s) in {time.monotonic() - start:.3f}s ({worker_id!r})")
        raise
    finally:
        figures.attempts += run.attempts
    if run.attempts > 1:
        figures.recovered += 1
    return value
