"""The session store end to end: CRUD, TTL expiry by the sweeping timer, count."""

from __future__ import annotations

import time

import pytest
from components import start_tree, worker  # noqa: F401 - start_tree is a fixture
from nodes import wait_for

from supervisor_tree.workers.session import SessionClient

pytestmark = pytest.mark.timeout(120)


def sessions(**args: object) -> str:
    return worker("sessions", "supervisor_tree.workers.session:Session", **args)


def test_create_get_update_touch_delete_count(start_tree) -> None:  # type: ignore[no-untyped-def]
    t = start_tree(sessions())
    s = SessionClient(t.client, "sessions")
    a = s.create({"user": 1})
    b = s.create()
    assert a != b and len(a) >= 20
    assert s.get(a) == {"user": 1}
    assert s.get(b) == {}
    assert s.update(a, {"cart": [1, 2]}) is True
    assert s.get(a) == {"user": 1, "cart": [1, 2]}
    assert s.update(a, {"only": True}, replace=True) is True
    assert s.get(a) == {"only": True}
    assert s.touch(b) is True
    assert s.count() == 2
    assert s.delete(b) is True
    assert s.delete(b) is False
    assert s.get(b) is None
    assert s.update(b, {"x": 1}) is False and s.touch(b) is False
    assert s.count() == 1
    assert s.batch([("get", a), ("touch", a), ("delete", "nope"), ("bogus",)])[:3] == [{"only": True}, True, False]
    out = t.cli("call", "sessions", '{"op": "count"}', "--json")
    assert out.returncode == 0 and out.stdout.strip() == "1", out.stderr


def test_sessions_expire_after_their_ttl(start_tree) -> None:  # type: ignore[no-untyped-def]
    t = start_tree(sessions(ttl=0.4, sweep_interval=0.1))
    s = SessionClient(t.client, "sessions")
    short = [s.create({"i": i}) for i in range(50)]
    long = s.create({"keep": True}, ttl=60)
    assert s.count() == 51
    wait_for(lambda: s.count() == 1, 10, "the short sessions to expire")
    assert all(s.get(sid) is None for sid in short)
    assert s.get(long) == {"keep": True}
    assert s.stats()["expired"] == 50


def test_touch_extends_a_session(start_tree) -> None:  # type: ignore[no-untyped-def]
    t = start_tree(sessions(ttl=0.5, sweep_interval=0.1))
    s = SessionClient(t.client, "sessions")
    kept, dropped = s.create(), s.create()
    s.touch(kept, ttl=30)
    wait_for(lambda: s.get(dropped) is None, 10, "the untouched session to expire")
    assert s.get(kept) == {}
    assert s.count() == 1


def test_touching_sessions_keeps_one_expiry_entry_each(start_tree) -> None:  # type: ignore[no-untyped-def]
    """A store whose sessions are touched all the time holds one expiry entry per session, not one per touch
    per sweep interval (which grew the store by ttl / sweep_interval entries per session)."""
    t = start_tree(sessions(ttl=60, sweep_interval=0.02))
    s = SessionClient(t.client, "sessions")
    ids = [s.create({"i": i}) for i in range(20)]
    until = time.monotonic() + 0.5  # touches across about 25 sweep intervals
    rounds = 0
    while time.monotonic() < until or rounds < 3:
        assert s.batch([("touch", sid) for sid in ids]) == [True] * 20
        rounds += 1
    stats = s.stats()
    assert stats["sessions"] == 20
    assert stats["entries"] <= 2 * 20, stats


def test_a_session_touched_past_its_first_deadline_expires_once_left_alone(start_tree) -> None:  # type: ignore[no-untyped-def]
    t = start_tree(sessions(ttl=0.3, sweep_interval=0.05))
    s = SessionClient(t.client, "sessions")
    sid = s.create({"busy": True})
    until = time.monotonic() + 0.9  # three of its ttls: its first buckets come due while it lives on
    while time.monotonic() < until:
        assert s.touch(sid) is True
    assert s.get(sid) == {"busy": True}
    wait_for(lambda: s.count() == 0, 10, "the session to expire once no longer touched")
    assert s.get(sid) is None
    assert s.stats()["expired"] == 1
