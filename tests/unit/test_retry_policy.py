"""Retry policies as pure code: waits, the attempt loop's rules, the windowed budget, idempotency."""

from __future__ import annotations

import random

import pytest

from supervisor_tree import Worker, idempotent
from supervisor_tree.client.errors import CalleeExited, CallError, CallTimeout, RetryRefused
from supervisor_tree.client.retry import Figures, call_with_retry, failure_kind, is_idempotent, op_name, wait_strategy
from supervisor_tree.config.retry import describe_policy, policy_from_mapping
from supervisor_tree.node.retries import WindowBudget
from supervisor_tree.spec import RetryBudget, RetryOn, RetryPolicy, RetryWait
from supervisor_tree.worker.idempotency import declared
from supervisor_tree.workers._component import Component


class _Attempt:
    def __init__(self, n: int) -> None:
        self.attempt_number = n


def waits(policy: RetryPolicy, n: int = 6, seed: int = 1) -> list[float]:
    w = wait_strategy(policy, random.Random(seed))
    return [w(_Attempt(i)) for i in range(1, n + 1)]  # type: ignore[arg-type]


def test_fixed_and_exponential_waits_follow_initial_multiplier_and_max() -> None:
    assert waits(RetryPolicy(wait=RetryWait.FIXED, initial=0.2, jitter=False), 3) == [0.2, 0.2, 0.2]
    exp = waits(RetryPolicy(wait=RetryWait.EXPONENTIAL, initial=0.1, multiplier=2, max=0.5, jitter=False), 5)
    assert exp == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])


def test_jitter_adds_at_most_initial() -> None:
    jittered = waits(RetryPolicy(wait=RetryWait.FIXED, initial=0.1, jitter=True), 50)
    assert all(0.1 <= w <= 0.2 for w in jittered) and len(set(jittered)) > 1


def test_random_waits_stay_in_their_bounds() -> None:
    full = waits(RetryPolicy(wait=RetryWait.RANDOM_EXPONENTIAL, initial=0.1, multiplier=2, max=1.0), 50)
    assert all(0 <= w <= 1.0 for w in full)
    decorrelated = waits(RetryPolicy(wait=RetryWait.DECORRELATED, initial=0.05, max=0.4), 50)
    assert all(0.05 <= w <= 0.4 for w in decorrelated) and max(decorrelated) > 0.2


class Budget:
    def __init__(self, grants: int) -> None:
        self.grants = grants
        self.asked = 0

    def withdraw(self, worker_id: str) -> bool:
        self.asked += 1
        return self.asked <= self.grants

    def describe(self, worker_id: str) -> str:
        return f"{self.grants} grants"


def failing(*errors: BaseException, value: object = "ok") -> tuple[list[float], object]:
    timeouts: list[float] = []
    pending = list(errors)

    def attempt(timeout: float) -> object:
        timeouts.append(timeout)
        if pending:
            raise pending.pop(0)
        return value

    return timeouts, attempt


FAST = RetryPolicy(attempts=3, wait=RetryWait.FIXED, initial=0.0, jitter=False)


def test_a_cured_failure_is_retried_and_counted() -> None:
    timeouts, attempt = failing(CalleeExited("w", 1, 1, "killed"))
    figures = Figures()
    assert call_with_retry(attempt, "w", FAST, 2.0, idempotent=True, budget=Budget(5), figures=figures) == "ok"
    assert (figures.attempts, figures.retries, figures.recovered, figures.gave_up) == (2, 1, 1, 0)
    assert timeouts == [2.0, 2.0]


def test_not_idempotent_means_one_attempt_and_a_note() -> None:
    _, attempt = failing(CallTimeout("slow"))
    figures = Figures()
    with pytest.raises(CallTimeout) as info:
        call_with_retry(attempt, "w", FAST, 1.0, idempotent=False, budget=Budget(5), figures=figures)
    assert "not declared idempotent" in "".join(info.value.__notes__)
    assert (figures.attempts, figures.not_retried) == (1, 1)


def test_a_kind_outside_retry_on_comes_back_at_once() -> None:
    _, attempt = failing(CallError("w", "boom"))
    figures = Figures()
    with pytest.raises(CallError):
        call_with_retry(attempt, "w", FAST, 1.0, idempotent=True, budget=Budget(5), figures=figures)
    assert figures.attempts == 1 and figures.retries == 0


def test_attempts_run_out_and_the_last_error_says_so() -> None:
    _, attempt = failing(*[CallTimeout("t")] * 5)
    figures = Figures()
    with pytest.raises(CallTimeout) as info:
        call_with_retry(attempt, "w", FAST, 1.0, idempotent=True, budget=Budget(5), figures=figures)
    assert "gave up after 3 attempt(s)" in "".join(info.value.__notes__)
    assert (figures.attempts, figures.retries, figures.gave_up) == (3, 2, 1)


def test_a_refused_retry_raises_retry_refused_with_its_cause() -> None:
    cause = CalleeExited("w", 1, 1, "killed")
    _, attempt = failing(cause)
    figures = Figures()
    with pytest.raises(RetryRefused) as info:
        call_with_retry(attempt, "w", FAST, 1.0, idempotent=True, budget=Budget(0), figures=figures)
    assert info.value.cause is cause and "retry budget of 'w' is spent (0 grants)" in str(info.value)
    assert (figures.refused, figures.retries) == (1, 0)


def test_the_deadline_bounds_each_attempt_and_the_whole_call() -> None:
    policy = RetryPolicy(attempts=10, wait=RetryWait.FIXED, initial=0.05, jitter=False, deadline=0.12,
                         per_attempt_timeout=0.1)
    timeouts, attempt = failing(*[CallTimeout("t")] * 10)
    with pytest.raises(CallTimeout):
        call_with_retry(attempt, "w", policy, 5.0, idempotent=True, budget=Budget(10), figures=Figures())
    assert timeouts[0] == 0.1 and all(t <= 0.1 for t in timeouts) and len(timeouts) < 4


def test_failure_kinds() -> None:
    assert failure_kind(CalleeExited("w", 1, 1, "x")) is RetryOn.EXITED
    assert failure_kind(CallTimeout("x")) is RetryOn.TIMEOUT
    assert failure_kind(ValueError("x")) is None


def test_op_names_and_idempotency() -> None:
    assert op_name(("get", 1)) == "get" and op_name({"op": "put"}) == "put" and op_name({"cmd": "echo"}) == "echo"
    assert op_name(42) is None and op_name([1]) is None
    assert is_idempotent(True, 42) and not is_idempotent(False, ("get",))
    assert is_idempotent(frozenset({"get"}), {"op": "get"}) and not is_idempotent(frozenset({"get"}), 42)


class Store(Component):
    idempotent_calls = {"get"}

    @idempotent
    def op_touch(self, key: str) -> bool:
        return True

    def op_put(self, key: str) -> None: ...


class Reader(Worker):
    @idempotent
    def handle_call(self, msg: object) -> object:
        return msg


def test_a_worker_declares_by_attribute_and_by_decorator() -> None:
    assert declared(Store()) == frozenset({"get", "touch"})
    assert declared(Reader()) is True
    assert declared(Worker()) == frozenset()


def test_the_window_budget_allows_ratio_of_requests_plus_the_floor() -> None:
    b = WindowBudget(RetryBudget(ratio=0.2, window=10, min_per_s=1))
    b.deposit(50, now=100.0)
    granted = sum(b.withdraw(now=100.5) for _ in range(40))
    assert granted == 10 + 10 and b.refused == 20  # 20 % of 50, plus 1/s x 10 s


def test_the_window_forgets_old_seconds() -> None:
    b = WindowBudget(RetryBudget(ratio=0.5, window=2, min_per_s=0))
    b.deposit(10, now=0.0)
    assert sum(b.withdraw(now=0.1) for _ in range(10)) == 5
    assert not b.withdraw(now=2.5)  # the requests of second 0 left the window with their retries
    b.deposit(4, now=2.6)
    assert sum(b.withdraw(now=2.7) for _ in range(10)) == 2


def test_live_changes_are_checked_like_the_config() -> None:
    policy = policy_from_mapping({"attempts": 2, "wait": "random_exponential", "retry_on": ["busy"]}, "retry set db")
    assert describe_policy(policy) == "2 attempts, random_exponential 0.05s..2s x2, on busy"
    with pytest.raises(ValueError, match="retry set db: retry.attempts must be an integer >= 1; got 0"):
        policy_from_mapping({"attempts": 0}, "retry set db")


def test_a_policy_and_a_budget_survive_json_and_a_bad_one_is_named() -> None:
    import json

    policy = RetryPolicy(attempts=5, wait=RetryWait.DECORRELATED, deadline=4.0, retry_on=(RetryOn.BUSY, RetryOn.ERROR))
    assert RetryPolicy.from_json(json.loads(json.dumps(policy.to_json()))) == policy
    budget = RetryBudget(ratio=0.1, window=5, min_per_s=0)
    assert RetryBudget.from_json(json.loads(json.dumps(budget.to_json()))) == budget
    with pytest.raises(ValueError, match="not a retry policy: attempts must be an integer"):
        RetryPolicy.from_json({"attempts": "3"})
    with pytest.raises(ValueError, match="not a retry policy: 'linear' is not a valid RetryWait"):
        RetryPolicy.from_json({"wait": "linear"})
