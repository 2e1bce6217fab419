"""wire/auth, wire/shapes, wire/requests, wire/dropped and wire/rundir: the trust model's parts, in one process."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from supervisor_tree.wire import auth, rundir
from supervisor_tree.wire.auth import SMALL_BODY, TAG_SIZE, FrameKey, RunKeyError
from supervisor_tree.wire.dropped import Dropped
from supervisor_tree.wire.requests import Answer, Request, decode_answer, decode_request, encode_answer, encode_request
from supervisor_tree.wire.shapes import BadFrame, check_message

KEY = FrameKey(bytes(range(32)))

# ---------------------------------------------------------------------------
# Tags


@pytest.mark.parametrize("size", [1, 64, SMALL_BODY, SMALL_BODY + 1, 1 << 20])  # both MACs, and the border
def test_a_sealed_frame_verifies_and_any_change_breaks_it(size: int) -> None:
    body = os.urandom(size)
    frame = KEY.seal(body)
    assert len(frame) == size + TAG_SIZE and KEY.verify(frame) == size
    for i in (0, size - 1, size, len(frame) - 1):  # a flipped bit in the body or in the tag
        broken = bytearray(frame)
        broken[i] ^= 1
        assert KEY.verify(bytes(broken)) == -1
    assert KEY.verify(frame[:-1]) == -1 and KEY.verify(frame + b"x") == -1
    assert FrameKey(bytes(32)).verify(frame) == -1


def test_frames_too_short_to_hold_a_tag_never_verify() -> None:
    for frame in (b"", b"x", bytes(TAG_SIZE)):
        assert KEY.verify(frame) == -1


def test_a_key_is_32_bytes_and_its_fingerprint_is_not_the_secret() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        FrameKey(b"short")
    assert len(KEY.fingerprint) == 8 and KEY.fingerprint not in bytes(range(32)).hex()


# ---------------------------------------------------------------------------
# The key file


def test_create_key_writes_0600_and_holds_it_in_memory(tmp_path: Path) -> None:
    key = auth.create_key(tmp_path)
    try:
        path = tmp_path / auth.KEY_FILE
        assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.stat().st_size == 32
        assert auth.key_for(tmp_path) is key  # held: no file read
        assert auth.read_key(tmp_path).fingerprint == key.fingerprint
        fresh = auth.create_key(tmp_path)  # a new run: a new key
        assert fresh.fingerprint != key.fingerprint and auth.key_for(tmp_path) is fresh
    finally:
        auth.forget_key(tmp_path, remove_file=True)
    assert not (tmp_path / auth.KEY_FILE).exists() and auth.held_key(tmp_path) is None


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / auth.KEY_FILE
    path.write_bytes(os.urandom(32))
    os.chmod(path, 0o644)
    with pytest.raises(RunKeyError, match="mode 0644 lets others read or write it"):
        auth.read_key(tmp_path)


@pytest.mark.skipif(os.getuid() != 0, reason="giving a file to another user needs root")
def test_a_key_file_of_another_user_is_refused(tmp_path: Path) -> None:
    path = tmp_path / auth.KEY_FILE
    path.write_bytes(os.urandom(32))
    os.chmod(path, 0o600)
    os.chown(path, 65534, -1)
    with pytest.raises(RunKeyError, match="owned by uid 65534, not by you"):
        auth.read_key(tmp_path)


def test_a_missing_or_short_key_is_refused_with_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(RunKeyError, match="no key there"):
        auth.read_key(tmp_path)
    (tmp_path / auth.KEY_FILE).write_bytes(b"abc")
    os.chmod(tmp_path / auth.KEY_FILE, 0o600)
    with pytest.raises(RunKeyError, match="this file has 3"):
        auth.read_key(tmp_path)
    (tmp_path / auth.KEY_FILE).unlink()
    (tmp_path / auth.KEY_FILE).symlink_to("/etc/hostname")
    with pytest.raises(RunKeyError, match="cannot read the run's key"):
        auth.read_key(tmp_path)


# ---------------------------------------------------------------------------
# Shapes and the control protocol


def test_check_message_names_what_is_wrong() -> None:
    kinds = {"ready": (str, int, int)}
    assert check_message(("ready", "a", 1, 2), kinds, "notice") == ("ready", "a", 1, 2)
    cases = [
        (["ready"], "a notice must be a tuple starting with its kind (a str); got list ['ready']"),
        ((), "a notice must be a tuple"),
        (("hb",), "unknown notice kind 'hb'; expected one of ready"),
        (("ready", "a"), "notice 'ready' takes 3 field(s) (str, int, int); got 1"),
        (("ready", "a", True, 2), "notice 'ready': field 2 must be int; got bool True"),
        (("ready", ["a"], 1, 2), "notice 'ready': field 1 must be str; got list ['a']"),
    ]
    for msg, says in cases:
        with pytest.raises(BadFrame) as info:
            check_message(msg, kinds, "notice")
        assert says in info.value.reason and info.value.kind == "malformed"
    assert check_message(("other", 1), kinds, "notice", open_kinds=True) == ("other", 1)


def test_control_frames_round_trip_as_json() -> None:
    frame = encode_request(KEY, 7, "resolve", {"id": "db", "timeout": 1.5})
    assert frame[:-TAG_SIZE] == b'[7,"resolve",{"id":"db","timeout":1.5}]'
    assert decode_request(KEY, frame) == Request(7, "resolve", {"id": "db", "timeout": 1.5})
    assert decode_answer(KEY, encode_answer(KEY, 7, True, {"n": (1, 2)})) == Answer(7, True, {"n": [1, 2]})


@pytest.mark.parametrize(("body", "says"), [
    (b"not json", "control request is not JSON"),
    (b"[1, 2]", "a control request is a JSON array of 3; got list [1, 2]"),
    (b'[true, "ping", {}]', "id must be an integer; got bool True"),
    (b'[1, ["status"], {}]', "operation must be a string; got list ['status']"),
    (b'[1, "ping", []]', "arguments must be an object; got list []"),
])
def test_control_requests_of_the_wrong_shape_are_bad_frames(body: bytes, says: str) -> None:
    with pytest.raises(BadFrame, match=says.replace("[", r"\[").replace("]", r"\]")):
        decode_request(KEY, KEY.seal(body))


def test_a_control_request_without_the_tag_is_never_parsed() -> None:
    with pytest.raises(BadFrame) as info:
        decode_request(KEY, b'[1, "stop", {}]')
    assert info.value.kind == "unauthenticated"


# ---------------------------------------------------------------------------
# Dropped frames: counted, logged at most once a second per peer


def test_dropped_frames_are_logged_once_a_second_per_peer(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    drops = Dropped(logging.getLogger("test.drops"), "inbound socket", clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.drops"):
        for _ in range(50):
            drops.drop("worker a", "malformed", "notice 'hb' takes 4 field(s)")
        drops.drop("worker b", "unauthenticated", "no tag")
        now[0] += 1.0
        drops.drop("worker a", "malformed", "again")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert lines[0].startswith("inbound socket: dropped a frame from worker a (malformed): notice 'hb'")
    assert "49 more from this peer since the last line" in lines[2] and lines[2].endswith("52 dropped in all")
    assert drops.summary() == {"total": 52, "malformed": 51, "unauthenticated": 1}


def test_dropped_keeps_a_bounded_table_of_peers() -> None:
    drops = Dropped(logging.getLogger("test.drops"), "control socket", max_peers=4)
    for n in range(100):
        drops.drop(f"client {n}", "unauthenticated", "no tag")
    assert drops.total == 100 and len(drops._peers) == 4


# ---------------------------------------------------------------------------
# Run dirs


def test_ensure_makes_only_the_run_dir_0700_and_leaves_existing_folders_alone(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o755)
    old = os.umask(0o022)
    try:
        run = rundir.ensure(shared / "a" / "b" / "run")
    finally:
        os.umask(old)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755
    assert stat.S_IMODE((shared / "a").stat().st_mode) == 0o755  # a missing parent: the user's umask
    assert stat.S_IMODE(run.stat().st_mode) == 0o700
    assert {p.name for p in run.iterdir()} == {"w", "reasons"}


def test_ensure_tightens_an_existing_run_dir_of_ours_and_refuses_one_open_to_others(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    os.chmod(run, 0o755)
    rundir.ensure(run)
    assert stat.S_IMODE(run.stat().st_mode) == 0o700
    os.chmod(run, 0o757)
    with pytest.raises(rundir.RunDirError, match="mode 0757 lets others write to it"):
        rundir.ensure(run)
    assert stat.S_IMODE(run.stat().st_mode) == 0o757  # refused: untouched
    (tmp_path / "file").write_text("")
    with pytest.raises(rundir.RunDirError, match="not a directory"):
        rundir.ensure(tmp_path / "file")
