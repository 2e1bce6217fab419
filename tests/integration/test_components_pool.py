"""The pool end to end: tasks on members, overflow, exhaustion, reaping, and a member that dies mid-task."""

from __future__ import annotations

import threading
import time

import psutil
import pytest
from components import pool, start_tree  # noqa: F401 - start_tree is a fixture
from nodes import wait_for

from supervisor_tree.client import Client
from supervisor_tree.workers.pool import MemberExited, PoolClient, PoolTimeout, TaskFailed

pytestmark = pytest.mark.timeout(120)


def test_run_tasks_on_members(start_tree) -> None:  # type: ignore[no-untyped-def]
    t = start_tree(pool(size=2, max_overflow=1))
    p = PoolClient(t.client, "pool")
    assert p.run("echo", 42) == 42
    assert p.run_many("echo", [(i,) for i in range(500)], chunk=100) == list(range(500))
    assert p.run("os.path:join", "a", "b") == "a/b"
    pid = p.run("pid")
    assert pid in {c["pid"] for c in t.client.which_children("pool_members")}
    with pytest.raises(TaskFailed, match="RuntimeError: no"):
        p.run("raise", "no")
    with pytest.raises(TaskFailed, match="unknown task"):
        p.run("nonesuch")
    assert p.stats()["member_exits"] == 0  # a failing task does not take its member down
    wait_for(lambda: p.stats()["idle"] == p.stats()["members"], 10, "every member to be free again")
    out = t.cli("call", "pool", '{"op": "run", "task": "echo", "args": ["cli"]}', "--json")
    assert out.returncode == 0 and out.stdout.strip() == '"cli"', out.stderr


def test_checkout_beyond_size_uses_overflow_then_waits_and_times_out(start_tree) -> None:  # type: ignore[no-untyped-def]
    t = start_tree(pool(size=2, max_overflow=1, overflow_ttl=0.3))
    p = PoolClient(t.client, "pool")
    leases = [p.checkout(timeout=1.0) for _ in range(3)]
    assert len({lease["member"] for lease in leases}) == 3
    s = p.stats()
    assert (s["checked_out"], s["overflow"], s["idle"]) == (3, 1, 0)
    assert t.client.call(leases[2]["member"], ("run", "echo", [7])) == 7  # a checked-out member is called directly
    t0 = time.monotonic()
    with pytest.raises(PoolTimeout, match="no member free"):
        p.checkout(timeout=0.3)
    assert time.monotonic() - t0 >= 0.25  # it waited before giving up

    got: list[dict[str, object]] = []

    def waiter() -> None:
        with Client(t.run_dir, timeout=10.0) as c:
            got.append(PoolClient(c, "pool").checkout(timeout=10.0))

    thread = threading.Thread(target=waiter)
    thread.start()
    wait_for(lambda: p.stats()["waiting"] == 1, 10, "the checkout to wait")
    p.checkin(leases[0])
    thread.join(10)
    assert got and got[0]["member"] == leases[0]["member"]
    # The waiter's process (this one) is alive: its lease stays until checked in.
    for lease in (got[0], leases[1], leases[2]):
        assert p.checkin(lease) is True
    assert p.checkin(leases[2]) is False


def test_idle_overflow_members_are_reaped(start_tree) -> None:  # type: ignore[no-untyped-def]
    t = start_tree(pool(size=2, max_overflow=2, overflow_ttl=0.2))
    p = PoolClient(t.client, "pool")
    leases = [p.checkout() for _ in range(4)]
    assert p.stats()["overflow"] == 2
    assert t.client.count_children("pool_members")["active"] == 4
    for lease in leases:
        p.checkin(lease)
    wait_for(lambda: p.stats()["overflow"] == 0, 10, "the idle overflow members to be reaped")
    s = p.stats()
    assert (s["members"], s["idle"], s["reaped"]) == (2, 2, 2)
    wait_for(lambda: t.client.count_children("pool_members")["active"] == 2, 10, "the reaped members to stop")


def test_a_task_that_kills_its_member_fails_its_caller_and_the_pool_heals(start_tree) -> None:  # type: ignore[no-untyped-def]
    t = start_tree(pool(size=2, max_overflow=0))
    p = PoolClient(t.client, "pool")
    t0 = time.monotonic()
    with pytest.raises(MemberExited, match="exited while running task 'kill'"):
        p.run("kill")
    assert time.monotonic() - t0 < 5  # an error at once, never a hang
    with pytest.raises(MemberExited, match="'exit'"):
        p.run("exit", 3)
    wait_for(lambda: p.stats()["idle"] == 2, 10, "the pool to recover to full size")
    assert p.stats()["member_exits"] == 2
    assert p.run_many("echo", [(i,) for i in range(10)]) == list(range(10))
    generations = sorted(c["generation"] for c in t.client.which_children("pool_members"))
    assert generations[-1] >= 2  # a restarted member serves again


def test_the_example_tree_runs_every_component() -> None:
    from nodes import REPO, Tree

    t = Tree(REPO / "examples" / "pool.toml")
    try:
        result = t.start()
        assert result.returncode == 0, result.stderr
        for worker, message, expected in [
            ("pool", '{"op": "run", "task": "echo", "args": ["hi"]}', '"hi"'),
            ("queue", '{"op": "depth"}', "0"),
            ("sessions", '{"op": "count"}', "0"),
            ("registry", '{"op": "list"}', "{}"),
        ]:
            out = t.cli("call", worker, message, "--json")
            assert out.returncode == 0 and out.stdout.strip() == expected, (worker, out.stdout, out.stderr)
        assert PoolClient(t.client, "pool").stats()["idle"] == 10
    finally:
        t.stop()


def _tree_processes(t) -> set[int]:  # type: ignore[no-untyped-def]
    """Every process of the node: the node, its fork server, the standbys and the workers."""
    node = psutil.Process(t.node_pid())
    return {node.pid} | {p.pid for p in node.children(recursive=True)}


@pytest.mark.parametrize("how", ["terminate", "kill"])
def test_restarting_the_manager_alone_keeps_exactly_size_members(start_tree, how: str) -> None:  # type: ignore[no-untyped-def]
    t = start_tree(pool(size=3, max_overflow=2))
    p = PoolClient(t.client, "pool")
    assert p.run("echo", 1) == 1
    members = {c["pid"] for c in t.client.which_children("pool_members")}
    assert len(members) == 3
    before = _tree_processes(t)
    for round_ in range(2):
        manager = t.pid_of("pool")
        if how == "terminate":  # as `supervise terminate pool` then `supervise restart pool`
            for args in (("terminate", "pool"), ("restart", "pool")):
                out = t.cli(*args)
                assert out.returncode == 0, out.stderr
        else:  # the manager dies alone; pool_sup (one_for_all) restarts the members too
            t.client.kill("pool")
        wait_for(lambda: t.client.resolve("pool").pid != manager, 20, f"a new manager (round {round_})")  # noqa: B023
        assert p.run("echo", 2) == 2
        s = p.stats()
        assert (s["members"], s["idle"]) == (3, 3), s
        assert t.client.count_children("pool_members")["active"] == 3
    # The same number of processes as before: no member left behind by a manager that went away.
    wait_for(lambda: len(_tree_processes(t)) == len(before), 20,
             f"the tree to hold {len(before)} processes again (now {len(_tree_processes(t))})")
