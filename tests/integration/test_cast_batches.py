"""Casts that queue up leave as batch frames (wire/coalesce.py): what a user can rely on.

Order per pair survives batching, calls interleaved included, for plain and asyncio
workers; a malformed batch is counted and dropped and the worker keeps serving; a
mailbox_limit counts the casts inside a batch.  Real nodes, real sockets.
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import pytest
import zmq
from nodes import Tree, started, wait_for, write_config

from supervisor_tree.wire import auth, frames
from supervisor_tree.wire.channel import ReplySender, make_socket
from supervisor_tree.worker.mailbox import Backlog

pytestmark = pytest.mark.timeout(120)

LOG, AIO_LOG = "tests.integration.cast_workers:Log", "tests.integration.cast_workers:AioLog"
TREE = f"""
[tree]
strategy = "one_for_one"

[[tree.children]]
id = "log"
start = "{LOG}"

[[tree.children]]
id = "alog"
start = "{AIO_LOG}"

[[tree.children]]
id = "bounded"
start = "{LOG}"
mailbox_limit = 10
mailbox_overflow = "drop_oldest"
"""


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    t = started(write_config(tmp_path_factory.mktemp("casts"), TREE))
    yield t
    t.stop()


def send_raw(endpoint: str, *frames_: bytes) -> None:
    """Frames straight to a mailbox, as a sender of our own would write them; returns once they left."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.linger = 5000
    sock.connect(endpoint)
    for frame in frames_:
        sock.send(frame)
    sock.close()
    ctx.term()


def dumps(obj: object) -> bytes:
    return pickle.dumps(obj, frames.PROTOCOL)


@pytest.mark.parametrize("worker", ["log", "alog"])
def test_casts_interleaved_with_calls_keep_their_order_across_batches(tree: Tree, worker: str) -> None:
    c = tree.client
    assert c.call(worker, "log") == []
    before = c.caller.batches_sent
    n = 3000
    for i in range(n):
        c.cast(worker, i)
        if i % 500 == 499:  # a call sees every cast sent before it, batched or not
            assert c.call(worker, "seen") == i + 1
    assert c.call(worker, "log") == list(range(n))
    assert c.caller.batches_sent > before  # the loop's casts did go out in batches


@pytest.mark.parametrize("worker", ["log", "alog"])
def test_a_malformed_batch_is_counted_and_dropped_and_the_worker_keeps_serving(tree: Tree, worker: str) -> None:
    c = tree.client
    target = c.resolve(worker)
    key = auth.key_for(tree.run_dir)
    start = c.call(worker, "seen")
    malformed = c.control_worker(worker, "stats", {})["malformed"]
    says_three = key.seal(b"M" + struct.pack("<II", 3, 5) + dumps("lost"))  # one entry where three are announced
    bad_middle = frames.encode_batch(key, [dumps(("m", 1)), b"\x80\x05not a pickle", dumps(("m", 2))])
    untagged = frames.encode_batch(auth.FrameKey(bytes(32)), [dumps(("forged", 1))])
    send_raw(target.mailbox, says_three, bad_middle, untagged)
    wait_for(lambda: c.control_worker(worker, "stats", {})["malformed"] == malformed + 3, 10, "the worker to count them")
    assert c.call(worker, "log")[start:] == [("m", 1), ("m", 2)]
    assert c.resolve(worker).pid == target.pid  # the same incarnation: nothing crashed


def test_mailbox_limit_counts_the_casts_inside_a_batch(tree: Tree, tmp_path: Path) -> None:
    c = tree.client
    target = c.resolve("bounded")
    marker = tmp_path / "sleeping"
    c.cast("bounded", ("sleep", str(marker), 1.0))
    wait_for(marker.exists, 10, "the worker to be busy")
    key = auth.key_for(tree.run_dir)
    send_raw(target.mailbox, frames.encode_batch(key, [dumps(i) for i in range(25)]))  # 25 casts, limit 10
    stats = wait_for(lambda: (s := c.control_worker("bounded", "stats", {})).get("mailbox_dropped") and s, 10, "the drop")
    assert stats["mailbox_dropped"] == 15  # the oldest 15 casts of the batch, not the batch as one message
    assert c.call("bounded", "log") == list(range(15, 25))


def test_reject_cuts_a_batch_at_the_limit_and_keeps_the_casts_within(tmp_path: Path) -> None:
    key = auth.FrameKey(bytes(range(32)))
    ctx = zmq.Context()
    pull, push = make_socket(ctx, zmq.PULL), make_socket(ctx, zmq.PUSH)
    endpoint = f"ipc://{tmp_path}/mbx"
    try:
        pull.bind(endpoint)
        push.connect(endpoint)
        box = Backlog(pull, ReplySender(ctx), "test#1", key, limit=10, policy="reject")
        push.send(key.seal(b"S" + dumps("first")))
        push.send(frames.encode_batch(key, [dumps(i) for i in range(25)]))
        wait_for(lambda: pull.poll(0) and (box.probe(0.0) or box.msgs == 10), 10, "both frames probed")
        assert (box.depth(), box.rejected) == (10, 16)  # 1 + 25 messages, 10 kept: the newest 16 refused
        got = [box.recv(zmq.NOBLOCK) for _ in range(len(box.pending))]
        assert frames.decode(key, got[0]).payload == "first"  # type: ignore[union-attr]
        assert [pickle.loads(b) for b in frames.split_batch(got[1], key.verify(got[1]))] == list(range(9))
    finally:
        push.close(0)
        pull.close(0)
        ctx.term()


def test_the_tail_of_a_burst_arrives_without_another_send_and_before_a_close(tree: Tree) -> None:
    from supervisor_tree.client import Client

    watcher = tree.client
    start = watcher.call("log", "seen")
    with Client(tree.run_dir) as idle:  # casts, then does nothing with this client: its Flusher sends the tail
        for i in range(1000):
            idle.cast("log", ("idle", i))
        wait_for(lambda: watcher.call("log", "seen") == start + 1000, 10, "the burst's last batch")
    closing = Client(tree.run_dir)
    for i in range(1000):
        closing.cast("log", ("closing", i))
    closing.close()  # right after the burst: what it held leaves first
    wait_for(lambda: watcher.call("log", "seen") == start + 2000, 10, "the batch held at close")
    assert watcher.call("log", "log")[start:] == [("idle", i) for i in range(1000)] + [("closing", i) for i in range(1000)]
