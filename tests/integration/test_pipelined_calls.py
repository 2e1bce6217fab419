"""Many calls in flight from one client: `Client.call_many`, `Client.call_async` and `supervisor_tree.aio.Client`.

A real node with puppet workers; replies matched by ref over the client's one reply
socket; a worker killed with calls in flight fails exactly the calls it owed; frames
that are not replies reach the client's reply sockets and change nothing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
from pathlib import Path

import pytest
import zmq
from nodes import Tree, started, wait_for, write_config

from supervisor_tree.aio import Client as AioClient
from supervisor_tree.client import CalleeExited, CallError, CallTimeout, Client
from supervisor_tree.wire import frames

pytestmark = pytest.mark.timeout(120)

CONFIG = """
[node]
name = "pipelined"
preload = ["supervisor_tree.workers.puppet"]

[tree]
intensity = 100
period = 1

[[tree.children]]
id = "p"
start = "supervisor_tree.workers.puppet:Puppet"
shutdown = "brutal_kill"

[[tree.children]]
id = "q"
start = "supervisor_tree.workers.puppet:Puppet"
shutdown = "brutal_kill"
"""


def echo(value: object) -> dict[str, object]:
    return {"cmd": "echo", "value": value}


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    t = started(write_config(tmp_path_factory.mktemp("pipelined"), CONFIG))
    yield t
    t.stop()


def hold(c: Client, worker: str, mark: Path) -> concurrent.futures.Future[object]:
    """A call that keeps `worker` busy (sleeping 60 s) once `mark` exists: what is sent after it waits in the mailbox."""
    fut = c.call_async(worker, {"cmd": "sleep", "seconds": 60, "mark": str(mark)}, timeout=90)
    wait_for(mark.exists, what=f"{worker} to start the long call")
    return fut


def test_200_calls_in_flight_are_answered_in_the_order_of_their_ids(tree: Tree) -> None:
    with Client(tree.run_dir) as c:
        assert c.call_many("p", [echo(i) for i in range(200)], window=200) == list(range(200))
        futures = [c.call_async("p", echo(i)) for i in range(200)]
        assert [f.result(timeout=30) for f in futures] == list(range(200))
        assert c.call_many("q", (echo(i) for i in range(1000)), window=7) == list(range(1000))  # more than the window
        assert c.call("p", echo("after")) == "after"  # the sync path shares the sockets: still in step


def test_a_killed_worker_fails_exactly_the_futures_it_owed(tree: Tree, tmp_path: Path) -> None:
    with Client(tree.run_dir) as c:
        generation = c.resolve("p").generation
        held = hold(c, "p", tmp_path / "p-busy")
        owed = [c.call_async("p", echo(i), timeout=60) for i in range(50)]
        others = [c.call_async("q", echo(i), timeout=60) for i in range(50)]
        c.kill("p")
        done, _ = concurrent.futures.wait([held, *owed, *others], timeout=30)
        assert len(done) == 101
        for fut in [held, *owed]:
            exc = fut.exception()
            assert isinstance(exc, CalleeExited), exc
            assert (exc.worker_id, exc.generation) == ("p", generation)
            assert "killed" in str(exc.reason)
        assert [f.result() for f in others] == list(range(50))
        assert c.call_async("p", echo("next")).result(timeout=30) == "next"  # sent to the next incarnation


def test_call_many_fails_what_the_dead_incarnation_owed_and_sends_the_rest_to_the_next(tree: Tree) -> None:
    with Client(tree.run_dir) as c:
        msgs: list[object] = [echo(i) for i in range(40)]
        msgs[3] = {"cmd": "raise", "message": "poisoned"}  # the handler raises: the worker answers, then dies
        results = c.call_many("q", msgs, window=5, return_exceptions=True)
        assert results[:3] == [0, 1, 2]
        assert isinstance(results[3], CallError) and "poisoned" in str(results[3])
        assert all(r == i or isinstance(r, CalleeExited) for i, r in enumerate(results) if i > 3), [(i, repr(r)) for i, r in enumerate(results) if i > 3 and not (r == i or isinstance(r, CalleeExited))]
        assert any(isinstance(r, CalleeExited) for r in results), results
        assert results[-1] == 39  # not sent to the dead one: answered by its successor
        with pytest.raises(CallError, match="poisoned"):  # without return_exceptions: the first failure
            c.call_many("q", msgs[:5])


def test_each_call_has_its_own_timeout(tree: Tree, tmp_path: Path) -> None:
    with Client(tree.run_dir) as c:
        held = hold(c, "p", tmp_path / "p-held")
        late = c.call_async("p", echo("late"), timeout=0.3)
        with pytest.raises(CallTimeout):
            late.result(timeout=30)
        results = c.call_many("p", [echo(1), echo(2)], timeout=0.3, return_exceptions=True)
        assert all(isinstance(r, CallTimeout) for r in results)
        assert c.call_many("q", [echo(1), echo(2)], timeout=5) == [1, 2]  # the client goes on
        c.kill("p")
        assert isinstance(held.exception(timeout=30), CalleeExited)


def test_frames_that_are_not_replies_do_not_break_the_client(tree: Tree) -> None:
    with Client(tree.run_dir) as c:
        assert c.call_async("p", echo(0)).result(timeout=30) == 0
        inflight = c._inflight
        assert inflight is not None
        key = c.key
        junk = [
            b"not a frame at all",  # no tag: never read
            os.urandom(40),
            key.seal(b"B" + b"\x80\x05not a pickle"),  # authentic, but its list does not unpickle
            key.seal(b"R" + b"\x01"),  # a reply with a truncated header
            key.seal(b"Q" + b"unknown kind"),
            frames.encode_reply(key, 987_654, True, "nobody asked"),  # a reply to no call of ours
            frames.encode_replies(key, [(987_655, True, "nor this")]),
        ]
        ctx = zmq.Context()  # its own, terminated: a context left alive would refuse later in-process launchers
        try:
            for address in (c.sender.reply_to, inflight.reply_to):
                push = ctx.socket(zmq.PUSH)
                push.linger = 1000
                push.connect(address)
                for frame in junk:
                    push.send(frame)
                push.close()
        finally:
            ctx.term()
        wait_for(lambda: inflight.discarded >= 2, what="the reader thread to read the junk")
        assert c.call_many("p", [echo(i) for i in range(100)]) == list(range(100))
        assert [f.result(timeout=30) for f in [c.call_async("p", echo(i)) for i in range(100)]] == list(range(100))
        assert c.call("p", echo("sync")) == "sync"
        assert c.sender.dropped.total == 10  # 5 frames not acted on, at each of the two reply sockets
        assert c.sender.discarded >= 2


def test_the_asyncio_client_from_an_asyncio_program(tree: Tree, tmp_path: Path) -> None:
    async def main() -> None:
        async with AioClient(tree.run_dir, timeout=30) as c:
            assert await c.call("p", echo(1)) == 1
            assert await c.call_many("p", [echo(i) for i in range(300)], window=50) == list(range(300))
            tasks = [c.call_async("q", echo(i)) for i in range(100)]
            assert await asyncio.gather(*tasks) == list(range(100))
            assert {w["id"] for w in await c.which_children()} == {"p", "q"}
            generation = (await c.resolve("p")).generation
            mark = tmp_path / "aio-busy"
            busy = c.call_async("p", {"cmd": "sleep", "seconds": 60, "mark": str(mark)}, timeout=90)
            await asyncio.get_running_loop().run_in_executor(None, lambda: wait_for(mark.exists, what="p busy"))
            owed = c.call_async("p", echo("owed"), timeout=60)
            await c.kill("p")
            for task in (busy, owed):
                with pytest.raises(CalleeExited) as exc:
                    await task
                assert exc.value.generation == generation
            assert await c.call("p", echo("again")) == "again"

    asyncio.run(main())


def test_the_asyncio_call_many_fails_what_the_dead_incarnation_owed_and_sends_the_rest_to_the_next(tree: Tree) -> None:
    async def main() -> list[object]:
        async with AioClient(tree.run_dir, timeout=30) as c:
            msgs: list[object] = [echo(i) for i in range(40)]
            msgs[3] = {"cmd": "raise", "message": "poisoned"}  # the handler raises: the worker answers, then dies
            return await c.call_many("q", msgs, window=5, return_exceptions=True)

    results = asyncio.run(main())
    assert results[:3] == [0, 1, 2]
    assert isinstance(results[3], CallError) and "poisoned" in str(results[3])
    unexpected = [(i, r) for i, r in enumerate(results) if i > 3 and not (r == i or isinstance(r, CalleeExited))]
    assert not unexpected  # each call either answered or failed as owed by the dead incarnation: none timed out
    assert results[-1] == 39
