"""The fork server, the worker loop and the puppet, with real processes and sockets.

The test plays the node: it starts a LocalLauncher, binds the inbound PULL socket
workers report on, and talks to workers through a `channel.Caller`.  Every wait
is on an event (a socket, the launcher's pipe) with a deadline.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import cloudpickle
import psutil
import pytest
import zmq

from supervisor_tree import IGNORE, Worker
from supervisor_tree.node.launchers.base import LauncherError, Reaped, Spawned, reason_from_status
from supervisor_tree.node.launchers.local import LocalLauncher
from supervisor_tree.spec import KILLED, NORMAL, SHUTDOWN, ExitKind, ExitReason, error, shutdown_with
from supervisor_tree.wire import auth, channel
from supervisor_tree.wire.channel import Caller, RemoteCallError, Reply
from supervisor_tree.worker.exits import exit_status
from supervisor_tree.worker.spawn import SpawnRequest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PUPPET = "supervisor_tree.workers.puppet:Puppet"

pytestmark = pytest.mark.timeout(60)


# ---------------------------------------------------------------------------
# Pure mappings: stop reason -> exit code, wait status -> reason


@pytest.mark.parametrize(
    ("reason", "code", "expected"),
    [
        ("normal", 0, NORMAL),
        ("shutdown", 80, SHUTDOWN),
        (("shutdown", "moved"), 81, shutdown_with("moved")),
        (ValueError("bad"), 82, error("ValueError: bad")),
        ("crash", 82, error("crash")),
        ({"x": 1}, 82, error("{'x': 1}")),
        (SHUTDOWN, 80, SHUTDOWN),
    ],
)
def test_exit_status_of_a_stop_reason(reason: object, code: int, expected: ExitReason) -> None:
    assert exit_status(reason) == (code, expected)


def _status_exit(code: int) -> int:
    return code << 8


@pytest.mark.parametrize(
    ("status", "written", "expected"),
    [
        (_status_exit(0), None, NORMAL),
        (_status_exit(80), None, SHUTDOWN),
        (_status_exit(81), shutdown_with("moved"), shutdown_with("moved")),
        (_status_exit(81), None, shutdown_with("unknown")),
        (_status_exit(82), error("boom"), error("boom")),
        (_status_exit(82), None, error("exit code 82 without a reason file")),
        (_status_exit(3), None, ExitReason(ExitKind.EXIT_CODE, "3")),
        (signal.SIGKILL, None, KILLED),
        (signal.SIGSEGV, None, ExitReason(ExitKind.SIGNALLED, "SIGSEGV")),
    ],
)
def test_reason_from_wait_status(tmp_path, status: int, written: ExitReason | None, expected: ExitReason) -> None:
    path = tmp_path / "4242"
    if written is not None:
        path.write_text(json.dumps({"kind": written.kind.value, "detail": written.detail}))
    assert reason_from_status(status, str(path)) == expected
    assert not path.exists()  # the reason file is consumed


# ---------------------------------------------------------------------------
# The test plays the node


@dataclass
class Started:
    req: SpawnRequest
    pid: int

    @property
    def mailbox(self) -> str:
        return self.req.mailbox


class FakeNode:
    def __init__(self, run_dir: str, **launcher_options: object) -> None:
        self.run_dir = run_dir
        self.launcher = LocalLauncher(run_dir, preload=["supervisor_tree.workers.puppet"], sys_path=[REPO], **launcher_options)
        self.launcher.start()
        self.ctx = zmq.Context()
        self.inbound = channel.make_socket(self.ctx, zmq.PULL)
        self.inbound.bind(f"ipc://{run_dir}/inbound")
        self.key = auth.key_for(run_dir)  # made by the launcher's start(), as a node would before it
        self.caller = Caller(self.ctx, run_dir, self.key)
        self.events: list[Spawned | Reaped] = []
        self.notices: list[tuple[object, ...]] = []
        self._gen = 0
        self.wait_standbys(int(launcher_options.get("standby", 2)))  # type: ignore[call-overload]

    def wait_standbys(self, n: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.launcher.standbys_at_hand < n:
            left = deadline - time.monotonic()
            assert left > 0, f"only {self.launcher.standbys_at_hand} of {n} standbys within {timeout} s"
            select.select([self.launcher.fileno()], [], [], left)
            self.events.extend(self.launcher.read_events())  # type: ignore[arg-type]

    def request(self, worker_id: str = "p", start: str | bytes = PUPPET, heartbeat: float = 5.0,
                **args: object) -> SpawnRequest:
        self._gen += 1
        base = f"{self.run_dir}/w/{worker_id}-{self._gen}"
        return SpawnRequest(self._gen, worker_id, self._gen, start, args, self.run_dir,
                            f"ipc://{self.run_dir}/inbound", f"ipc://{base}.mbx", f"ipc://{base}.ctl",
                            heartbeat, (REPO,))

    def spawn(self, **kwargs: object) -> SpawnRequest:
        req = self.request(**kwargs)  # type: ignore[arg-type]
        self.launcher.spawn(req)
        return req

    def start(self, **kwargs: object) -> Started:
        req = self.spawn(**kwargs)
        ready = self.wait_notice(lambda n: n[0] == "ready" and n[2] == req.generation)
        spawned = self.wait_event(lambda e: isinstance(e, Spawned) and e.token == req.token)
        assert ready[3] == spawned.pid
        return Started(req, spawned.pid)

    def wait_notice(self, match: Callable[[tuple[object, ...]], bool], timeout: float = 10.0) -> tuple[object, ...]:
        deadline = time.monotonic() + timeout
        while True:
            for i, notice in enumerate(self.notices):
                if match(notice):
                    return self.notices.pop(i)
            left = deadline - time.monotonic()
            if left <= 0 or not self.inbound.poll(int(left * 1000) + 1):
                raise AssertionError(f"no matching notice within {timeout} s; got {self.notices}")
            self.notices.append(channel.decode_notice(self.key, self.inbound.recv()))

    def notices_within(self, seconds: float, kind: str) -> list[tuple[object, ...]]:
        """Every notice of `kind` that arrives within `seconds` (a deadline wait, not a sleep)."""
        deadline = time.monotonic() + seconds
        got = []
        while (left := deadline - time.monotonic()) > 0:
            if self.inbound.poll(int(left * 1000) + 1):
                notice = channel.decode_notice(self.key, self.inbound.recv())
                if notice[0] == kind:
                    got.append(notice)
                else:
                    self.notices.append(notice)
        return got

    def wait_event(self, match: Callable[[object], bool], timeout: float = 10.0) -> Spawned | Reaped:
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self.events):
                if match(event):
                    return self.events.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching launcher event within {timeout} s; got {self.events}")
            select.select([self.launcher.fileno()], [], [], left)
            self.events.extend(self.launcher.read_events())  # type: ignore[arg-type]

    def wait_until(self, done: Callable[[], bool], timeout: float = 10.0) -> None:
        """Read launcher events (kept in self.events) until `done()`."""
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            assert left > 0, f"not done within {timeout} s; events: {self.events}"
            select.select([self.launcher.fileno()], [], [], left)
            self.events.extend(self.launcher.read_events())  # type: ignore[arg-type]

    def wait_reaped(self, pid: int, timeout: float = 10.0) -> ExitReason:
        event = self.wait_event(lambda e: isinstance(e, Reaped) and e.pid == pid, timeout)
        assert isinstance(event, Reaped)
        return event.reason

    def call(self, started: Started, msg: object, timeout: float = 5.0) -> object:
        return self.caller.call(started.mailbox, msg, timeout)

    def control(self, started: Started, op: str, timeout: float = 5.0, **kwargs: object) -> Reply:
        ref = self.caller.send_call(started.req.control, (op, kwargs))
        reply = self.caller.wait_reply(ref, timeout)
        assert isinstance(reply, Reply)
        return reply

    def close(self) -> None:
        self.launcher.close()
        self.caller.close()
        self.inbound.close()
        self.ctx.term()


@pytest.fixture
def run_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="st-", dir="/tmp")  # short: ipc paths are limited to 107 bytes
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(params=[2, 0], ids=["standby", "cold"])
def node(request: pytest.FixtureRequest, run_dir: str) -> Iterator[FakeNode]:
    fake = FakeNode(run_dir, standby=request.param)
    yield fake
    fake.close()


@pytest.fixture
def warm_node(run_dir: str) -> Iterator[FakeNode]:
    fake = FakeNode(run_dir)
    yield fake
    fake.close()


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """The pids still alive after `timeout` (polls the process table: no event exists for non-children)."""
    deadline = time.monotonic() + timeout
    while (alive := [p for p in pids if not _gone(p)]) and time.monotonic() < deadline:
        time.sleep(0.01)  # re-check: another process's exit, polled by pid until the deadline
    return alive


# ---------------------------------------------------------------------------
# Start, call, cast


def test_ready_then_calls_and_casts(node: FakeNode) -> None:
    started = node.start(color="blue")
    assert node.call(started, {"cmd": "echo", "value": [1, "two"]}) == [1, "two"]
    info = node.call(started, {"cmd": "info"})
    assert info["id"] == "p" and info["generation"] == started.req.generation and info["pid"] == started.pid
    assert info["args"]["color"] == "blue"
    for n in range(3):
        node.caller.send_cast(started.mailbox, {"n": n})
    assert node.call(started, {"cmd": "casts"}) == 3  # the mailbox is FIFO: the casts came first
    assert node.call(started, {"cmd": "count"}) == 4
    node.launcher.kill(started.pid, signal.SIGKILL)
    assert node.wait_reaped(started.pid) == KILLED


def test_standbys_are_activated_and_dead_ones_skipped(run_dir: str) -> None:
    fake = FakeNode(run_dir, standby=2)
    try:
        standbys = set(fake.launcher.standby_pids)
        assert len(standbys) == 2
        fake.wait_until(lambda: {p.pid for p in psutil.Process().children()} >= standbys)  # adopted: we are their parent
        first = fake.start(worker_id="a")
        assert first.pid in standbys  # activated, not forked
        waiting = list(standbys - {first.pid})
        for pid in waiting:
            os.kill(pid, signal.SIGKILL)  # dies while waiting: the next spawn must not use it
        fake.wait_until(lambda: not set(waiting) & set(fake.launcher.standby_pids))  # reaped silently
        assert all(not psutil.pid_exists(p) for p in waiting)
        second = fake.start(worker_id="b")
        assert fake.call(second, {"cmd": "echo", "value": "b"}) == "b"
        assert second.pid not in standbys
        fake.wait_standbys(2)  # the pool is refilled
        for started in (first, second):
            fake.launcher.kill(started.pid, signal.SIGKILL)
            assert fake.wait_reaped(started.pid) == KILLED
        assert not [e for e in fake.events if isinstance(e, Reaped)]  # standbys are never reported
    finally:
        fake.close()


def test_spawned_precedes_reaped_even_for_an_instant_death(node: FakeNode) -> None:
    req = node.spawn(start="workers.does_not_exist:Nope")
    events: list[object] = []
    deadline = time.monotonic() + 10
    while not any(isinstance(e, Reaped) for e in events) and time.monotonic() < deadline:
        select.select([node.launcher.fileno()], [], [], 1.0)
        events.extend(node.launcher.read_events())
    assert isinstance(events[0], Spawned) and events[0].token == req.token
    assert isinstance(events[1], Reaped) and events[1].pid == events[0].pid
    assert events[1].reason.kind is ExitKind.ERROR and "ModuleNotFoundError" in str(events[1].reason)
    failed = node.wait_notice(lambda n: n[0] == "start_failed")
    assert failed[1:4] == ("p", req.generation, events[0].pid)


def test_start_target_shipped_with_cloudpickle(warm_node: FakeNode) -> None:
    class Doubler(Worker):  # local: cloudpickle ships it by value
        def init(self, factor: int = 2) -> None:
            self.factor = factor

        def handle_call(self, msg: object) -> object:
            return msg * self.factor  # type: ignore[operator]

    started = warm_node.start(start=cloudpickle.dumps(Doubler), factor=3)
    assert warm_node.call(started, 14) == 42
    warm_node.launcher.kill(started.pid, signal.SIGKILL)
    warm_node.wait_reaped(started.pid)


# ---------------------------------------------------------------------------
# Crashes and malformed messages


def test_handler_raise_answers_the_error_then_exits_error(node: FakeNode) -> None:
    started = node.start()
    with pytest.raises(RemoteCallError) as info:
        node.call(started, {"cmd": "raise", "message": "boom"})
    assert (info.value.error.type, info.value.error.message) == ("RuntimeError", "boom")
    assert "puppet.py" in info.value.error.traceback
    assert node.wait_reaped(started.pid) == error("RuntimeError: boom")


def test_cast_raise_crashes(warm_node: FakeNode) -> None:
    started = warm_node.start()
    warm_node.caller.send_cast(started.mailbox, {"cmd": "raise", "message": "in a cast"})
    assert warm_node.wait_reaped(started.pid) == error("RuntimeError: in a cast")


def test_malformed_messages_are_answered_or_counted_and_the_worker_goes_on(node: FakeNode) -> None:
    started = node.start()
    raw = channel.make_socket(node.ctx, zmq.PUSH)
    raw.connect(started.mailbox)
    try:
        reply_to = node.caller.reply_to.encode()
        ref = 10**6  # far from the caller's own refs
        seal = node.key.seal  # authentic frames that do not decode
        raw.send(seal(b"C" + ref.to_bytes(8, "little") + len(reply_to).to_bytes(2, "little") + reply_to + b"garbage"))
        reply = node.caller.wait_reply(ref, 5.0)
        assert isinstance(reply, Reply) and not reply.ok
        assert reply.value.type == "MalformedMessage" and reply.value.message.startswith("malformed message: ")
        raw.send(seal(b"Snot a pickle"))  # no reply address: logged and counted
        raw.send(seal(b"Q???"))  # not a frame kind at all
        raw.send(b"Snot a pickle, and no tag")  # not authentic: dropped unread
        raw.send(b"")  # empty
        assert node.call(started, {"cmd": "echo", "value": "still here"}) == "still here"
        stats = node.control(started, "stats").unwrap()
        assert stats["malformed"] == 5 and stats["calls"] == 1 and stats["errors"] == 0
    finally:
        raw.close()
    node.launcher.kill(started.pid, signal.SIGKILL)
    node.wait_reaped(started.pid)


def test_control_ops(warm_node: FakeNode) -> None:
    started = warm_node.start()
    assert warm_node.control(started, "ping").unwrap() == "pong"
    warm_node.call(started, {"cmd": "echo", "value": 1})
    stats = warm_node.control(started, "stats").unwrap()
    assert set(stats) >= {"calls", "casts", "infos", "errors", "malformed", "call_p99_us", "max_batch"}
    assert stats["calls"] == 1
    reply = warm_node.control(started, "reboot")
    assert not reply.ok and "unknown control op 'reboot'" in reply.value.message
    assert warm_node.call(started, {"cmd": "echo", "value": 2}) == 2  # a failed op is not a crash
    warm_node.launcher.kill(started.pid, signal.SIGKILL)
    warm_node.wait_reaped(started.pid)


def test_profile_ops_are_served_between_batches(warm_node: FakeNode) -> None:
    started = warm_node.start()
    assert warm_node.control(started, "profile_start", clock="cpu").ok
    assert warm_node.call(started, {"cmd": "spin", "seconds": 0.2}) > 0
    result = warm_node.control(started, "profile_stop", timeout=20.0).unwrap()
    assert "hot_spin" in result["collapsed"] and "cool_spin" in result["collapsed"]
    warm_node.launcher.kill(started.pid, signal.SIGKILL)
    warm_node.wait_reaped(started.pid)


# ---------------------------------------------------------------------------
# Exit reasons


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("normal", NORMAL),
        ("shutdown", SHUTDOWN),
        (["shutdown", "moved"], shutdown_with("moved")),
        ("crash", error("RuntimeError: crash")),
    ],
)
def test_exit_reason_chosen_by_the_worker(node: FakeNode, reason: object, expected: ExitReason) -> None:
    started = node.start()
    assert node.call(started, {"cmd": "exit", "reason": reason}) == "ok"  # the reply still goes out
    assert node.wait_reaped(started.pid) == expected


def test_exit_by_cast(warm_node: FakeNode) -> None:
    started = warm_node.start()
    warm_node.caller.send_cast(started.mailbox, {"cmd": "exit", "reason": ["shutdown", "by cast"]})
    assert warm_node.wait_reaped(started.pid) == shutdown_with("by cast")


def test_exit_code(node: FakeNode) -> None:
    started = node.start()
    node.caller.send_cast(started.mailbox, {"cmd": "exit_code", "code": 3})
    assert node.wait_reaped(started.pid) == ExitReason(ExitKind.EXIT_CODE, "3")


def test_sigkill_is_killed(node: FakeNode) -> None:
    started = node.start()
    node.launcher.kill(started.pid, signal.SIGKILL)
    assert node.wait_reaped(started.pid) == KILLED


def test_another_fatal_signal(warm_node: FakeNode) -> None:
    started = warm_node.start()
    warm_node.launcher.kill(started.pid, signal.SIGUSR1)
    assert warm_node.wait_reaped(started.pid) == ExitReason(ExitKind.SIGNALLED, "SIGUSR1")


def test_sigterm_stops_a_non_trapping_worker_with_shutdown(node: FakeNode) -> None:
    started = node.start()
    node.launcher.kill(started.pid, signal.SIGTERM)
    assert node.wait_reaped(started.pid) == SHUTDOWN


@pytest.fixture
def mark(tmp_path) -> Iterator[tuple[str, int]]:
    """A FIFO the puppet writes to when its handler starts, and our non-blocking read end."""
    path = str(tmp_path / "mark")
    os.mkfifo(path)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    yield path, fd
    os.close(fd)


def wait_mark(fd: int, timeout: float = 10.0) -> None:
    assert select.select([fd], [], [], timeout)[0], "the handler did not start"


def test_sigterm_interrupts_a_non_trapping_worker_mid_call(warm_node: FakeNode, mark: tuple[str, int]) -> None:
    started = warm_node.start()
    pidfd = os.pidfd_open(started.pid)
    try:
        ref = warm_node.caller.send_call(started.mailbox, {"cmd": "hang", "mark": mark[0]})
        wait_mark(mark[1])
        warm_node.launcher.kill(started.pid, signal.SIGTERM)
        assert warm_node.caller.wait_reply(ref, 10.0, extra_poll_fds=(pidfd,)) == pidfd  # died, no reply
    finally:
        os.close(pidfd)
    assert warm_node.wait_reaped(started.pid) == SHUTDOWN


def test_sigterm_lets_a_trapping_worker_finish_its_call(warm_node: FakeNode, mark: tuple[str, int]) -> None:
    started = warm_node.start(on_shutdown="slow:50")
    ref = warm_node.caller.send_call(started.mailbox, {"cmd": "sleep", "seconds": 0.3, "mark": mark[0]})
    wait_mark(mark[1])
    warm_node.launcher.kill(started.pid, signal.SIGTERM)
    assert warm_node.caller.wait_reply(ref, 10.0) == Reply(ref, True, "ok")
    assert warm_node.wait_reaped(started.pid) == SHUTDOWN


def test_trapping_worker_ignores_the_stop_request_while_it_hangs(warm_node: FakeNode, mark: tuple[str, int]) -> None:
    started = warm_node.start(on_shutdown="slow:0")
    warm_node.caller.send_cast(started.mailbox, {"cmd": "hang", "mark": mark[0]})
    wait_mark(mark[1])
    warm_node.launcher.kill(started.pid, signal.SIGTERM)
    assert wait_gone([started.pid], timeout=0.3) == [started.pid]  # still there: it traps exits
    warm_node.launcher.kill(started.pid, signal.SIGKILL)
    assert warm_node.wait_reaped(started.pid) == KILLED


def test_trapping_worker_may_exit_normal_instead(warm_node: FakeNode) -> None:
    started = warm_node.start(on_shutdown="normal")
    warm_node.launcher.kill(started.pid, signal.SIGTERM)
    assert warm_node.wait_reaped(started.pid) == NORMAL


def test_trapping_worker_may_ignore_the_stop_request(warm_node: FakeNode) -> None:
    started = warm_node.start(on_shutdown="ignore")
    warm_node.launcher.kill(started.pid, signal.SIGTERM)
    warm_node.launcher.kill(started.pid, signal.SIGTERM)
    assert warm_node.call(started, {"cmd": "echo", "value": "ignored"}) == "ignored"
    warm_node.launcher.kill(started.pid, signal.SIGKILL)  # what the supervisor does after its timeout
    assert warm_node.wait_reaped(started.pid) == KILLED


# ---------------------------------------------------------------------------
# Start outcomes


def test_init_failure_reports_start_failed_then_exits_error(node: FakeNode, tmp_path) -> None:
    counter = str(tmp_path / "attempts")
    req = node.spawn(fail_starts=1, counter_file=counter)
    failed = node.wait_notice(lambda n: n[0] == "start_failed")
    assert failed[1:3] == ("p", req.generation) and "start attempt 1 of 1 fails on purpose" in failed[4]
    reason = node.wait_reaped(failed[3])
    assert reason.kind is ExitKind.ERROR and "fails on purpose" in str(reason)
    started = node.start(fail_starts=1, counter_file=counter)  # the second attempt succeeds
    assert node.call(started, {"cmd": "echo", "value": 2}) == 2
    node.launcher.kill(started.pid, signal.SIGKILL)
    node.wait_reaped(started.pid)


def test_ignore(node: FakeNode) -> None:
    req = node.spawn(ignore_start=True)
    ignored = node.wait_notice(lambda n: n[0] == "ignore")
    assert ignored[1:3] == ("p", req.generation)
    assert node.wait_reaped(ignored[3]) == NORMAL


def test_slow_init_is_ready_only_after_init(warm_node: FakeNode) -> None:
    t0 = time.monotonic()
    started = warm_node.start(start_delay=0.2)
    assert time.monotonic() - t0 >= 0.2
    warm_node.launcher.kill(started.pid, signal.SIGKILL)
    warm_node.wait_reaped(started.pid)


def test_ignore_constant_is_exported() -> None:
    assert repr(IGNORE) == "IGNORE"


# ---------------------------------------------------------------------------
# Heartbeats


def test_heartbeats_arrive_and_stop_when_the_worker_is_stopped(warm_node: FakeNode) -> None:
    started = warm_node.start(heartbeat=0.05)
    warm_node.call(started, {"cmd": "echo", "value": 1})
    beats = warm_node.notices_within(0.5, "hb")
    assert len(beats) >= 4
    kind, wid, gen, pid, stats = beats[-1]
    assert (wid, gen, pid) == ("p", started.req.generation, started.pid)
    assert {"calls", "casts", "infos", "errors", "malformed", "call_p99_us", "max_batch"} <= set(stats)
    os.kill(started.pid, signal.SIGSTOP)
    try:
        warm_node.notices_within(0.2, "hb")  # beats already on their way
        assert warm_node.notices_within(0.5, "hb") == []
        os.kill(started.pid, signal.SIGCONT)
        assert warm_node.notices_within(0.5, "hb")
    finally:
        warm_node.launcher.kill(started.pid, signal.SIGKILL)
        os.kill(started.pid, signal.SIGCONT)
    assert warm_node.wait_reaped(started.pid) == KILLED


# ---------------------------------------------------------------------------
# No orphans


def test_start_refuses_once_a_zmq_context_exists(run_dir: str) -> None:
    ctx = zmq.Context()
    try:
        with pytest.raises(LauncherError, match="before this process creates any zmq.Context"):
            LocalLauncher(run_dir).start()
    finally:
        ctx.term()


def test_preload_failure_is_reported_by_start(run_dir: str) -> None:
    launcher = LocalLauncher(run_dir, preload=["workers.no_such_module"])
    with pytest.raises(LauncherError, match="preloading failed: ModuleNotFoundError"):
        launcher.start()


def test_close_leaves_no_process_behind(run_dir: str) -> None:
    fake = FakeNode(run_dir)
    try:
        pids = [fake.start(worker_id=f"w{n}").pid for n in range(3)]
        hung = fake.start(worker_id="hung")
        os.kill(hung.pid, signal.SIGSTOP)
        pids.append(hung.pid)
        server = fake.launcher.pid
        assert server is not None
        pids += fake.launcher.standby_pids
    finally:
        fake.close()
    assert wait_gone(pids + [server], timeout=2.0) == []
    assert os.listdir(os.path.join(run_dir, "reasons")) == []
    assert os.listdir(os.path.join(run_dir, "w")) == []  # no socket file outlives its worker or standby


PARENT_SCRIPT = textwrap.dedent(
    """
    import os, sys, select
    sys.path.insert(0, {repo!r})
    from supervisor_tree.node.launchers.base import Spawned
    from supervisor_tree.node.launchers.local import LocalLauncher
    from supervisor_tree.worker.spawn import SpawnRequest
    run = {run!r}
    launcher = LocalLauncher(run, preload=["supervisor_tree.workers.puppet"])
    launcher.start()
    pids = []
    for n in range(3):
        base = f"{{run}}/w/p{{n}}-1"
        launcher.spawn(SpawnRequest(n, f"p{{n}}", 1, "supervisor_tree.workers.puppet:Puppet", {{}}, run, f"ipc://{{run}}/inbound",
                                    f"ipc://{{base}}.mbx", f"ipc://{{base}}.ctl", 5.0))
    while len(pids) < 3:
        select.select([launcher.fileno()], [], [])
        pids += [e.pid for e in launcher.read_events() if isinstance(e, Spawned)]
    print(launcher.pid, *pids, flush=True)
    sys.stdin.read()  # until killed
    """
)


@pytest.mark.timeout(30)
def test_sigkill_of_the_node_kills_everything(run_dir: str) -> None:
    script = PARENT_SCRIPT.format(repo=REPO, run=run_dir)
    parent = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = parent.stdout.readline()  # type: ignore[union-attr]
        pids = [int(p) for p in line.split()]
        assert len(pids) == 4, line
        descendants = [p.pid for p in psutil.Process(parent.pid).children(recursive=True)]
        assert set(pids) <= set(descendants)  # the fork server and its workers (plus standbys)
        parent.kill()
        parent.wait(5)
        assert wait_gone(descendants, timeout=2.0) == []
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(5)
        if parent.stdin:
            parent.stdin.close()
        if parent.stdout:
            parent.stdout.close()
