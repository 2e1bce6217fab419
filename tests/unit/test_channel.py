"""wire/: frames, notices, reply sockets and the call primitive (in one process, real sockets)."""

from __future__ import annotations

import os
import pickle
import struct
import tempfile
import threading

import pytest
import zmq

from supervisor_tree.wire import channel
from supervisor_tree.wire.auth import TAG_SIZE, FrameKey
from supervisor_tree.wire.channel import (
    Call,
    Caller,
    Cast,
    Info,
    Malformed,
    PeerUnavailable,
    RemoteCallError,
    RemoteError,
    Reply,
    ReplySender,
)
from supervisor_tree.wire.shapes import BadFrame

KEY = FrameKey(bytes(range(32)))


def _body(frame: bytes) -> tuple[bytes, int]:
    """(frame, end of its body): what split_call takes once the tag was checked."""
    end = KEY.verify(frame)
    assert end == len(frame) - TAG_SIZE
    return frame, end


# ---------------------------------------------------------------------------
# Frames


@pytest.mark.parametrize("payload", [None, 1, "x" * 1000, ("add", 2), {"cmd": "echo", "value": [1, 2]}, b"\x00\xff"])
def test_call_round_trip(payload: object) -> None:
    frame = channel.encode_call(KEY, 2**63 + 5, "ipc:///tmp/st/c-1-0", payload)
    assert frame[:1] == b"C"
    call = channel.decode(KEY, frame)
    assert call == Call(2**63 + 5, "ipc:///tmp/st/c-1-0", pickle.dumps(payload, protocol=5))
    assert channel.loads_payload(call.payload) == payload


def test_call_header_layout_is_the_documented_one() -> None:
    frame = channel.encode_call(KEY, 7, "ab", 1)
    assert frame[:1] == b"C"
    assert struct.unpack_from("<QH", frame, 1) == (7, 2)
    assert frame[11:13] == b"ab"
    assert pickle.loads(frame[13:-TAG_SIZE]) == 1
    assert frame[-TAG_SIZE:] == KEY.tag(frame[:-TAG_SIZE])


def test_cast_info_reply_round_trip() -> None:
    assert channel.decode(KEY, channel.encode_cast(KEY, {"a": 1})) == Cast({"a": 1})
    assert channel.decode(KEY, channel.encode_info(KEY, ("tick", 3))) == Info(("tick", 3))
    assert channel.decode(KEY, channel.encode_reply(KEY, 9, True, [1, 2])) == Reply(9, True, [1, 2])
    err = RemoteError("ValueError", "bad", "Traceback ...")
    assert channel.decode(KEY, channel.encode_reply(KEY, 9, False, err)) == Reply(9, False, err)


def test_reply_layout_and_fast_path_agree() -> None:
    frame = channel.encode_reply(KEY, 3, False, "e")
    assert frame[:1] == b"R" and struct.unpack_from("<Q", frame, 1) == (3,) and frame[9:10] == b"\x01"
    ref8, reply_to, payload = channel.split_call(*_body(channel.encode_call(KEY, 3, "ipc:///x", "p")))
    assert (ref8, reply_to, pickle.loads(payload)) == (struct.pack("<Q", 3), b"ipc:///x", "p")
    assert channel.reply_frame(KEY, ref8, False, "e") == frame


def test_notice_round_trip_and_rejects() -> None:
    assert channel.decode_notice(KEY, channel.encode_notice(KEY, ("ready", "a", 1, 42))) == ("ready", "a", 1, 42)
    with pytest.raises(BadFrame, match="undecodable notice"):
        channel.decode_notice(KEY, KEY.seal(b"garbage"))
    with pytest.raises(BadFrame, match="tuple starting with its kind"):
        channel.decode_notice(KEY, KEY.seal(pickle.dumps([1, 2])))
    with pytest.raises(BadFrame, match=r"notice 'ready' takes 3 field\(s\) \(str, int, int\); got 1"):
        channel.decode_notice(KEY, KEY.seal(pickle.dumps(("ready", "a"))))
    with pytest.raises(BadFrame, match="without the run's tag") as info:
        channel.decode_notice(KEY, pickle.dumps(("ready", "a", 1, 42)))
    assert info.value.kind == "unauthenticated"


def test_call_with_a_bad_payload_still_has_its_header() -> None:
    frame = KEY.seal(channel.encode_call(KEY, 4, "ipc:///r", 0)[: -TAG_SIZE - len(pickle.dumps(0, protocol=5))] + b"not a pickle")
    call = channel.decode(KEY, frame)
    assert isinstance(call, Call) and call.ref == 4 and call.reply_to == "ipc:///r"
    with pytest.raises(Exception):  # noqa: B017 - any error of the decoder will do
        channel.loads_payload(call.payload)


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"", "without the run's tag"),
        (b"Xabc", "unknown frame kind"),
        (b"C\x01\x02", "shorter than its header"),
        (b"C" + struct.pack("<QH", 1, 50) + b"short", "without a complete reply address"),
        (b"C" + struct.pack("<QH", 1, 0) + pickle.dumps(1), "without a complete reply address"),
        (b"C" + struct.pack("<QH", 1, 2) + b"\xff\xfe" + pickle.dumps(1), "does not decode"),
        (b"Snot a pickle", "does not decode"),
        (b"I", "does not decode"),
        (b"R\x01", "truncated header"),
        (b"R" + struct.pack("<Q", 1) + b"\x07" + pickle.dumps(1), "truncated header"),
    ],
)
def test_malformed_frames_never_raise(frame: bytes, reason: str) -> None:
    decoded = channel.decode(KEY, KEY.seal(frame) if frame else frame)
    assert isinstance(decoded, Malformed)
    assert reason in decoded.reason
    assert len(decoded.head) <= 32


@pytest.mark.parametrize("frame", [b"", b"S", bytes(TAG_SIZE), b"S" + pickle.dumps(1) + bytes(TAG_SIZE)])
def test_frames_without_the_tag_are_not_read(frame: bytes) -> None:
    decoded = channel.decode(KEY, frame)
    assert isinstance(decoded, Malformed) and decoded.kind == "unauthenticated"
    other = FrameKey(bytes(32))
    assert channel.decode(other, channel.encode_cast(KEY, 1)).kind == "unauthenticated"  # type: ignore[union-attr]


def test_reply_whose_value_does_not_unpickle_is_an_error_for_its_ref() -> None:
    frame = KEY.seal(channel.encode_reply(KEY, 5, True, 0)[:10] + b"junk")
    reply = channel.decode(KEY, frame)
    assert isinstance(reply, Reply) and reply.ref == 5 and not reply.ok
    assert reply.value.type == "MalformedReply"


def test_remote_error_from_exception_pickles_and_unwraps() -> None:
    try:
        raise KeyError("k")
    except KeyError as exc:
        err = RemoteError.from_exception(exc)
    assert (err.type, err.message) == ("KeyError", "'k'")
    assert "Traceback" in err.traceback and "raise KeyError" in err.traceback
    assert pickle.loads(pickle.dumps(err, protocol=5)) == err
    with pytest.raises(RemoteCallError, match="KeyError: 'k'") as info:
        Reply(1, False, err).unwrap()
    assert info.value.error == err
    assert Reply(1, True, 5).unwrap() == 5


# ---------------------------------------------------------------------------
# Endpoints


def test_ipc_path_length_is_checked_with_a_remedy() -> None:
    ok = "ipc:///" + "a" * 106
    assert channel.check_endpoint(ok) == ok
    with pytest.raises(ValueError, match=r"108 bytes, over Linux's limit of 107.*shorter --run-dir"):
        channel.check_endpoint("ipc:///" + "a" * 107)
    assert channel.check_endpoint("tcp://127.0.0.1:5555") == "tcp://127.0.0.1:5555"
    assert channel.ipc_path("ipc:///run/x") == "/run/x" and channel.ipc_path("tcp://h:1") is None


# ---------------------------------------------------------------------------
# Sockets (one process: the test plays both sides)


@pytest.fixture
def ctx():
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture
def short_dir():
    path = tempfile.mkdtemp(prefix="st-", dir="/tmp")
    yield path
    for name in os.listdir(path):
        os.unlink(os.path.join(path, name))
    os.rmdir(path)


def test_make_socket_has_linger_zero(ctx: zmq.Context) -> None:
    sock = channel.make_socket(ctx, zmq.PUSH, sndhwm=7)
    assert sock.getsockopt(zmq.LINGER) == 0 and sock.getsockopt(zmq.SNDHWM) == 7
    sock.close()


class FakeWorker:
    """A PULL at a mailbox endpoint that answers calls from the test thread."""

    def __init__(self, ctx: zmq.Context, directory: str) -> None:
        self.endpoint = f"ipc://{directory}/w.mbx"
        self.pull = channel.make_socket(ctx, zmq.PULL)
        self.pull.bind(self.endpoint)
        self.replies = ReplySender(ctx)

    def recv(self, timeout_ms: int = 5000) -> channel.Frame:
        assert self.pull.poll(timeout_ms), "no message reached the fake worker"
        return channel.decode(KEY, self.pull.recv())

    def answer(self, call: Call, value: object, ref: int | None = None) -> None:
        self.replies.send(call.reply_to.encode(), channel.encode_reply(KEY, call.ref if ref is None else ref, True, value))

    def close(self) -> None:
        self.replies.close()
        self.pull.close()


@pytest.fixture
def fake_worker(ctx: zmq.Context, short_dir: str):
    worker = FakeWorker(ctx, short_dir)
    yield worker
    worker.close()


def test_caller_call_and_cast(ctx: zmq.Context, short_dir: str, fake_worker: FakeWorker) -> None:
    with Caller(ctx, short_dir, KEY) as caller:
        assert caller.reply_to.startswith(f"ipc://{short_dir}/c-{os.getpid()}-")
        ref = caller.send_call(fake_worker.endpoint, ("add", 1))
        call = fake_worker.recv()
        assert isinstance(call, Call) and call.ref == ref and call.reply_to == caller.reply_to
        fake_worker.answer(call, 2)
        assert caller.wait_reply(ref, 5.0) == Reply(ref, True, 2)
        caller.send_cast(fake_worker.endpoint, "hello")
        assert fake_worker.recv() == Cast("hello")
        caller.send_info(fake_worker.endpoint, "note")
        assert fake_worker.recv() == Info("note")


def test_caller_refs_count_up_and_late_replies_are_discarded(
    ctx: zmq.Context, short_dir: str, fake_worker: FakeWorker
) -> None:
    with Caller(ctx, short_dir, KEY) as caller:
        first = caller.send_call(fake_worker.endpoint, 1)
        second = caller.send_call(fake_worker.endpoint, 2)
        assert second == first + 1
        call1, call2 = fake_worker.recv(), fake_worker.recv()
        with pytest.raises(TimeoutError):
            caller.wait_reply(first, 0.01)
        fake_worker.answer(call1, "late")  # the answer to the call that timed out
        fake_worker.answer(call2, "second")
        assert caller.wait_reply(second, 5.0) == Reply(second, True, "second")
        assert caller.discarded == 1


def test_caller_call_unwraps_errors(ctx: zmq.Context, short_dir: str, fake_worker: FakeWorker) -> None:
    with Caller(ctx, short_dir, KEY) as caller:
        result: dict[str, object] = {}

        def serve() -> None:
            call = fake_worker.recv()
            assert isinstance(call, Call)
            err = RemoteError("ValueError", "nope")
            fake_worker.replies.send(call.reply_to.encode(), channel.encode_reply(KEY, call.ref, False, err))
            result["served"] = True

        thread = threading.Thread(target=serve)
        thread.start()
        with pytest.raises(RemoteCallError, match="ValueError: nope"):
            caller.call(fake_worker.endpoint, "x", timeout=5.0)
        thread.join(5.0)
        assert result == {"served": True}


def test_wait_reply_returns_the_extra_fd_that_became_readable(
    ctx: zmq.Context, short_dir: str, fake_worker: FakeWorker
) -> None:
    r, w = os.pipe()
    try:
        with Caller(ctx, short_dir, KEY) as caller:
            ref = caller.send_call(fake_worker.endpoint, "x")
            os.write(w, b"!")  # stands for the callee's pidfd becoming readable (it died)
            assert caller.wait_reply(ref, 5.0, extra_poll_fds=(r,)) == r
    finally:
        os.close(r)
        os.close(w)


def test_reply_beats_a_death_noticed_at_the_same_time(
    ctx: zmq.Context, short_dir: str, fake_worker: FakeWorker
) -> None:
    r, w = os.pipe()
    try:
        with Caller(ctx, short_dir, KEY) as caller:
            ref = caller.send_call(fake_worker.endpoint, "x")
            fake_worker.answer(fake_worker.recv(), "last words")
            os.write(w, b"!")
            assert caller.wait_reply(ref, 5.0, extra_poll_fds=(r,)) == Reply(ref, True, "last words")
    finally:
        os.close(r)
        os.close(w)


def test_send_to_an_endpoint_nobody_listens_on_fails_fast(ctx: zmq.Context, short_dir: str) -> None:
    with Caller(ctx, short_dir, KEY, connect_timeout=0.05) as caller:
        with pytest.raises(PeerUnavailable, match="w-gone.mbx"):
            caller.send_call(f"ipc://{short_dir}/w-gone.mbx", "x")
        with pytest.raises(PeerUnavailable):
            caller.send_cast(f"ipc://{short_dir}/w-gone.mbx", "x")


def test_send_to_a_callee_whose_pidfd_says_it_died_is_not_sent(
    ctx: zmq.Context, short_dir: str, fake_worker: FakeWorker
) -> None:
    r, w = os.pipe()
    try:
        with Caller(ctx, short_dir, KEY) as caller:
            caller.send_cast(fake_worker.endpoint, "before", alive_fd=r)
            assert fake_worker.recv() == Cast("before")
            os.write(w, b"!")  # stands for the pidfd of a callee that died
            with pytest.raises(PeerUnavailable):
                caller.send_call(fake_worker.endpoint, "after", alive_fd=r)
            assert fake_worker.pull.poll(50) == 0
    finally:
        os.close(r)
        os.close(w)


def test_send_after_the_worker_went_away_fails_fast(ctx: zmq.Context, short_dir: str) -> None:
    worker = FakeWorker(ctx, short_dir)
    with Caller(ctx, short_dir, KEY, connect_timeout=0.05) as caller:
        caller.send_cast(worker.endpoint, "hello")
        assert worker.recv() == Cast("hello")
        worker.close()
        # The disconnect reaches our I/O thread asynchronously: within the deadline,
        # sends start failing instead of queueing for nobody.
        with pytest.raises(PeerUnavailable):
            for _ in range(10_000):
                caller.send_cast(worker.endpoint, "anyone?")
                zmq.select([], [], [], 0.001)


def test_reply_sender_drops_and_counts_instead_of_blocking(ctx: zmq.Context, short_dir: str) -> None:
    sender = ReplySender(ctx, sndhwm=5)
    nobody = f"ipc://{short_dir}/c-nobody".encode()
    results = [sender.send(nobody, b"R" + bytes(9)) for _ in range(20)]
    assert results.count(False) == sender.dropped >= 15
    assert sender.send(b"\xff\xfe", b"R") is False  # not an endpoint at all
    sender.close()


def test_reply_sender_is_lru_bounded(ctx: zmq.Context, short_dir: str) -> None:
    sender = ReplySender(ctx, max_sockets=2)
    for n in range(3):
        sender.send(f"ipc://{short_dir}/c-{n}".encode(), b"R")
    assert list(sender._socks) == [f"ipc://{short_dir}/c-{n}".encode() for n in (1, 2)]
    sender.close()


def test_a_reply_coalesced_with_others_reaches_its_waiting_call(
    ctx: zmq.Context, short_dir: str, fake_worker: FakeWorker
) -> None:
    with Caller(ctx, short_dir, KEY) as caller:
        first = caller.send_call(fake_worker.endpoint, 1)
        second = caller.send_call(fake_worker.endpoint, 2)
        fake_worker.recv()
        call2 = fake_worker.recv()
        assert isinstance(call2, Call)
        frame = channel.encode_replies(KEY, [(first, True, "late"), (second, False, "refused")])
        fake_worker.replies.send(call2.reply_to.encode(), frame)  # one frame, as a worker sends a burst's replies
        assert caller.wait_reply(second, 5.0) == Reply(second, False, "refused")
        assert caller.discarded == 1
