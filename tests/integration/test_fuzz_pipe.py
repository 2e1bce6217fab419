"""Fuzzed decoders of the fork-server pipe, both ways: random and near-valid messages, then a spawn that works.

The node's side: `pipe.decode_report` and `LocalLauncher.read_events` over a real pipe.
The fork server's side: a running fork server (this process plays the node, as
test_launcher.py does) gets random messages on its pipe, then still forks a worker
that says ready and answers a call.  This module holds no ZeroMQ context while a
launcher starts (a fork server must not inherit one).
"""

from __future__ import annotations

import os
import pickle
import select
import socket
import time
from pathlib import Path

import pytest
import zmq
from hypothesis import given
from hypothesis import strategies as st
from multiprocess.connection import Connection
from nodes import REPO
from test_fuzz import FUZZ, atoms, objects, raw_bytes

from supervisor_tree.node.launchers import pipe
from supervisor_tree.node.launchers.base import Reaped, Spawned, SpawnFailed
from supervisor_tree.node.launchers.local import LocalLauncher
from supervisor_tree.node.launchers.server import ServerProcess
from supervisor_tree.spec import KILLED
from supervisor_tree.wire import auth, channel
from supervisor_tree.wire.shapes import BadFrame
from supervisor_tree.worker.spawn import SpawnRequest

pytestmark = pytest.mark.timeout(120)


# -- the fork-server pipe ------------------------------------------------------------------

pipe_requests = (
    raw_bytes
    | objects.map(pickle.dumps)
    | st.tuples(st.sampled_from(["spawn", "activated", "discard", "close", "nope"]),
                st.lists(atoms, max_size=3)).map(lambda kv: (kv[0], *kv[1]))
        .filter(lambda msg: msg != ("close",)).map(pickle.dumps)
)


def test_fuzz_fork_server_pipe_then_spawn(tmp_path: Path) -> None:
    """Random messages into a running fork server's pipe; then a worker forked from it says ready and answers."""
    run_dir = str(tmp_path)
    for sub in ("w", "reasons"):
        (tmp_path / sub).mkdir()
    launcher = LocalLauncher(run_dir, preload=["supervisor_tree.workers.puppet"], sys_path=[str(REPO)], standby=1)
    launcher.start()
    try:
        @FUZZ
        @given(data=pipe_requests)
        def fuzz(data: bytes) -> None:
            server = launcher._server
            assert server is not None
            server.conn.send_bytes(data)  # straight into the pipe, as the node writes
            assert not select.select([server.pidfd], [], [], 0)[0], "the fork server died"

        fuzz()
        _spawn_and_call(launcher, run_dir)
    finally:
        launcher.close()
        auth.forget_key(run_dir)


def _spawn_and_call(launcher: LocalLauncher, run_dir: str) -> None:
    key = auth.key_for(run_dir)
    ctx = zmq.Context()
    inbound = channel.make_socket(ctx, zmq.PULL)
    inbound.bind(f"ipc://{run_dir}/inbound")
    caller = channel.Caller(ctx, run_dir, key)
    try:
        req = SpawnRequest(1, "p", 1, "supervisor_tree.workers.puppet:Puppet", {}, run_dir, f"ipc://{run_dir}/inbound",
                           f"ipc://{run_dir}/w/p-1.mbx", f"ipc://{run_dir}/w/p-1.ctl", 5.0, (str(REPO),))
        launcher.spawn(req)
        assert inbound.poll(20_000), "the worker never said ready"
        notice = channel.decode_notice(key, inbound.recv())
        if notice[0] == "declare":  # the puppet declares its idempotent calls just before "ready"
            assert inbound.poll(20_000), "the worker never said ready"
            notice = channel.decode_notice(key, inbound.recv())
        assert notice[0] == "ready"
        assert caller.call(req.mailbox, {"cmd": "echo", "value": "after"}, timeout=10) == "after"
        pid = _spawned_pid(launcher, req.token)
        launcher.kill(pid, 9)
        assert _reaped(launcher, pid) == KILLED
    finally:
        caller.close()
        inbound.close()
        ctx.term()


def _events(launcher: LocalLauncher, want: type, match: object) -> object:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        select.select([launcher.fileno()], [], [], 0.5)
        for ev in launcher.read_events():
            if isinstance(ev, want) and match in (getattr(ev, "token", None), getattr(ev, "pid", None)):
                return ev
    raise AssertionError(f"no {want.__name__} for {match}")


def _spawned_pid(launcher: LocalLauncher, token: int) -> int:
    return _events(launcher, Spawned, token).pid  # type: ignore[attr-defined, no-any-return]


def _reaped(launcher: LocalLauncher, pid: int) -> object:
    return _events(launcher, Reaped, pid).reason  # type: ignore[attr-defined]


# The other direction: what the node reads from the fork server, through a real pipe.

report_bodies = (
    raw_bytes
    | objects.map(pickle.dumps)
    | st.tuples(st.sampled_from(["ok", "error", "events", "nope"]),
                st.lists(atoms | st.lists(atoms, max_size=3), max_size=2)).map(lambda kv: (kv[0], *kv[1])).map(pickle.dumps)
    | st.lists(objects, max_size=3).map(lambda evs: pickle.dumps(("events", evs)))
)


@FUZZ
@given(data=report_bodies)
def test_fuzz_fork_server_reports(data: bytes) -> None:
    try:
        msg = pipe.decode_report(data)
    except BadFrame:
        return
    assert msg[0] in pipe.REPORTS


def test_the_launcher_drops_bad_reports_and_reads_the_next_good_one(tmp_path: Path) -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    server = ServerProcess(os.getpid(), Connection(ours.detach()))  # this process plays the fork server
    server.up = True
    fork_server_end = Connection(theirs.detach())
    reader = LocalLauncher(str(tmp_path))
    try:
        for junk in (b"", b"garbage", pickle.dumps(("events", [1, 2])), pickle.dumps(("events", "x")),
                     pickle.dumps(("ok",)), pickle.dumps(("standby", "pid"))):
            fork_server_end.send_bytes(junk)
        fork_server_end.send_bytes(pipe.encode(("events", [SpawnFailed(1, "no fork")])))
        select.select([server.conn.fileno()], [], [], 5)
        assert reader._read_server(server) == [SpawnFailed(1, "no fork")]
        assert reader.dropped.total == 6
        assert not server.eof
    finally:
        server.sock.close()
        server.conn.close()
        os.close(server.pidfd)
        fork_server_end.close()
