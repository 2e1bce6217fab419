"""The queue end to end: FIFO, backpressure, acknowledgements and redelivery after a consumer dies."""

from __future__ import annotations

import threading
import time

import pytest
from components import start_tree, worker  # noqa: F401 - start_tree is a fixture
from nodes import wait_for

from supervisor_tree.client import Client
from supervisor_tree.workers.queue import QueueClient, QueueFull

pytestmark = pytest.mark.timeout(120)

MOVER = "tests.integration.component_workers:Mover"


def queue(id: str = "jobs", capacity: int = 1000, **args: object) -> str:
    return worker(id, "supervisor_tree.workers.queue:Queue", capacity=capacity, **args)


def test_fifo_order_and_acks(start_tree) -> None:  # type: ignore[no-untyped-def]
    t = start_tree(queue())
    q = QueueClient(t.client, "jobs")
    q.put("a")
    q.put_many(["b", "c", "d"])
    assert q.depth() == 4
    tag, item = q.get()
    assert item == "a"
    tag2, items = q.get_many(10)
    assert items == ["b", "c", "d"]
    assert q.ack([tag, tag2]) == 2
    assert q.ack(tag) == 0  # acked once only
    assert q.get(block=False) is None
    assert q.get_many(5, block=False) == (None, [])
    s = q.stats()
    assert (s["put"], s["delivered"], s["acked"], s["unacked_items"]) == (4, 4, 4, 0)
    # The JSON form from the CLI: a get without a consumer is acknowledged on delivery.
    assert t.cli("call", "jobs", '{"op": "put", "item": "z"}').returncode == 0
    out = t.cli("call", "jobs", '{"op": "get"}', "--json")
    assert out.returncode == 0 and '"z"' in out.stdout, out.stderr
    assert q.stats()["unacked_deliveries"] == 0


def test_full_queue_refuses_or_blocks_until_a_get(start_tree) -> None:  # type: ignore[no-untyped-def]
    t = start_tree(queue(capacity=3))
    q = QueueClient(t.client, "jobs")
    q.put_many([1, 2, 3])
    with pytest.raises(QueueFull, match="full: 3 of 3"):
        q.put(4, block=False)
    t0 = time.monotonic()
    with pytest.raises(QueueFull, match="took 0 of 1"):
        q.put(4, timeout=0.3)
    assert time.monotonic() - t0 >= 0.25  # it waited for room before giving up

    done = threading.Event()
    answer: list[object] = []

    def producer() -> None:
        with Client(t.run_dir, timeout=10.0) as c:
            answer.append(QueueClient(c, "jobs").put_many([4, 5], timeout=10.0))
        done.set()

    thread = threading.Thread(target=producer)
    thread.start()
    wait_for(lambda: q.stats()["waiting_producers"] == 1, 10, "the producer to wait for room")
    assert not done.is_set()
    tag, items = q.get_many(2)
    assert items == [1, 2]
    assert done.wait(10), "the blocked put did not complete after the get made room"
    thread.join()
    assert answer == [3]  # depth after its put
    _, rest = q.get_many(10)
    assert rest == [3, 4, 5]
    assert q.high_water() == 3


def test_blocked_get_completes_when_an_item_arrives(start_tree) -> None:  # type: ignore[no-untyped-def]
    t = start_tree(queue())
    got: list[object] = []

    def consumer() -> None:
        with Client(t.run_dir, timeout=10.0) as c:
            got.append(QueueClient(c, "jobs").get(timeout=10.0))

    thread = threading.Thread(target=consumer)
    thread.start()
    q = QueueClient(t.client, "jobs")
    wait_for(lambda: q.stats()["waiting_consumers"] == 1, 10, "the consumer to wait")
    q.put("late")
    thread.join(10)
    assert got and got[0][1] == "late"
    t0 = time.monotonic()
    assert q.get(timeout=0.2) is None  # an empty answer after the timeout, not an error
    assert time.monotonic() - t0 >= 0.15


def test_items_of_a_killed_consumer_are_redelivered_at_the_head(start_tree) -> None:  # type: ignore[no-untyped-def]
    t = start_tree(queue(), queue("done"), worker("mover", MOVER, restart="temporary", running=False))
    q = QueueClient(t.client, "jobs")
    q.put_many(list(range(10)))
    held = t.client.call("mover", {"cmd": "hold", "n": 4})
    assert held["items"] == [0, 1, 2, 3]
    assert q.stats()["unacked_items"] == 4
    t.client.kill("mover")
    wait_for(lambda: q.stats()["redelivered"] == 4, 10, "the dead consumer's items to come back")
    tag, items = q.get_many(100)
    assert items == list(range(10))  # the redelivered ones first, in their order
    q.ack(tag)
    assert q.stats()["acked"] == 10


def test_nothing_lost_or_duplicated_when_a_consumer_dies_mid_run(start_tree) -> None:  # type: ignore[no-untyped-def]
    t = start_tree(queue(capacity=50), queue("done", capacity=100_000),
                   worker("m1", MOVER, batch=7), worker("m2", MOVER, batch=5))
    q = QueueClient(t.client, "jobs")
    n = 3000
    errors: list[BaseException] = []

    def producer() -> None:  # through backpressure: capacity 50
        try:
            with Client(t.run_dir, timeout=10.0) as c:
                p = QueueClient(c, "jobs")
                for start in range(0, n, 20):
                    p.put_many(list(range(start, start + 20)), timeout=30.0)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    thread = threading.Thread(target=producer)
    thread.start()
    held = t.client.call("m1", {"cmd": "hold", "n": 6})
    assert len(held["items"]) == 6
    wait_for(lambda: q.stats()["acked"] >= n // 3, 60, "a third of the run")
    t.client.kill("m1")  # dies holding 6 unacknowledged items, mid-run; its supervisor restarts it
    t.wait_started("m1", 2)
    thread.join(60)
    assert not errors, errors
    wait_for(lambda: q.stats()["acked"] == n, 60, "every item to be moved and acknowledged")
    _, moved = QueueClient(t.client, "done").get_many(n + 100, block=False)
    assert sorted(moved) == list(range(n)), "an item was lost or duplicated"
    s = q.stats()
    assert s["redelivered"] >= 6 and s["depth"] == 0 and s["unacked_items"] == 0
    assert q.high_water() <= 50 + 6  # capacity, plus what came back at the head
