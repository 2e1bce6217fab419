"""asyncio workers, end to end: `async def` callbacks on an event loop in the worker's process.

Real nodes started with the CLI; calls from `AsyncClient` (many at once) and `Client`.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from nodes import Tree, wait_for

from supervisor_tree.client import CalleeExited, CallError
from supervisor_tree.client.aio import AsyncClient

pytestmark = pytest.mark.timeout(120)

SLEEPER = "tests.integration.aio_workers:Sleeper"
ECHO = "tests.integration.aio_workers:Echo"


def tree_toml(*children: str, strategy: str = "one_for_one") -> str:
    head = ('[node]\nheartbeat = { interval = 0.2, misses = 5 }\n\n'
            f'[tree]\nstrategy = "{strategy}"\nintensity = 10\nperiod = 10\n\n')
    return head + "\n\n".join(children) + "\n"


def child(id: str, start: str, shutdown: int = 5000, extra: str = "", **args: Any) -> str:
    lines = ["[[tree.children]]", f'id = "{id}"', f'start = "{start}"', f"shutdown = {shutdown}"]
    if args:
        lines.append("args = { " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in args.items()) + " }")
    return "\n".join(lines + ([extra] if extra else []))


def gather_calls(run_dir: Path, worker: str, msgs: list[object], timeout: float = 60.0) -> list[object]:
    """Send every message at once; each result, or the exception it raised."""

    async def main() -> list[object]:
        async with AsyncClient(run_dir, timeout=timeout) as c:
            return await asyncio.gather(*(c.call(worker, m) for m in msgs), return_exceptions=True)

    return asyncio.run(main())


def test_100_calls_that_each_await_run_at_once(start_tree) -> None:  # type: ignore[no-untyped-def]
    t = start_tree(tree_toml(child("sleepy", SLEEPER, delay=0.2)))
    began = time.monotonic()
    results = gather_calls(t.run_dir, "sleepy", [["sleep", i] for i in range(100)])
    elapsed = time.monotonic() - began
    assert results == list(range(100))
    assert t.client.call("sleepy", "figures")["most_in_flight"] == 100  # all 100 were awaiting together
    assert elapsed < 100 * 0.2 / 2, f"100 calls of 0.2 s took {elapsed:.1f} s: they did not run concurrently"


def test_max_concurrency_bounds_the_calls_in_flight(start_tree) -> None:  # type: ignore[no-untyped-def]
    t = start_tree(tree_toml(child("sleepy", SLEEPER, extra="max_concurrency = 3", delay=0.05)))
    assert gather_calls(t.run_dir, "sleepy", [["sleep", i] for i in range(20)]) == list(range(20))
    assert t.client.call("sleepy", "figures")["most_in_flight"] == 3


def test_pipelined_calls_sent_in_one_frame_still_respect_max_concurrency(start_tree) -> None:  # type: ignore[no-untyped-def]
    t = start_tree(tree_toml(child("sleepy", SLEEPER, extra="max_concurrency = 3", delay=0.02)))
    assert t.client.call_many("sleepy", [["sleep", i] for i in range(40)], window=40) == list(range(40))
    assert t.client.call("sleepy", "figures")["most_in_flight"] == 3


def test_a_raising_handler_answers_the_error_and_the_worker_restarts(start_tree) -> None:  # type: ignore[no-untyped-def]
    t = start_tree(tree_toml(child("sleepy", SLEEPER)))
    with pytest.raises(CallError, match="ValueError: boom from an async handler"):
        t.client.call("sleepy", "boom")
    exited = t.wait_event(lambda e: e["event"] == "exited" and e["child"] == "sleepy", what="sleepy's exit")
    assert exited["reason"] == "{error,ValueError: boom from an async handler}"
    assert any("ValueError: boom from an async handler" in line for line in exited["detail"]["tail"])
    t.wait_started("sleepy", 2)
    assert t.client.call("sleepy", ["await", 0.01]) == "awaited"


def test_casts_keep_their_order_and_calls_reach_other_workers(start_tree) -> None:  # type: ignore[no-untyped-def]
    t = start_tree(tree_toml(child("sleepy", SLEEPER), child("echo", ECHO)))
    for i in range(50):
        t.client.cast("sleepy", i)
    assert wait_for(lambda: len(t.client.call("sleepy", "order")) == 50, what="50 casts handled")
    assert t.client.call("sleepy", "order") == list(range(50))
    assert t.client.call("sleepy", ["ask", "echo", "hi"]) == ["echo", "hi"]
    assert t.client.call("sleepy", ["tell", "echo", "cast from a loop"]) == "told"
    assert wait_for(lambda: t.client.call("echo", "casts"), what="echo got the cast") == ["cast from a loop"]


def test_heartbeats_flow_while_handlers_await_and_a_blocked_loop_is_hung(start_tree) -> None:  # type: ignore[no-untyped-def]
    t = start_tree(tree_toml(child("sleepy", SLEEPER)))  # heartbeat deadline: 5 x 0.2 s = 1 s
    assert t.client.call("sleepy", ["await", 2.0]) == "awaited"
    assert not [e for e in t.events() if e["event"] == "hung"]
    with pytest.raises(CalleeExited):  # the node kills it mid-call
        t.client.call("sleepy", ["block", 30.0], timeout=20)
    hung = t.wait_event(lambda e: e["event"] == "hung" and e["child"] == "sleepy", what="sleepy reported hung")
    assert "no heartbeat" in hung["reason"]
    t.wait_started("sleepy", 2)


def _calls_in_background(t: Tree, n: int) -> tuple[threading.Thread, list[object]]:
    results: list[object] = []
    thread = threading.Thread(target=lambda: results.extend(gather_calls(t.run_dir, "sleepy", [["sleep", i] for i in range(n)])))
    thread.start()
    wait_for(lambda: t.client.call("sleepy", "figures")["in_flight"] == n, what=f"{n} calls in flight")
    return thread, results


def test_a_stop_cancels_the_calls_in_flight(start_tree) -> None:  # type: ignore[no-untyped-def]
    t = start_tree(tree_toml(child("sleepy", SLEEPER, delay=30.0)))
    thread, results = _calls_in_background(t, 5)
    assert t.client.terminate_child("sleepy")["ok"]
    thread.join(30)
    assert len(results) == 5 and all(isinstance(r, CallError) and "Cancelled" in str(r) for r in results), results
    exited = t.wait_event(lambda e: e["event"] == "exited" and e["child"] == "sleepy", what="sleepy's exit")
    assert exited["reason"] == "shutdown"
    log = (t.run_dir / "logs" / "sleepy.log").read_text()
    assert "terminate: shutdown; finished 0, in flight 0" in log


def test_with_trap_exits_a_stop_lets_the_calls_in_flight_finish(start_tree) -> None:  # type: ignore[no-untyped-def]
    t = start_tree(tree_toml(child("sleepy", SLEEPER, delay=1.0, trap=True)))
    thread, results = _calls_in_background(t, 5)
    assert t.client.terminate_child("sleepy")["ok"]
    thread.join(30)
    assert results == list(range(5))
    exited = t.wait_event(lambda e: e["event"] == "exited" and e["child"] == "sleepy", what="sleepy's exit")
    assert exited["reason"] == "shutdown"
    assert "terminate: shutdown; finished 5, in flight 0" in (t.run_dir / "logs" / "sleepy.log").read_text()


def test_stop_from_a_cast_ends_the_worker_with_its_reason(start_tree) -> None:  # type: ignore[no-untyped-def]
    t = start_tree(tree_toml(child("sleepy", SLEEPER, extra='restart = "transient"')))
    t.client.cast("sleepy", "stop")
    exited = t.wait_event(lambda e: e["event"] == "exited" and e["child"] == "sleepy", what="sleepy's exit")
    assert exited["reason"] == "normal" and "detail" not in exited  # a normal exit needs no stderr tail
    assert t.children() == ["sleepy=not_running"]
