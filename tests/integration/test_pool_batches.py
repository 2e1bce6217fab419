"""The pool's batches: runs handed to a member together keep their own answers, deadlines and deaths."""

from __future__ import annotations

from pathlib import Path

import pytest
from components import pool, start_tree  # noqa: F401 - start_tree is a fixture
from nodes import wait_for

from supervisor_tree.client import CallError
from supervisor_tree.workers.pool import PoolClient, PoolTimeout, TaskFailed

pytestmark = pytest.mark.timeout(120)

ALWAYS = {"spread": 10.0}  # runs "short" whatever they take: every run goes in a batch (up to `batch`)
RECORD = "tests.integration.pool_tasks:record"


def _error_type(answer: object) -> str:
    assert isinstance(answer, CallError), answer
    return str(getattr(answer.error, "type", ""))


def test_a_task_that_raises_mid_map_fails_only_its_own_call(start_tree) -> None:  # type: ignore[no-untyped-def]
    t = start_tree(pool(size=2, max_overflow=0, **ALWAYS))
    msgs: list[object] = [("run", "echo", (i,), 5.0) for i in range(100)]
    msgs[50] = ("run", "raise", ("boom at 50",), 5.0)
    got = t.client.call_many("pool", msgs, return_exceptions=True)
    assert _error_type(got[50]) == "TaskFailed" and "boom at 50" in str(got[50])
    assert [v for i, v in enumerate(got) if i != 50] == [i for i in range(100) if i != 50]
    p = PoolClient(t.client, "pool")
    s = p.stats()
    assert s["tasks"] == 100 and s["handoffs"] < 100  # batches were handed out (several runs per message)
    assert s["member_exits"] == 0  # a raising task does not take its member down
    with pytest.raises(TaskFailed, match="boom"):
        p.map("raise", [("boom",)] + [(i,) for i in range(10)])
    assert p.map("echo", [(i,) for i in range(300)]) == list(range(300))


def test_a_member_killed_mid_batch_fails_what_it_had_not_answered_and_nothing_runs_twice(
        start_tree, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    t = start_tree(pool(size=1, max_overflow=0, **ALWAYS))
    trace = tmp_path / "ran"
    msgs: list[object] = [("run", RECORD, (str(trace), i), 5.0) for i in range(20)]
    msgs[10] = ("run", "kill", (), 5.0)
    got = t.client.call_many("pool", msgs, return_exceptions=True, timeout=60.0)
    ran = [int(line) for line in trace.read_text().split()]
    assert len(ran) == len(set(ran))  # no run twice
    assert _error_type(got[10]) == "MemberExited"
    for i, answer in enumerate(got):
        if isinstance(answer, CallError):
            assert _error_type(answer) == "MemberExited", answer  # its member died before answering it
        else:
            assert answer == i and i in ran
    assert all(i < 10 for i in ran)  # the runs after the kill ran nowhere (not rescheduled, not lost silently)
    p = PoolClient(t.client, "pool")
    wait_for(lambda: p.stats()["idle"] == 1, 20, "the killed member to be back")
    assert p.stats()["member_exits"] == 1
    assert p.map(RECORD, [(str(trace), i) for i in range(100, 150)]) == list(range(100, 150))
    again = [int(line) for line in trace.read_text().split()]
    assert sorted(i for i in again if i >= 100) == list(range(100, 150))  # each once


def test_a_run_that_waits_in_a_batch_past_its_deadline_is_pool_timeout_not_run(start_tree) -> None:  # type: ignore[no-untyped-def]
    t = start_tree(pool(size=1, max_overflow=0, **ALWAYS))
    msgs: list[object] = [("run", "sleep", (0.5,), 0.2), ("run", "echo", ("late",), 0.2), ("run", "echo", ("too",), 0.2)]
    got = t.client.call_many("pool", msgs, return_exceptions=True)
    assert got[0] == 0.5
    assert [_error_type(a) for a in got[1:]] == ["PoolTimeout", "PoolTimeout"]
    assert "no member free in time" in str(got[1])
    p = PoolClient(t.client, "pool")
    with pytest.raises(PoolTimeout):
        p.map("sleep", [(0.5,), (0.0,)], timeout=0.2)


def test_one_run_per_member_when_batch_is_1(start_tree) -> None:  # type: ignore[no-untyped-def]
    t = start_tree(pool(size=2, max_overflow=0, batch=1, **ALWAYS))
    p = PoolClient(t.client, "pool")
    assert p.map("echo", [(i,) for i in range(50)]) == list(range(50))
    s = p.stats()
    assert (s["tasks"], s["handoffs"]) == (50, 50)
