"""The tree's retry table, kept in the node: effective policies, shared budgets, per-pair figures.

Owns, for every callee, its retry budget (shared by every caller in the tree: a
window of per-second buckets of first attempts and retries), the idempotency its
worker declared (the "declare" notice sent before "ready"), the live changes made by
`supervise retry set`, and the figures callers report.  A `ControlServer` extension;
the control ops that read and change it are in retry_ops.py.  Clients keep their own
view (client/book.py) and sync with it at most once a second and before each retry.

Which policy a caller uses for a callee, first match wins:

    1. live, for this caller:   supervise retry set CALLEE --caller CALLER ...
    2. the caller's config:     retry_calls = { CALLEE = { ... } }
    3. live, for every caller:  supervise retry set CALLEE ...
    4. the callee's config:     retry = { ... }
    5. none: a failure comes back at once

    >>> b = WindowBudget(RetryBudget(ratio=0.2, window=10, min_per_s=0))
    >>> b.deposit(100, now=0.0); [b.withdraw(now=1.0) for _ in range(21)].count(True)
    20
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass

from supervisor_tree.client.retry import Figures, Idempotency
from supervisor_tree.config.retry import describe_budget, describe_policy, policy_table
from supervisor_tree.node.records import NodeState, WorkerRec
from supervisor_tree.spec import ChildSpec, RetryBudget, RetryPolicy, SupervisorSpec

__all__ = ["RetryTable", "WindowBudget", "Effective", "table_of"]

EVERYONE = "*"  # the caller of a live change made for every caller
OUTSIDE, OTHERS = "pid:", "pid:others"  # a client outside the tree reports as "pid:N" (client/book.py)
MAX_OUTSIDE_CALLERS = 256  # their figures beyond the most recently heard from are summed under OTHERS


class WindowBudget:
    """Retries allowed over a sliding window: <= ratio x first attempts + min_per_s x window.

    Invariant: `buckets` holds [second, requests, retries] for the seconds of the last
    `window` seconds that saw any, oldest first; the sums are kept beside them.
    """

    def __init__(self, budget: RetryBudget) -> None:
        self.budget = budget
        self.buckets: deque[list[int]] = deque()
        self.requests = self.retries = 0
        self.refused = 0  # ever, for the report

    def _bucket(self, now: float) -> list[int]:
        second = math.floor(now)
        horizon = second - self.budget.window
        while self.buckets and self.buckets[0][0] <= horizon:
            _, req, ret = self.buckets.popleft()
            self.requests -= req
            self.retries -= ret
        if not self.buckets or self.buckets[-1][0] != second:
            self.buckets.append([second, 0, 0])
        return self.buckets[-1]

    def deposit(self, requests: int, now: float) -> None:
        self._bucket(now)[1] += requests
        self.requests += requests

    def allowance(self, now: float) -> float:
        self._bucket(now)
        return self.budget.ratio * self.requests + self.budget.min_per_s * self.budget.window

    def withdraw(self, now: float) -> bool:
        if self.retries + 1 > self.allowance(now):
            self.refused += 1
            return False
        self._bucket(now)[2] += 1
        self.retries += 1
        return True

    def view(self, now: float) -> dict[str, object]:
        return {"budget": describe_budget(self.budget), "requests_in_window": self.requests,
                "retries_in_window": self.retries, "allowance": round(self.allowance(now), 1),
                "refused": self.refused}


@dataclass(frozen=True, slots=True)
class Effective:
    policy: RetryPolicy | None
    source: str  # which rule gave it (the module docstring's list)


class RetryTable:
    """A ControlServer extension (on_stats / on_inbound / on_timer); see the module docstring."""

    def __init__(self, node: NodeState) -> None:
        self.node = node
        self.version = 0  # bumped by every live change: clients refresh their views when it moves
        self.live: dict[tuple[str, str], RetryPolicy | None] = {}  # (caller or EVERYONE, callee) -> policy
        self.live_budgets: dict[str, RetryBudget] = {}
        self.declared: dict[str, Idempotency] = {}
        self.budgets: dict[str, WindowBudget] = {}
        self.pairs: dict[tuple[str, str], Figures] = {}
        self.outside: dict[str, None] = {}  # callers outside the tree, least recently heard from first

    # -- what the config says --

    def spec_of(self, worker_id: str) -> ChildSpec | None:
        rec = self.node.by_id.get(worker_id)
        if rec is not None:
            return rec.spec
        return _find_spec(self.node.spec.tree, worker_id)

    def worker_ids(self) -> list[str]:
        ids = list(_worker_ids(self.node.spec.tree))
        return ids + [w for w in self.node.by_id if w not in ids]

    # -- effective settings --

    def effective(self, caller: str, callee: str) -> Effective:
        if caller != EVERYONE and (caller, callee) in self.live:
            return Effective(self.live[(caller, callee)], f"live, for caller {caller}")
        caller_spec = self.spec_of(caller)
        if caller_spec is not None and callee in caller_spec.retry_calls:
            return Effective(caller_spec.retry_calls[callee], f"config of caller {caller} (retry_calls)")
        if (EVERYONE, callee) in self.live:
            return Effective(self.live[(EVERYONE, callee)], "live, for every caller")
        spec = self.spec_of(callee)
        if spec is not None and spec.retry is not None:
            return Effective(spec.retry, "config of callee (retry)")
        return Effective(None, "none")

    def budget_spec(self, callee: str) -> RetryBudget:
        if callee in self.live_budgets:
            return self.live_budgets[callee]
        spec = self.spec_of(callee)
        return spec.retry_budget if spec is not None and spec.retry_budget is not None else RetryBudget()

    def budget(self, callee: str) -> WindowBudget:
        b = self.budgets.get(callee)
        if b is None:
            b = self.budgets[callee] = WindowBudget(self.budget_spec(callee))
        return b

    def view(self, caller: str, callee: str) -> dict[str, object]:
        """What a client keeps of a pair (client/book.py's CalleeView)."""
        policy = self.effective(caller, callee).policy  # JSON, as the control protocol carries it
        return {"policy": None if policy is None else policy.to_json(),
                "idempotent": _idempotency(self.declared.get(callee, False)),
                "budget": describe_budget(self.budget_spec(callee))}

    # -- what callers report --

    def sync(self, caller: str, figures: dict[str, dict[str, int]], now: float) -> None:
        if caller.startswith(OUTSIDE) and caller != OTHERS:
            self._heard_from(caller)
        for callee, counts in figures.items():
            pair = self.pairs.get((caller, callee))
            if pair is None:
                pair = self.pairs[(caller, callee)] = Figures()
            pair.add(Figures(**counts))
            if counts.get("requests"):
                self.budget(callee).deposit(int(counts["requests"]), now)

    def _heard_from(self, caller: str) -> None:
        """Keep the figures of the MAX_OUTSIDE_CALLERS outside callers heard from last apart; sum the rest
        under OTHERS.  Every short-lived program that calls into the tree is a new "pid:N": kept apart
        for ever, they grew the node (and `status --json`, `retry show`) by a row per program run."""
        outside = self.outside
        outside.pop(caller, None)
        outside[caller] = None
        while len(outside) > MAX_OUTSIDE_CALLERS:
            oldest = next(iter(outside))
            del outside[oldest]
            for key in [k for k in self.pairs if k[0] == oldest]:
                figures = self.pairs.pop(key)
                into = self.pairs.get((OTHERS, key[1]))
                if into is None:
                    into = self.pairs[(OTHERS, key[1])] = Figures()
                into.add(figures)

    # -- live changes --

    def set_policy(self, caller: str | None, callee: str, policy: RetryPolicy | None) -> None:
        self.live[(caller or EVERYONE, callee)] = policy
        self.version += 1

    def set_budget(self, callee: str, budget: RetryBudget) -> None:
        """A live budget starts a fresh window (what the callee saw under the old one does not count)."""
        self.live_budgets[callee] = budget
        self.budgets[callee] = WindowBudget(budget)
        self.version += 1

    def reset(self, caller: str | None, callee: str) -> None:
        """Forget the live changes of a pair (or of every pair of `callee` when `caller` is None)."""
        for key in [k for k in self.live if k[1] == callee and (caller is None or k[0] == caller)]:
            del self.live[key]
        if caller is None and callee in self.live_budgets:
            del self.live_budgets[callee]
            self.budget(callee).budget = self.budget_spec(callee)
        self.version += 1

    # -- reports --

    def show(self, now: float) -> dict[str, object]:
        """Every (caller, callee) pair worth a line: configured, changed live, or seen calling."""
        callees = self.worker_ids()
        callers = {EVERYONE}
        callers.update(c for (c, _) in self.live)
        callers.update(c for (c, _) in self.pairs)
        for worker_id in callees:
            spec = self.spec_of(worker_id)
            if spec is not None and spec.retry_calls:
                callers.add(worker_id)
        pairs = []
        for callee in callees:
            for caller in sorted(callers):
                eff = self.effective(caller, callee)
                figures = self.pairs.get((caller, callee))
                if caller != EVERYONE and figures is None and not self._own(caller, callee):
                    continue
                pairs.append({"caller": caller, "callee": callee, "policy": describe_policy(eff.policy),
                              "retry": None if eff.policy is None else policy_table(eff.policy),
                              "source": eff.source, "idempotent": _idempotency(self.declared.get(callee, False)),
                              "figures": figures.as_dict() if figures else Figures().as_dict()})
        budgets = {callee: self.budget(callee).view(now) for callee in callees}
        return {"version": self.version, "pairs": pairs, "budgets": budgets}

    def _own(self, caller: str, callee: str) -> bool:
        """Whether `caller` has a policy of its own for `callee` (live, or its retry_calls)."""
        spec = self.spec_of(caller)
        return (caller, callee) in self.live or (spec is not None and callee in spec.retry_calls)

    def status_part(self) -> dict[str, object]:
        """What `supervise status --json` shows under "retries": the figures of each pair that called."""
        now = time.monotonic()
        return {"retries": {
            "pairs": [{"caller": c, "callee": w, **f.as_dict()} for (c, w), f in sorted(self.pairs.items())],
            "budgets": {w: b.view(now) for w, b in sorted(self.budgets.items())}}}

    # -- the ControlServer extension protocol --

    def on_inbound(self, kind: str, msg: tuple[object, ...]) -> bool:
        if kind != "declare" or len(msg) < 5 or not isinstance(msg[1], str) or not isinstance(msg[4], dict):
            return False
        declared = msg[4].get("idempotent", False)
        if isinstance(declared, (bool, frozenset)) and self.declared.get(msg[1]) != declared:
            self.declared[msg[1]] = declared
            self.version += 1
        return True

    def on_stats(self, rec: WorkerRec) -> None:
        pass

    def on_timer(self, key: tuple[object, ...]) -> None:
        pass


def _idempotency(declared: Idempotency) -> object:
    return sorted(declared) if isinstance(declared, frozenset) else declared


def _worker_ids(spec: SupervisorSpec) -> list[str]:
    out: list[str] = []
    for child in spec.children:
        out += _worker_ids(child.supervisor) if child.supervisor is not None else [child.id]
    return out


def _find_spec(spec: SupervisorSpec, worker_id: str) -> ChildSpec | None:
    for child in spec.children:
        if child.supervisor is not None:
            found = _find_spec(child.supervisor, worker_id)
            if found is not None:
                return found
        elif child.id == worker_id:
            return child
    return None


def table_of(extensions: list[object]) -> RetryTable:
    for ext in extensions:
        if isinstance(ext, RetryTable):
            return ext
    raise LookupError("this node keeps no retry table")
