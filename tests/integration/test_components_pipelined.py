"""The components' typed clients on the pipelined path: many requests in flight, typed answers and refusals."""

from __future__ import annotations

import pytest
from components import pool, start_tree, worker  # noqa: F401 - start_tree is a fixture

from supervisor_tree.workers.pool import PoolClient, TaskFailed
from supervisor_tree.workers.queue import QueueClient, QueueFull
from supervisor_tree.workers.registry import Names
from supervisor_tree.workers.session import BadRequest, SessionClient

pytestmark = pytest.mark.timeout(120)


def test_typed_clients_pipeline_their_requests(start_tree) -> None:  # type: ignore[no-untyped-def]
    t = start_tree(
        worker("jobs", "supervisor_tree.workers.queue:Queue", capacity=300),
        worker("sessions", "supervisor_tree.workers.session:Session"),
        worker("registry", "supervisor_tree.workers.registry:Registry"),
        worker("w1", "tests.integration.component_workers:Named", name="alpha"),
        pool(size=2, max_overflow=0),
    )
    q = QueueClient(t.client, "jobs", auto_ack=True)
    assert q.put_each(list(range(250))) == list(range(1, 251))  # the depth after each put, in order
    assert q.put_async("one more").result(timeout=30) == 251
    got = q.get_each(251)
    assert [item for _, item in got] == [*range(250), "one more"]
    assert q.get_async(block=False).result(timeout=30) is None  # empty: nothing to deliver
    with pytest.raises(QueueFull):
        q.put_each(list(range(301)), block=False)  # the 301st is refused, typed as the one-call put is
    with pytest.raises(QueueFull):
        q.put_async("full", block=False).result(timeout=30)

    s = SessionClient(t.client, "sessions")
    ids = s.each([("create", {"n": i}) for i in range(100)])
    assert len(set(ids)) == 100
    assert s.each([("get", sid) for sid in ids]) == [{"n": i} for i in range(100)]
    assert s.get_async(ids[7]).result(timeout=30) == {"n": 7}
    with pytest.raises(BadRequest):
        s.each([("get", ids[0]), ("bogus",)])

    p = PoolClient(t.client, "pool")
    assert p.map("echo", [(i,) for i in range(200)]) == list(range(200))
    assert p.run_async("echo", "x").result(timeout=30) == "x"
    with pytest.raises(TaskFailed, match="RuntimeError: no"):
        p.map("raise", [("no",)])

    names = Names(t.client)
    assert names.call_many("alpha", ["info"] * 3)[0]["id"] == "w1"
    assert names.call_async("alpha", "info").result(timeout=30)["id"] == "w1"
