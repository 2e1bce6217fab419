"""A child's retry tables: `retry` (how callers retry calls to it), `retry_budget`, `retry_calls`.

Owns checking those three tables and mapping them onto `spec.RetryPolicy` and
`spec.RetryBudget`, every problem reported with the same shape as the rest of the
config (file, key path, value, what is allowed).  The live `supervise retry set` goes
through `policy_from_mapping` / `budget_from_mapping`, so a change made on a running
tree is checked exactly as the file is.  No I/O.

    >>> policy_from_mapping({"attempts": 4, "wait": "decorrelated", "max": 0.5}, "retry set db").attempts
    4
    >>> try:
    ...     policy_from_mapping({"wait": "linear"}, "retry set db")
    ... except ValueError as exc:
    ...     print(exc)
    retry set db: retry.wait must be one of fixed, exponential, random_exponential, decorrelated; got 'linear'
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping

from supervisor_tree.config.schema import Table, check_table
from supervisor_tree.spec import RetryBudget, RetryOn, RetryPolicy, RetryWait, _got

__all__ = ["RETRY_KEYS", "BUDGET_KEYS", "read_retry", "read_budget", "read_retry_calls", "policy_from_mapping",
           "budget_from_mapping", "policy_table", "describe_policy", "describe_budget"]

RETRY_KEYS = ("attempts", "wait", "initial", "max", "multiplier", "jitter", "deadline", "per_attempt_timeout",
              "retry_on")
BUDGET_KEYS = ("ratio", "window", "min_per_s")
WAITS = tuple(w.value for w in RetryWait)
KINDS = tuple(k.value for k in RetryOn)


def read_retry(t: Table, key: str = "retry") -> RetryPolicy | None:
    """The policy in `t[key]` (a table), or None when absent or not a table (reported)."""
    r = t.sub_table(key)
    if r is None:
        return None
    r.reject_unknown(RETRY_KEYS)
    d = RetryPolicy()
    attempts = r.integer("attempts", d.attempts, at_least=1)
    wait = RetryWait(r.choice("wait", WAITS, d.wait.value))
    initial = r.number("initial", d.initial, at_least=0)
    most = r.number("max", d.max, above=0)
    if not {"initial", "max"} & r.bad and most < initial:
        r.report(f"{r.name('max')} must be >= {r.name('initial')} ({initial:g}); got {most:g}")
    multiplier = r.number("multiplier", d.multiplier, at_least=1, unit="")
    deadline = r.number("deadline", 0.0, above=0) if "deadline" in r.data else None
    per_attempt = r.number("per_attempt_timeout", 0.0, above=0) if "per_attempt_timeout" in r.data else None
    if deadline and per_attempt and not {"deadline", "per_attempt_timeout"} & r.bad and per_attempt > deadline:
        r.report(f"{r.name('per_attempt_timeout')} must be <= {r.name('deadline')} ({deadline:g}); got {per_attempt:g}")
    return RetryPolicy(attempts, wait, initial, most, r.flag("jitter", d.jitter), multiplier,
                       deadline or None, per_attempt or None, _retry_on(r, d.retry_on))


def _retry_on(r: Table, default: tuple[RetryOn, ...]) -> tuple[RetryOn, ...]:
    if "retry_on" not in r.data:
        return default
    value = r.data["retry_on"]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        r.report(f"{r.name('retry_on')} must be an array of {', '.join(KINDS)}; got {_got(value)}")
        return default
    kinds: list[RetryOn] = []
    for v in value:
        if v in KINDS:
            kinds.append(RetryOn(v))
            continue
        close = difflib.get_close_matches(v, KINDS, n=1)
        hint = f' (did you mean "{close[0]}"?)' if close else ""
        r.report(f"{r.name('retry_on')} has an unknown failure {v!r}{hint}; allowed: {', '.join(KINDS)}")
    return tuple(dict.fromkeys(kinds))


def read_budget(t: Table) -> RetryBudget | None:
    b = t.sub_table("retry_budget")
    if b is None:
        return None
    b.reject_unknown(BUDGET_KEYS)
    d = RetryBudget()
    return RetryBudget(b.number("ratio", d.ratio, at_least=0, unit="a fraction of requests"),
                       b.number("window", d.window, above=0),
                       b.number("min_per_s", d.min_per_s, at_least=0, unit="retries a second"))


def read_retry_calls(t: Table) -> dict[str, RetryPolicy]:
    """`retry_calls = { session = { attempts = 5 }, ... }`: this child's own policy per callee id.

    The callee ids are checked against the tree by the caller (`unknown_callees`), once
    every id is known.
    """
    c = t.sub_table("retry_calls", what=" (callee id -> a retry table)")
    if c is None:
        return {}
    out: dict[str, RetryPolicy] = {}
    for callee, value in c.data.items():
        problem = check_table(c.name(str(callee)), value)
        if problem:
            c.report(problem)
            continue
        policy = read_retry(c, str(callee))
        if policy is not None:
            out[str(callee)] = policy
    return out


def unknown_callee(callee: str, worker_ids: list[str]) -> str | None:
    if callee in worker_ids:
        return None
    close = difflib.get_close_matches(callee, worker_ids, n=1)
    hint = f' (did you mean "{close[0]}"?)' if close else ""
    return f"retry_calls names {callee!r}, which is not a worker id in the tree{hint}"


def _from_mapping(data: Mapping[str, object], where: str, key: str) -> tuple[Table, list[str]]:
    problems: list[str] = []
    return Table({key: dict(data)}, where, lambda w, m: problems.append(f"{w}: {m}")), problems


def policy_from_mapping(data: Mapping[str, object], where: str) -> RetryPolicy:
    """A policy from a plain mapping (the live `retry set`); ValueError with every problem, one per line."""
    table, problems = _from_mapping(data, where, "retry")
    policy = read_retry(table)
    if problems or policy is None:
        raise ValueError("\n".join(problems) or f"{where}: retry must be a table")
    return policy


def budget_from_mapping(data: Mapping[str, object], where: str) -> RetryBudget:
    table, problems = _from_mapping(data, where, "retry_budget")
    budget = read_budget(table)
    if problems or budget is None:
        raise ValueError("\n".join(problems) or f"{where}: retry_budget must be a table")
    return budget


def policy_table(policy: RetryPolicy) -> dict[str, object]:
    """The config's form of a policy (what `retry show --json` prints and tune-retry writes as TOML)."""
    table: dict[str, object] = {"attempts": policy.attempts, "wait": policy.wait.value, "initial": policy.initial,
                                "max": policy.max, "multiplier": policy.multiplier, "jitter": policy.jitter}
    if policy.deadline is not None:
        table["deadline"] = policy.deadline
    if policy.per_attempt_timeout is not None:
        table["per_attempt_timeout"] = policy.per_attempt_timeout
    table["retry_on"] = [r.value for r in policy.retry_on]
    return table


def describe_policy(policy: RetryPolicy | None) -> str:
    """One line: `3 attempts, exponential 0.05s..2s x2 +jitter, deadline 5s, on timeout/exited/unavailable`."""
    if policy is None:
        return "no retry"
    wait = f"{policy.wait.value} {policy.initial:g}s"
    if policy.wait is not RetryWait.FIXED:
        wait += f"..{policy.max:g}s"
    if policy.wait in (RetryWait.EXPONENTIAL, RetryWait.RANDOM_EXPONENTIAL):
        wait += f" x{policy.multiplier:g}"
    if policy.jitter and policy.wait in (RetryWait.FIXED, RetryWait.EXPONENTIAL):
        wait += " +jitter"
    parts = [f"{policy.attempts} attempt{'s' if policy.attempts != 1 else ''}", wait]
    if policy.deadline is not None:
        parts.append(f"deadline {policy.deadline:g}s")
    if policy.per_attempt_timeout is not None:
        parts.append(f"attempt timeout {policy.per_attempt_timeout:g}s")
    parts.append("on " + "/".join(r.value for r in policy.retry_on) if policy.retry_on else "on nothing")
    return ", ".join(parts)


def describe_budget(budget: RetryBudget) -> str:
    return f"{budget.ratio:.0%} of requests over {budget.window:g}s + {budget.min_per_s:g}/s"
