"""Bad input straight to a running tree's sockets, and the other ways a user could take it down.

Each test is a case of issue 7 as a user met it: the node and its workers keep serving
whatever arrives on their sockets; bytes without the run's key are never unpickled; run
dirs, logs, `check` and usage errors behave as the README says.  Real nodes, real sockets.
"""

from __future__ import annotations

import json
import os
import pickle
import stat
import struct
from pathlib import Path

import pytest
import zmq
from nodes import Tree, started, supervise, wait_for, write_config

from supervisor_tree.wire import auth
from supervisor_tree.wire.requests import decode_answer, encode_request

pytestmark = pytest.mark.timeout(120)

PUPPET = "supervisor_tree.workers.puppet:Puppet"


def puppet_tree(*, logs: str = "", intensity: int = 5) -> str:
    node = f"[node]\nheartbeat = {{ interval = 0.2, misses = 5 }}\n{logs}\n"
    return node + f'[tree]\nintensity = {intensity}\nperiod = 10\n\n[[tree.children]]\nid = "p"\nstart = "{PUPPET}"\n'


@pytest.fixture
def tree(tmp_path: Path):  # type: ignore[no-untyped-def]
    t = started(write_config(tmp_path, puppet_tree()))
    yield t
    t.stop()


class RunsCode:
    """A pickle that would run a shell command when loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def send(endpoint: str, *frames: bytes) -> None:
    """Raw frames to a PULL socket; returns once they have left (the context's term waits for them)."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.linger = 5000
    sock.connect(endpoint)
    for frame in frames:
        sock.send(frame)
    sock.close()
    ctx.term()


def ask_control(t: Tree, frame: bytes) -> bytes:
    """One raw request on the node's control socket; its raw answer."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(f"ipc://{t.run_dir}/control")
    try:
        sock.send(frame)
        assert sock.poll(10_000), "the node did not answer"
        return sock.recv()
    finally:
        sock.close()
        ctx.term()


def echo_works(t: Tree, value: object = "still here") -> bool:
    return t.client.call("p", {"cmd": "echo", "value": value}) == value


def dropped(t: Tree) -> dict[str, dict[str, int]]:
    return t.client.status()["node"]["dropped_frames"]  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------
# The node's control socket


def test_a_control_request_of_the_wrong_shape_is_refused_and_the_node_serves_on(tree: Tree) -> None:
    key = auth.read_key(tree.run_dir)
    answer = decode_answer(key, ask_control(tree, pickle.dumps((1, ["status"], {}))))  # the case
    assert not answer.ok and "unauthenticated control request refused" in str(answer.value)
    answer = decode_answer(key, ask_control(tree, key.seal(b'[2, ["status"], {}]')))
    assert (answer.req_id, answer.ok) == (2, False) and "operation must be a string" in str(answer.value)
    answer = decode_answer(key, ask_control(tree, encode_request(key, 3, "terminate_child", {"target": [1]})))
    assert (answer.req_id, answer.ok) == (3, False)
    assert "argument 'target' must be str or int; got list [1]" in str(answer.value)
    answer = decode_answer(key, ask_control(tree, encode_request(key, 4, "status", {"verbose": True})))
    assert "status: unknown argument 'verbose'" in str(answer.value)
    assert tree.running() and echo_works(tree)
    assert dropped(tree)["control"] == {"total": 4, "unauthenticated": 1, "malformed": 3}


def test_a_truncated_notice_on_inbound_does_not_stop_the_node(tree: Tree) -> None:
    key = auth.read_key(tree.run_dir)
    send(f"ipc://{tree.run_dir}/inbound", pickle.dumps(("hb",)), key.seal(pickle.dumps(("hb",))),
         key.seal(pickle.dumps(("ready", ["p"], 1, 2))), key.seal(b"not a pickle"), b"")
    wait_for(lambda: dropped(tree)["inbound"]["total"] == 5, 10, "the node to count five bad notices")
    assert dropped(tree)["inbound"] == {"total": 5, "unauthenticated": 2, "malformed": 3}
    assert tree.running() and echo_works(tree)


# ---------------------------------------------------------------------------
# A worker's mailbox and control socket


def test_empty_frames_to_a_mailbox_neither_crash_nor_restart_the_worker(tree: Tree) -> None:
    target = tree.client.resolve("p")
    send(target.mailbox, *[b""] * 20)  # on main: IndexError in the loop, and 20 of them used up the intensity
    send(target.control, b"", b"x")
    wait_for(lambda: tree.client.control_worker("p", "stats", {})["malformed"] == 22, 10, "the worker to count them")
    assert tree.client.resolve("p").generation == 1 and tree.pid_of("p") == target.pid
    assert echo_works(tree)
    assert not [e for e in tree.events() if e["event"] in ("exited", "child_terminated")]


# ---------------------------------------------------------------------------
# A pickle that would run code, on every socket, without the key


def _call_frame(reply_to: str, payload: bytes) -> bytes:
    rt = reply_to.encode()
    return b"C" + struct.pack("<QH", 10**6, len(rt)) + rt + payload


@pytest.mark.parametrize("socket_name", ["control", "inbound", "mailbox cast", "mailbox call", "worker control",
                                         "replies"])
@pytest.mark.parametrize("keyed", ["no key", "another run's key"])
def test_a_pickle_that_would_run_code_runs_nothing(tree: Tree, tmp_path: Path, socket_name: str, keyed: str) -> None:
    marker = tmp_path / "ran"
    evil = pickle.dumps(RunsCode(marker), protocol=5)
    seal = auth.FrameKey(os.urandom(32)).seal if keyed == "another run's key" else (lambda body: body)
    target = tree.client.resolve("p")
    caller = tree.client.caller
    if socket_name == "control":
        ask_control(tree, seal(evil))
    elif socket_name == "inbound":
        send(f"ipc://{tree.run_dir}/inbound", seal(evil))
    elif socket_name == "mailbox cast":
        send(target.mailbox, seal(b"S" + evil))
    elif socket_name == "mailbox call":
        send(target.mailbox, seal(_call_frame(caller.reply_to, evil)))
    elif socket_name == "worker control":
        send(target.control, seal(_call_frame(caller.reply_to, evil)))
    else:  # a reply to this client's own calls: the client must not unpickle it either
        send(caller.reply_to, seal(b"R" + struct.pack("<Q", 1) + b"\x00" + evil))
    assert echo_works(tree)  # served after it (and the client read its reply socket)
    where = {"control": ("control", None), "inbound": ("inbound", None)}.get(socket_name)
    if where is not None:
        wait_for(lambda: dropped(tree)[where[0]]["total"] == 1, 10, f"the node to drop the frame on {socket_name}")
    elif socket_name == "replies":  # the client reads its reply socket while it waits for a reply
        wait_for(lambda: echo_works(tree) and caller.dropped.counts["unauthenticated"] == 1, 10, "the client to drop it")
    else:
        wait_for(lambda: tree.client.control_worker("p", "stats", {})["malformed"] == 1, 10, "the worker to drop it")
    assert not marker.exists()
    assert tree.running() and tree.client.resolve("p").generation == 1


def test_a_client_follows_the_new_key_of_a_restarted_node(tree: Tree) -> None:
    client = tree.client
    before = client.key.fingerprint
    assert echo_works(tree)
    assert tree.cli("stop").returncode == 0
    assert not (tree.run_dir / "key").exists()  # the node takes its key with it
    assert tree.start().returncode == 0
    assert client.status()["tree"]["children"][0]["generation"] == 1  # read RUN/key again, once
    assert client.key.fingerprint != before and echo_works(tree)


# ---------------------------------------------------------------------------
# Run dirs


def test_a_run_dir_inside_a_0755_folder_leaves_the_folder_alone(tmp_path: Path) -> None:
    folder = tmp_path / "shared"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)
    config = write_config(tmp_path, puppet_tree())
    run_dir = folder / "run"
    started = supervise("start", str(config), "--detach", "--run-dir", str(run_dir))
    try:
        assert started.returncode == 0, started.stderr
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755  # on main: chmodded to 0700
        assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
        assert stat.S_IMODE((run_dir / "key").stat().st_mode) == 0o600
    finally:
        supervise("stop", "--run-dir", str(run_dir))


def test_missing_parents_of_a_run_dir_get_the_users_umask(tmp_path: Path) -> None:
    config = write_config(tmp_path, puppet_tree())
    run_dir = tmp_path / "a" / "b" / "run"
    old = os.umask(0o022)
    try:
        started = supervise("start", str(config), "--detach", "--run-dir", str(run_dir))
    finally:
        os.umask(old)
    try:
        assert started.returncode == 0, started.stderr
        assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o755
        assert stat.S_IMODE((tmp_path / "a" / "b").stat().st_mode) == 0o755
        assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
    finally:
        supervise("stop", "--run-dir", str(run_dir))


@pytest.mark.parametrize(("owner", "mode", "says"), [
    (65534, 0o700, "owned by uid 65534, not by you"),
    (None, 0o777, "mode 0777 lets others write to it"),
])
def test_a_run_dir_of_another_user_or_open_to_others_is_refused(tmp_path: Path, owner: int | None, mode: int,
                                                                says: str) -> None:
    run_dir = tmp_path / "theirs"
    run_dir.mkdir()
    os.chmod(run_dir, mode)
    if owner is not None:
        if os.getuid() != 0:
            pytest.skip("giving a directory to another user needs root")
        os.chown(run_dir, owner, -1)
    config = write_config(tmp_path, puppet_tree())
    for args in (("start", str(config), "--detach"), ("start", str(config)), ("status",)):
        result = supervise(*args, "--run-dir", str(run_dir))
        assert result.returncode == 2, (args, result.stderr)
        assert says in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert stat.S_IMODE(run_dir.stat().st_mode) == mode and not (run_dir / "key").exists()


# ---------------------------------------------------------------------------
# Bounded logs


def test_events_and_node_log_rotate_and_events_reads_across_the_rotation(tmp_path: Path) -> None:
    t = Tree(write_config(tmp_path, puppet_tree(logs="logs = { max_bytes = 4096, backups = 2 }", intensity=100)))
    try:
        assert t.start().returncode == 0
        for generation in range(1, 17):
            assert t.client.call("p", {"cmd": "exit", "reason": "crash"}) == "ok"
            assert t.client.resolve("p", after_generation=generation, timeout=20).generation == generation + 1
        events_files = sorted(p.name for p in t.run_dir.glob("events.jsonl*"))
        assert events_files == ["events.jsonl", "events.jsonl.1", "events.jsonl.2"]  # and no .3: two backups
        assert all(p.stat().st_size <= 4096 + 1024 for p in t.run_dir.glob("events.jsonl*"))
        wait_for(lambda: (t.run_dir / "node.log.1").exists(), 10, "node.log to rotate (checked once a second)")
        shown = t.cli("events", "--json")
        assert shown.returncode == 0, shown.stderr
        records = [json.loads(line) for line in shown.stdout.splitlines()]
        seqs = [r["seq"] for r in records]
        assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))  # oldest first, across the files
        assert len(records) > len(t.events())  # t.events() reads events.jsonl alone
        assert records[-1]["event"] == "started" and records[-1]["generation"] == 17
    finally:
        t.stop()


# ---------------------------------------------------------------------------
# check and usage


@pytest.mark.parametrize(("child", "says"), [
    ('start = "time:sleep"', 'start "time:sleep": time.sleep is a builtin function, not a Worker subclass'),
    ('start = "pathlib:Path"', "pathlib.Path is a class but not a Worker subclass"),
    ('start = "supervisor_tree.workers.session:Session"\nargs = { tll = 5 }', 'takes no "tll" (did you mean "ttl"?)'),
    ('start = "supervisor_tree.workers.queue:Queue"\nargs = { capacity = 5, colour = "red" }', 'takes no "colour"'),
])
def test_check_refuses_what_would_only_fail_at_start(tmp_path: Path, child: str, says: str) -> None:
    config = write_config(tmp_path, f'[tree]\n[[tree.children]]\nid = "w"\n{child}\n')
    result = supervise("check", str(config))
    assert result.returncode == 2 and says in result.stderr, result.stderr


def test_check_names_the_init_arguments_that_have_no_default(tmp_path: Path) -> None:
    (tmp_path / "needy.py").write_text("from supervisor_tree import Worker\n\nclass Needy(Worker):\n"
                                       "    def init(self, db, port=5432):\n        self.db = db\n")
    config = write_config(tmp_path, '[tree]\n[[tree.children]]\nid = "w"\nstart = "needy:Needy"\n')
    result = supervise("check", str(config))
    assert result.returncode == 2 and 'args: init of needy:Needy needs "db" (no default)' in result.stderr
    ok = write_config(tmp_path, '[tree]\n[[tree.children]]\nid = "w"\nstart = "needy:Needy"\nargs = { db = "x" }\n',
                      name="ok.toml")
    assert supervise("check", str(ok)).returncode == 0


@pytest.mark.parametrize("args", [("kill", "p", "--signal", "FOO"), ("call", "p", '"x"', "--timeout", "-1"),
                                  ("stop", "--timeout", "-1")])
def test_usage_errors_exit_2_before_the_node_is_asked(tree: Tree, args: tuple[str, ...]) -> None:
    result = tree.cli(*args)
    assert result.returncode == 2, result.stderr
    assert tree.running() and echo_works(tree)


def test_start_with_a_negative_timeout_is_usage(tmp_path: Path) -> None:
    config = write_config(tmp_path, puppet_tree())
    result = supervise("start", str(config), "--detach", "--timeout", "-1", "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 2 and "--timeout" in result.stderr
    assert not (tmp_path / "run").exists()
