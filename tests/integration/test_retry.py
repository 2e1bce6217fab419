"""Retry policies on a real tree: idempotent calls retried through real faults, the shared budget, live changes."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from nodes import Tree, started, wait_for, write_config

from supervisor_tree.client import CalleeExited, CallError, CallTimeout, Client, ControlRefused, RetryRefused
from supervisor_tree.spec import RetryOn, RetryPolicy, RetryWait

pytestmark = pytest.mark.timeout(120)

CONFIG = """
[node]
name = "retry"
preload = ["supervisor_tree.workers.puppet"]

[tree]
intensity = 100
period = 1

[[tree.children]]
id = "p"
start = "supervisor_tree.workers.puppet:Puppet"
shutdown = "brutal_kill"
retry = { attempts = 3, wait = "fixed", initial = 0.01, per_attempt_timeout = 0.4 }

[[tree.children]]
id = "plain"
start = "supervisor_tree.workers.puppet:Puppet"
shutdown = "brutal_kill"
retry_budget = { ratio = 0.2, window = 10, min_per_s = 0 }
"""

ECHO = {"cmd": "echo", "value": 7}


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    t = started(write_config(tmp_path_factory.mktemp("retry"), CONFIG))
    yield t
    t.stop()


def pair(t: Tree, caller: str, callee: str) -> dict[str, int]:
    pairs = t.client.status()["retries"]["pairs"]
    return next((p for p in pairs if p["caller"] == caller and p["callee"] == callee), {})


def test_an_idempotent_call_is_retried_through_a_dropped_message(tree: Tree) -> None:
    with Client(tree.run_dir, caller="dropped") as c:
        c.control_worker("p", "fault", {"kind": "drop", "count": 1})
        assert c.call("p", ECHO) == 7  # the first attempt's message was dropped: timed out, retried
    figures = pair(tree, "dropped", "p")
    assert (figures["requests"], figures["attempts"], figures["retries"], figures["recovered"]) == (1, 2, 1, 1)


def test_a_call_that_is_not_idempotent_fails_at_once_with_its_reason(tree: Tree) -> None:
    gen = tree.client.resolve("p").generation
    with Client(tree.run_dir, caller="unsafe") as c:
        with pytest.raises(CalleeExited) as info:
            c.call("p", {"cmd": "exit_code", "code": 3})
    assert "not declared idempotent" in "".join(info.value.__notes__)
    wait_for(lambda: tree.client.resolve("p").generation == gen + 1, what="p's restart")
    assert pair(tree, "unsafe", "p")["not_retried"] == 1
    assert tree.client.resolve("p").generation == gen + 1  # sent once, so the worker died once


def test_the_caller_may_say_a_call_is_idempotent_and_retry_on_error(tree: Tree) -> None:
    policy = RetryPolicy(attempts=2, wait=RetryWait.FIXED, initial=0.0, retry_on=(RetryOn.ERROR,))
    with Client(tree.run_dir, caller="bold") as c:
        c.control_worker("p", "fault", {"kind": "exception"})
        assert c.call("p", {"cmd": "echo", "value": 1}, retry=policy, idempotent=True) == 1
        with pytest.raises(CallError):  # a handler error without a crash is an answer, never retried
            c.call("p", {"cmd": "nonsense"}, retry=policy, idempotent=True)
    assert pair(tree, "bold", "p")["recovered"] == 1


def test_at_full_failure_the_budget_keeps_retries_within_its_ratio(tree: Tree) -> None:
    policy = RetryPolicy(attempts=5, wait=RetryWait.FIXED, initial=0.0, per_attempt_timeout=0.05)
    with Client(tree.run_dir, caller="storm") as c:
        c.control_worker("plain", "fault", {"kind": "drop", "duration": 60})
        outcomes = []
        for _ in range(30):
            try:
                c.call("plain", ECHO, retry=policy, idempotent=True)
            except (CallTimeout, RetryRefused) as exc:
                outcomes.append(type(exc).__name__)
        c.control_worker("plain", "fault", {"kind": "clear"})
    figures = pair(tree, "storm", "plain")
    assert figures["requests"] == 30 and "RetryRefused" in outcomes
    assert figures["retries"] <= 0.2 * 30 + 1  # the first request alone already allows a fifth of a retry
    assert figures["attempts"] == 30 + figures["retries"]


def test_concurrent_callers_are_counted_exactly(tree: Tree) -> None:
    calls, threads = 40, 4
    gave_up = [0] * threads

    def caller(i: int) -> None:
        with Client(tree.run_dir, caller=f"crowd-{i}") as c:
            for _ in range(calls):
                try:
                    assert c.call("p", ECHO) == 7
                except CallTimeout:  # three drops in a row: rare, and counted below
                    gave_up[i] += 1

    tree.client.control_worker("p", "fault", {"kind": "drop", "probability": 0.1, "duration": 60, "seed": 3})
    workers = [threading.Thread(target=caller, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    tree.client.control_worker("p", "fault", {"kind": "clear"})
    rows = [pair(tree, f"crowd-{i}", "p") for i in range(threads)]
    assert [r["requests"] for r in rows] == [calls] * threads
    assert all(r["attempts"] == r["requests"] + r["retries"] for r in rows)
    assert [r["gave_up"] for r in rows] == gave_up
    assert sum(r["recovered"] for r in rows) >= 1


def test_retry_set_changes_a_running_tree_and_is_an_event(tree: Tree) -> None:
    with Client(tree.run_dir, caller="live") as c:
        assert c.call("p", ECHO) == 7
        assert c.retries.known["p"].policy is not None
        done = tree.cli("retry", "set", "p", "--caller", "live", "--off")
        assert done.returncode == 0, done.stderr
        assert "live -> p: no retry (live, for caller live)" in done.stdout
        c.retries.flush(c)  # what the next call does once a second has passed
        assert c.retries.known["p"].policy is None
        c.control_worker("p", "fault", {"kind": "drop", "count": 1})
        with pytest.raises(CallTimeout):
            c.call("p", ECHO, timeout=0.3)
    event = tree.wait_event(lambda e: e["event"] == "retry_policy_changed" and e["child"] == "p")
    assert event["detail"]["caller"] == "live" and event["detail"]["policy"] == "no retry"
    shown = json.loads(tree.cli("retry", "show", "--json").stdout)
    live = next(p for p in shown["pairs"] if p["caller"] == "live" and p["callee"] == "p")
    assert live["source"] == "live, for caller live"
    assert tree.cli("retry", "set", "p", "--caller", "live", "--reset").returncode == 0


def test_retry_set_refuses_bad_values_as_the_config_does(tree: Tree) -> None:
    bad = tree.cli("retry", "set", "p", "--initial", "5", "--max", "1")
    assert bad.returncode == 2
    assert bad.stderr.strip() == "supervise: retry set p: retry.max must be >= retry.initial (5); got 1"
    unknown = tree.cli("retry", "set", "nope", "--attempts", "2")
    assert unknown.returncode == 2 and "no worker 'nope' in this tree; workers: p, plain" in unknown.stderr
    nothing = tree.cli("retry", "set", "p")
    assert nothing.returncode == 2 and "nothing to change" in nothing.stderr


def test_retry_show_prints_every_pair_and_budget(tree: Tree) -> None:
    shown = tree.cli("retry", "show")
    assert shown.returncode == 0, shown.stderr
    assert "retry policies" in shown.stdout and "retry budgets" in shown.stdout
    assert "config of callee (retry)" in shown.stdout and "20% of requests over 10s + 0/s" in shown.stdout


def test_status_json_carries_the_retry_figures(tree: Tree, tmp_path: Path) -> None:
    status = json.loads(tree.cli("status", "--json").stdout)
    assert {"pairs", "budgets"} <= set(status["retries"])
    assert status["retries"]["budgets"]["plain"]["budget"] == "20% of requests over 10s + 0/s"
    assert status["retries"]["budgets"]["p"]["budget"] == "20% of requests over 10s + 2/s"


def test_policies_cross_the_json_control_protocol_whole(tree: Tree) -> None:
    configured = RetryPolicy(attempts=3, wait=RetryWait.FIXED, initial=0.01, per_attempt_timeout=0.4)
    with Client(tree.run_dir, caller="json") as c:
        assert c.resolve("p").retry == configured  # resolve's "retry", rebuilt from JSON
        view = c.retries.view(c, "p")  # retry_sync's view
        assert view.policy == configured and view.policy.retry_on == (RetryOn.TIMEOUT, RetryOn.EXITED,
                                                                       RetryOn.UNAVAILABLE)
        assert c.retries.view(c, "plain").policy is None


def test_bad_retry_and_fault_requests_are_refused_and_the_tree_serves_on(tree: Tree) -> None:
    with Client(tree.run_dir, caller="bad") as c:
        with pytest.raises(ControlRefused, match=r"figures\['p'\] must be a table of counts"):
            c.control("retry_sync", caller="bad", version=0, figures={"p": {"requests": "many"}})
        with pytest.raises(ControlRefused, match="argument 'version' must be int"):
            c.control("retry_sync", caller="bad", version="0")
        with pytest.raises(CallError, match="fault: ms must be int|float"):
            c.control_worker("p", "fault", {"kind": "slow", "ms": "lots"})
        with pytest.raises(CallError, match="fault: unknown argument 'pid'"):
            c.control_worker("p", "fault", {"kind": "drop", "pid": 1})
        assert c.control_worker("p", "fault", {"kind": "list"}) == {"armed": []}  # nothing was armed
        assert c.call("p", ECHO) == 7


def test_the_figures_of_many_outside_callers_stay_bounded_and_summed(tree: Tree) -> None:
    """Each program outside the tree reports as "pid:N": past the most recent 256, their figures are summed
    under "pid:others" instead of a row each for ever.  Sent as the clients send them (retry_sync)."""
    from supervisor_tree.node.retries import MAX_OUTSIDE_CALLERS

    n = MAX_OUTSIDE_CALLERS + 40
    with Client(tree.run_dir, caller="sync-test") as c:
        for i in range(n):
            c.control("retry_sync", caller=f"pid:{10_000_000 + i}", figures={"plain": {"requests": 3}})
        pairs = c.status()["retries"]["pairs"]
    mine = [p for p in pairs if p["caller"].startswith("pid:1") and len(p["caller"]) == len("pid:10000000")]
    others = [p for p in pairs if p["caller"] == "pid:others" and p["callee"] == "plain"]
    assert len(mine) <= MAX_OUTSIDE_CALLERS
    assert {p["caller"] for p in mine} >= {f"pid:{10_000_000 + i}" for i in range(n - 10, n)}  # the latest kept
    assert len(others) == 1 and others[0]["requests"] >= 3 * 40
    assert sum(p["requests"] for p in mine) + others[0]["requests"] >= 3 * n  # nothing lost
