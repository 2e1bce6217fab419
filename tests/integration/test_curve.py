"""CurveZMQ on TCP (wire/curve.py): real sockets on 127.0.0.1.

A peer with the tree's keys gets through; a peer with no CURVE, another client key or
another server key is refused at the handshake, so nothing it sends reaches a socket,
let alone a pickle; an authenticated peer without the run's frame key is still dropped
unread.  The keys live 0600 in RUN/curve and a looser file is refused.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from supervisor_tree.wire import auth, channel, curve
from supervisor_tree.wire.frames import Cast, Malformed, Reply

_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
           | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


class _Bomb:
    """Unpickling this writes a file: proof that someone unpickled bytes from a stranger."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (Path.write_text, (Path(self.marker), "unpickled"))  # type: ignore[return-value]


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[tuple[zmq.Context[Any], curve.CurveKeys, auth.FrameKey]]:
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    keys = curve.create_keys(run)
    key = auth.create_key(run)
    ctx: zmq.Context[Any] = zmq.Context()
    curve.use(keys)
    _made.clear()
    yield ctx, keys, key
    curve.use(None)
    for sock in _made:
        sock.close(0)
    gate = curve._gates.get(id(ctx))
    if gate is not None:
        gate.close()
    ctx.destroy(linger=0)
    curve.forget_keys(run)
    auth.forget_key(run)


_made: list[zmq.Socket[bytes]] = []  # every socket a test opens, closed by the fixture (pyzmq warns of leaks)


def _sock(ctx: zmq.Context[Any], kind: int) -> zmq.Socket[bytes]:
    sock = channel.make_socket(ctx, kind)
    _made.append(sock)
    return sock


def _server(ctx: zmq.Context[Any]) -> tuple[zmq.Socket[bytes], str, zmq.Socket[bytes]]:
    pull = _sock(ctx, zmq.PULL)
    monitor = pull.get_monitor_socket(_FAILED | zmq.EVENT_HANDSHAKE_SUCCEEDED)
    _made.append(monitor)
    endpoint = channel.bind(pull, "tcp://127.0.0.1:*")
    return pull, endpoint, monitor


def _next_event(monitor: zmq.Socket[bytes]) -> int:
    assert monitor.poll(10_000), "no handshake event within 10 s"
    return int(recv_monitor_message(monitor)["event"])


def _stranger(ctx: zmq.Context[Any], endpoint: str, setup: str) -> zmq.Socket[bytes]:
    other = curve.CurveKeys.generate()
    push = _sock(ctx, zmq.PUSH)
    if setup == "wrong client key":
        push.curve_serverkey = curve.in_use().server_public  # type: ignore[union-attr]
        push.curve_publickey, push.curve_secretkey = other.client_public, other.client_secret
    elif setup == "wrong server key":
        curve.dial(push, other)
    push.connect(endpoint)  # plain: no CURVE at all
    return push


def test_a_peer_with_the_trees_keys_gets_through_tcp(tree: Any) -> None:
    ctx, keys, key = tree
    pull, endpoint, monitor = _server(ctx)
    assert endpoint.startswith("tcp://127.0.0.1:") and not endpoint.endswith(":*")
    push = _sock(ctx, zmq.PUSH)
    channel.connect(push, endpoint)
    push.send(channel.encode_cast(key, ("add", 1)))
    assert _next_event(monitor) == zmq.EVENT_HANDSHAKE_SUCCEEDED
    assert pull.poll(10_000)
    assert channel.decode(key, pull.recv()) == Cast(("add", 1))


@pytest.mark.parametrize("setup", ["no CURVE", "wrong client key", "wrong server key"])
def test_a_peer_without_the_keys_is_refused_and_nothing_it_sent_is_unpickled(tree: Any, tmp_path: Path,
                                                                              setup: str) -> None:
    ctx, keys, key = tree
    pull, endpoint, monitor = _server(ctx)
    marker = tmp_path / "unpickled"
    stranger = _stranger(ctx, endpoint, setup)
    # Even a frame sealed with the run's key (a thief of RUN/key without RUN/curve) is refused.
    stranger.send(key.seal(b"S" + pickle.dumps(_Bomb(str(marker)))))
    assert _next_event(monitor) & _FAILED
    friend = _sock(ctx, zmq.PUSH)
    channel.connect(friend, endpoint)
    friend.send(channel.encode_cast(key, "friend"))
    assert pull.poll(10_000)
    assert channel.decode(key, pull.recv()) == Cast("friend")
    assert not pull.poll(200), "a frame from the refused peer came through"  # after the friend's: none queued
    assert not marker.exists()
    if setup == "wrong client key":
        assert curve._gates[id(ctx)].refused >= 1


def test_an_authenticated_peer_without_the_frame_key_is_dropped_unread(tree: Any, tmp_path: Path) -> None:
    ctx, keys, key = tree
    pull, endpoint, _ = _server(ctx)
    marker = tmp_path / "unpickled"
    push = _sock(ctx, zmq.PUSH)
    channel.connect(push, endpoint)
    other = auth.FrameKey(os.urandom(32))
    push.send(other.seal(b"S" + pickle.dumps(_Bomb(str(marker)))))
    assert pull.poll(10_000)
    assert isinstance(channel.decode(key, pull.recv()), Malformed)
    assert not marker.exists()


def test_a_call_and_its_reply_cross_tcp_both_ways(tree: Any) -> None:
    ctx, keys, key = tree
    mailbox = _sock(ctx, zmq.PULL)
    endpoint = channel.bind(mailbox, "tcp://127.0.0.1:*")
    replies = channel.ReplySender(ctx)
    with channel.Caller(ctx, "tcp://127.0.0.1", key) as caller:
        assert caller.reply_to.startswith("tcp://127.0.0.1:")
        ref = caller.send_call(endpoint, ("echo", 7))
        assert mailbox.poll(10_000)
        call = channel.decode(key, mailbox.recv())
        assert isinstance(call, channel.Call) and call.ref == ref
        replies.send(call.reply_to.encode(), channel.encode_reply(key, call.ref, True, channel.loads_payload(call.payload)))
        reply = caller.wait_reply(ref, 10.0)
        assert isinstance(reply, Reply) and reply.unwrap() == ("echo", 7)
    replies.close()


def test_tcp_without_keys_is_refused_before_any_socket_opens(tmp_path: Path) -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        sock = channel.make_socket(ctx, zmq.PULL)
        with pytest.raises(ValueError, match="needs the tree's CURVE keys"):
            channel.bind(sock, "tcp://127.0.0.1:*")
        sock.close(0)
    finally:
        ctx.destroy(linger=0)


def test_the_keys_are_kept_0600_and_a_looser_file_is_refused(tmp_path: Path) -> None:
    keys = curve.create_keys(tmp_path)
    path = tmp_path / curve.CURVE_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    assert curve.read_keys(tmp_path) == keys
    path.chmod(0o644)
    with pytest.raises(curve.CurveKeyError, match="must be a 0600 file"):
        curve.read_keys(tmp_path)
    path.chmod(0o600)
    path.write_bytes(b"short\n")
    with pytest.raises(curve.CurveKeyError, match="four z85 keys"):
        curve.read_keys(tmp_path)
    curve.forget_keys(tmp_path, remove_file=True)
    assert not path.exists()
