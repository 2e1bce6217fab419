"""The retry vocabulary: how a client retries a call, and how much retrying a callee takes.

Owns `RetryWait`, `RetryOn`, `RetryPolicy` and `RetryBudget` (re-exported by `spec`,
where a child's `retry`, `retry_budget` and `retry_calls` use them) and their JSON form,
the one the control protocol carries (`to_json` / `from_json`: the node answers a
client's `resolve` and `retry_sync` with it).  Imports nothing of the package; no I/O.
The config's checks of these tables are in config/retry.py.

    >>> p = RetryPolicy(attempts=4, wait=RetryWait.DECORRELATED, retry_on=(RetryOn.BUSY,))
    >>> RetryPolicy.from_json(p.to_json()) == p
    True
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["RetryWait", "RetryOn", "RetryPolicy", "RetryBudget"]


class RetryWait(enum.StrEnum):
    """How long a client waits between attempts (tenacity's wait strategies, see client/retry.py)."""

    FIXED = "fixed"  # `initial` every time
    EXPONENTIAL = "exponential"  # initial * multiplier**(n-1), capped at `max`
    RANDOM_EXPONENTIAL = "random_exponential"  # uniform in [0, that]: AWS's "full jitter"
    DECORRELATED = "decorrelated"  # uniform in [initial, 3 * previous], capped: AWS's "decorrelated jitter"


class RetryOn(enum.StrEnum):
    """The failures a retry may cure; anything else comes back to the caller at once."""

    TIMEOUT = "timeout"  # no reply within the attempt's timeout
    EXITED = "exited"  # the callee's incarnation died before it replied
    UNAVAILABLE = "unavailable"  # no running incarnation to send to (restarting, not started)
    BUSY = "busy"  # the callee's mailbox stayed full (backpressure) for the whole attempt
    ERROR = "error"  # the handler raised (the worker crashed): only for handlers that fail transiently


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a client retries a call (tenacity, see client/retry.py): attempts, waits, deadlines.

    A call is retried only when its handler is idempotent (the worker declares it, or the
    caller says so), only for the failures in `retry_on`, and only while the callee's
    retry budget (`RetryBudget`) allows.  `deadline` bounds all attempts and waits
    together; `per_attempt_timeout` bounds one attempt (default: the call's timeout).
    `jitter` adds a random wait in [0, initial] to the fixed and exponential waits (the
    random ones are jittered by construction).
    """

    attempts: int = 3
    wait: RetryWait = RetryWait.EXPONENTIAL
    initial: float = 0.05
    max: float = 2.0
    jitter: bool = True
    multiplier: float = 2.0
    deadline: float | None = None
    per_attempt_timeout: float | None = None
    retry_on: tuple[RetryOn, ...] = (RetryOn.TIMEOUT, RetryOn.EXITED, RetryOn.UNAVAILABLE)

    def to_json(self) -> dict[str, object]:
        """The policy as JSON (the control protocol's): enums as their values, `retry_on` a list."""
        return {"attempts": self.attempts, "wait": self.wait.value, "initial": self.initial, "max": self.max,
                "jitter": self.jitter, "multiplier": self.multiplier, "deadline": self.deadline,
                "per_attempt_timeout": self.per_attempt_timeout, "retry_on": [r.value for r in self.retry_on]}

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> RetryPolicy:
        """`to_json`'s inverse; ValueError (naming the field) for a value that is not a policy's."""
        d = cls()
        try:
            retry_on = data.get("retry_on", [r.value for r in d.retry_on])
            if not isinstance(retry_on, (list, tuple)):
                raise ValueError(f"retry_on must be a list; got {type(retry_on).__name__}")
            return cls(attempts=_int(data.get("attempts", d.attempts), "attempts"),
                       wait=RetryWait(str(data.get("wait", d.wait.value))),
                       initial=_num(data.get("initial", d.initial), "initial"), max=_num(data.get("max", d.max), "max"),
                       jitter=bool(data.get("jitter", d.jitter)),
                       multiplier=_num(data.get("multiplier", d.multiplier), "multiplier"),
                       deadline=_opt_num(data.get("deadline"), "deadline"),
                       per_attempt_timeout=_opt_num(data.get("per_attempt_timeout"), "per_attempt_timeout"),
                       retry_on=tuple(RetryOn(str(r)) for r in retry_on))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"not a retry policy: {exc}") from None


@dataclass(frozen=True, slots=True)
class RetryBudget:
    """A callee's retry budget, shared by every caller in the tree (Finagle's, Envoy's).

    Retries to the callee may be at most `ratio` of its first attempts over the last
    `window` seconds, plus `min_per_s` retries a second (so a quiet callee can still be
    retried): at 100 % failure the callee sees at most (1 + ratio) x its normal load.
    """

    ratio: float = 0.2
    window: float = 10.0
    min_per_s: float = 2.0

    def to_json(self) -> dict[str, object]:
        return {"ratio": self.ratio, "window": self.window, "min_per_s": self.min_per_s}

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> RetryBudget:
        d = cls()
        return cls(_num(data.get("ratio", d.ratio), "ratio"), _num(data.get("window", d.window), "window"),
                   _num(data.get("min_per_s", d.min_per_s), "min_per_s"))


def _num(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number; got {type(value).__name__}")
    return float(value)


def _opt_num(value: object, name: str) -> float | None:
    return None if value is None else _num(value, name)


def _int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer; got {type(value).__name__}")
    return value
