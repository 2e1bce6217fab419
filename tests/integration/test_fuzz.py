"""Fuzzed decoders: random and near-valid frames on every socket of a running tree and on the fork-server pipe.

Hypothesis draws frames of every kind a receiver could meet (random bytes, empty, huge,
tagged with another run's key, tagged with the run's own key around a body of the
wrong arity, the wrong types, or a pickle of an unexpected shape) and sends them
straight to the socket.  After each frame the receiver must still answer: the node its
control requests, the worker a call, the client its next reply (the fork-server pipe:
test_fuzz_pipe.py).  Frames tagged with the run's own key are limited to ones the receiver must
refuse (a well-formed `stop` would be obeyed, as it should be).  Bounded: a few dozen
examples per socket, the whole module in well under a minute.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
from collections.abc import Iterator

import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nodes import Tree, started, wait_for, write_config

from supervisor_tree.wire import auth
from supervisor_tree.wire.requests import decode_answer

pytestmark = pytest.mark.timeout(120)

FUZZ = settings(max_examples=60, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
HUGE = os.urandom(1 << 20)

# -- what the frames are made of ----------------------------------------------------

atoms = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=12) \
    | st.binary(max_size=12)
objects = st.recursive(atoms, lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
                       | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)
raw_bytes = st.binary(max_size=200) | st.sampled_from([b"", b"\x00", HUGE, b"\x80\x05" + HUGE[:1000]])
seals = st.sampled_from(["none", "other key", "run key"])
OTHER = auth.FrameKey(bytes(range(32)))


def sealed(how: str, key: auth.FrameKey, body: bytes) -> bytes:
    return body if how == "none" else (OTHER if how == "other key" else key).seal(body)


def harmless(obj: object) -> bool:
    """Not a command a worker obeys (a cast {"cmd": "exit"} stops the puppet, "stop" the asyncio one, as asked)."""
    return not (isinstance(obj, dict) and "cmd" in obj) and obj != "stop"


# -- a running tree, shared by the module's tests ---------------------------------------


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tree]:
    config = write_config(tmp_path_factory.mktemp("fuzz"), '[node]\nheartbeat = { interval = 0.2, misses = 10 }\n'
                          '[tree]\n[[tree.children]]\nid = "p"\nstart = "supervisor_tree.workers.puppet:Puppet"\n'
                          '[[tree.children]]\nid = "a"\nstart = "tests.integration.aio_workers:Sleeper"\n')  # asyncio
    t = started(config)
    yield t
    t.stop()


@pytest.fixture(scope="module")
def push() -> Iterator[zmq.Context]:
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def send(ctx: zmq.Context, endpoint: str, frame: bytes) -> None:
    sock = ctx.socket(zmq.PUSH)
    sock.linger = 5000
    sock.connect(endpoint)
    sock.send(frame)
    sock.close()


def alive(t: Tree) -> None:
    assert t.client.call("p", {"cmd": "echo", "value": 7}, timeout=10) == 7
    assert isinstance(t.client.call("a", "figures", timeout=10), dict)
    assert t.client.resolve("p").generation == 1 and t.client.resolve("a").generation == 1, "a worker restarted"


# -- the node's control socket (ROUTER, JSON) -----------------------------------------

SAFE_OPS = ["ping", "status", "which_children", "count_children", "resolve", "last_exit", "wait_started", "nope", ""]
control_bodies = (
    raw_bytes.map(lambda b: ("raw", b))
    | objects.map(lambda o: ("pickle", pickle.dumps(o)))
    | st.lists(objects, max_size=5).map(lambda items: ("json", items))
    | st.tuples(st.integers(), st.sampled_from(SAFE_OPS), st.dictionaries(st.text(max_size=8), objects, max_size=3))
        .map(lambda r: ("request", r))
)


@FUZZ
@given(body=control_bodies, how=seals)
def test_fuzz_node_control(tree: Tree, push: zmq.Context, body: tuple[str, object], how: str) -> None:
    key = tree.client.key
    kind, value = body
    if kind == "json":
        data = _json_bytes(value)
    elif kind == "request":  # well-formed, with an op that must not change the tree, and arguments of any type
        data = _json_bytes(value)
    else:
        data = value  # type: ignore[assignment]
    sock = push.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(f"ipc://{tree.run_dir}/control")
    try:
        sock.send(sealed(how, key, data))
        assert sock.poll(10_000), "the node did not answer"
        answer = decode_answer(key, sock.recv())  # every request is answered, with the run's tag
        if how != "run key":
            assert not answer.ok and "unauthenticated" in str(answer.value)
    finally:
        sock.close()
    assert tree.client.control("ping")["pid"] == tree.node_pid()


def _json_bytes(obj: object) -> bytes:
    return json.dumps(obj, default=repr, allow_nan=True).encode()


# -- the node's inbound socket (notices) -------------------------------------------

notice_kinds = st.sampled_from(["ready", "ignore", "start_failed", "hb", "unknown", ""])
notices = st.tuples(notice_kinds, st.lists(atoms | st.dictionaries(st.text(max_size=4), atoms, max_size=2),
                                           max_size=6)).map(lambda kv: (kv[0], *kv[1]))
inbound_bodies = raw_bytes | objects.map(pickle.dumps) | notices.map(pickle.dumps)


@FUZZ
@given(body=inbound_bodies, how=seals)
def test_fuzz_node_inbound(tree: Tree, push: zmq.Context, body: bytes, how: str) -> None:
    before = tree.client.status()["node"]["dropped_frames"]["inbound"]["total"]
    send(push, f"ipc://{tree.run_dir}/inbound", sealed(how, tree.client.key, body))
    if how != "run key":  # without the key it is dropped: wait for that, then ask the node something
        wait_for(lambda: tree.client.status()["node"]["dropped_frames"]["inbound"]["total"] > before, 10, "the drop")
    alive(tree)


# -- a worker's mailbox and control socket ------------------------------------------

def _call(reply_to: str, payload: bytes, ref: int = 2**40) -> bytes:
    rt = reply_to.encode()
    return b"C" + struct.pack("<QH", ref, len(rt)) + rt + payload


# An authentic call whose payload unpickles would reach handle_call, and the puppet crashes on
# what it does not know (as asked): the calls drawn here never carry a payload that unpickles.
mailbox_bodies = (
    raw_bytes.filter(lambda b: not b.startswith(b"C"))
    | st.tuples(st.sampled_from(b"SIRX\x00"), raw_bytes).map(lambda kb: bytes([kb[0]]) + kb[1])
    | objects.filter(harmless).map(lambda o: b"S" + pickle.dumps(o))
    | objects.map(lambda o: b"I" + pickle.dumps(o))
    | st.binary(max_size=10).map(lambda junk: b"C" + junk)  # shorter than a call's header
    | st.tuples(st.text(max_size=30), raw_bytes)  # a reply address nobody listens on (never off this host)
        .map(lambda rp: _call(f"ipc:///nonexistent-st-fuzz/{rp[0]}", b"\xff" + rp[1]))
)


@pytest.mark.parametrize("worker", ["p", "a"])  # the plain loop, and the asyncio one
@FUZZ
@given(body=mailbox_bodies, how=seals, ours=st.booleans())
def test_fuzz_worker_mailbox(tree: Tree, push: zmq.Context, worker: str, body: bytes, how: str, ours: bool) -> None:
    target = tree.client.resolve(worker)
    if ours:  # our reply address around a payload that does not unpickle: answered with an error, or dropped
        body = _call(tree.client.caller.reply_to, b"\xff" + body)
    send(push, target.mailbox, sealed(how, tree.client.key, body))
    alive(tree)


control_payloads = (
    objects.map(pickle.dumps)
    | st.tuples(st.text(max_size=14).filter(lambda op: not op.startswith("profile")), objects).map(pickle.dumps)
    | raw_bytes
)


@pytest.mark.parametrize("worker", ["p", "a"])
@FUZZ
@given(payload=control_payloads, how=seals)
def test_fuzz_worker_control(tree: Tree, push: zmq.Context, worker: str, payload: bytes, how: str) -> None:
    target = tree.client.resolve(worker)
    send(push, target.control, sealed(how, tree.client.key, _call(tree.client.caller.reply_to, payload)))
    alive(tree)
    assert tree.client.control_worker(worker, "ping", {}) == "pong"


# -- the client's reply socket ----------------------------------------------------------

reply_bodies = raw_bytes.filter(lambda b: not b.startswith(b"R")) | st.tuples(st.integers(2**40, 2**64 - 1), st.sampled_from([b"\x00", b"\x01", b"\x07"]),
                                     objects).map(lambda r: b"R" + struct.pack("<Q", r[0]) + r[1] + pickle.dumps(r[2]))


@FUZZ
@given(body=reply_bodies, how=seals)
def test_fuzz_client_replies(tree: Tree, push: zmq.Context, body: bytes, how: str) -> None:
    send(push, tree.client.caller.reply_to, sealed(how, tree.client.key, body))
    alive(tree)
