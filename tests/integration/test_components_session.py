"""The session store end to end: CRUD, TTL expiry by the sweeping timer, count."""

from __future__ import annotations

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
