"""OTP scenarios (otp-scenarios.md) end to end: a real node, puppet worker processes, real signals.

Each test names the scenario it replays.  The node is started with the CLI as a
user would; faults are injected by calling the puppet or signalling its process.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import psutil
import pytest
from nodes import Tree, wait_for

from supervisor_tree.client import CalleeExited, CallError

pytestmark = pytest.mark.timeout(180)


def child(id: str, restart: str = "permanent", shutdown: object = 1000, **args: Any) -> str:
    lines = ["[[tree.children]]", f'id = "{id}"', 'start = "supervisor_tree.workers.puppet:Puppet"', f'restart = "{restart}"']
    lines.append(f"shutdown = {json.dumps(shutdown)}")
    if args:
        lines.append("args = { " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in args.items()) + " }")
    return "\n".join(lines)


def tree_toml(*children: str, strategy: str = "one_for_one", intensity: int = 10, period: int = 10, auto_shutdown: str = "never") -> str:
    head = f'[node]\nheartbeat = {{ interval = 0.2, misses = 5 }}\n\n[tree]\nstrategy = "{strategy}"\nintensity = {intensity}\nperiod = {period}\nauto_shutdown = "{auto_shutdown}"\n\n'
    return head + "\n\n".join(children) + "\n"


def crash(t: Tree, worker: str, reason: object = "crash") -> None:
    """The puppet stops itself with `reason` after replying."""
    assert t.client.call(worker, {"cmd": "exit", "reason": reason}) == "ok"


def test_s01_one_for_one_restarts_only_the_crashed_child(start_tree) -> None:  # type: ignore[no-untyped-def]
    t = start_tree(tree_toml(child("a"), child("b"), child("c")))
    assert t.children() == ["c=running(1)", "b=running(1)", "a=running(1)"]
    crash(t, "b")
    t.wait_started("b", 2)
    assert t.trace()[-3:] == ["exited b#1 {error,RuntimeError: crash}", "child_terminated b#1 {error,RuntimeError: crash}", "started b#2"]
    assert t.children() == ["c=running(1)", "b=running(2)", "a=running(1)"]
    assert t.client.count_children() == {"specs": 3, "active": 3, "supervisors": 0, "workers": 3}


def test_s02_one_for_all_stops_siblings_newest_first_then_starts_all(start_tree) -> None:  # type: ignore[no-untyped-def]
    t = start_tree(tree_toml(child("a"), child("b"), child("c"), strategy="one_for_all"))
    crash(t, "b")
    t.wait_started("c", 2)
    tail = t.trace()[-7:]
    assert tail == [
        "exited b#1 {error,RuntimeError: crash}",
        "child_terminated b#1 {error,RuntimeError: crash}",
        "exited c#1 shutdown",
        "exited a#1 shutdown",
        "started a#2",
        "started b#2",
        "started c#2",
    ]


def test_s03_rest_for_one_restarts_later_children_and_drops_temporary(start_tree) -> None:  # type: ignore[no-untyped-def]
    t = start_tree(tree_toml(child("a"), child("b"), child("tmp", restart="temporary"), child("d"), strategy="rest_for_one"))
    crash(t, "b")
    t.wait_started("d", 2)
    assert t.trace()[-6:] == [
        "exited b#1 {error,RuntimeError: crash}",
        "child_terminated b#1 {error,RuntimeError: crash}",
        "exited d#1 shutdown",
        "exited tmp#1 shutdown",
        "started b#2",
        "started d#2",
    ]
    assert t.children() == ["d=running(2)", "b=running(2)", "a=running(1)"]


def test_s04_simple_one_for_one_restarts_an_instance_with_its_own_args(start_tree, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    text = tree_toml(child("dyn"), strategy="simple_one_for_one")
    t = start_tree(text)
    keys = []
    for name in ("x1", "x2", "x3"):
        r = t.client.start_child("root", args={"name": name})
        assert r["ok"], r
        keys.append(next(c["key"] for c in t.client.which_children() if c["pid"] == r["pid"]))
    x2 = keys[1]
    crash(t, x2)
    t.wait_started(x2, 2)
    assert t.client.call(x2, {"cmd": "info"})["args"]["name"] == "x2"
    assert t.client.count_children() == {"specs": 1, "active": 3, "supervisors": 0, "workers": 3}


@pytest.mark.parametrize(
    ("restart", "reason", "restarted", "kept"),
    [
        ("permanent", "normal", True, True),  # S05
        ("permanent", ["shutdown", "done"], True, True),  # S05
        ("transient", "normal", False, True),  # S06
        ("transient", "shutdown", False, True),  # S06
        ("transient", "crash", True, True),  # S07
        ("temporary", "crash", False, False),  # S08
        ("temporary", "normal", False, False),  # S08
    ],
)
def test_s05_to_s08_restart_type_decides(start_tree, restart: str, reason: object, restarted: bool, kept: bool) -> None:  # type: ignore[no-untyped-def]
    t = start_tree(tree_toml(child("a"), child("w", restart=restart), intensity=0 if not restarted else 10))
    crash(t, "w", reason)
    if restarted:
        t.wait_started("w", 2)
    else:
        t.wait_event(lambda e: e["event"] == "exited" and e["child"] == "w", what="w's exit")
        t.client.control("ping")  # the exit has been handled once the node answers after it
    state = {c["key"]: c["state"] for c in t.client.which_children()}
    if kept:
        assert state["w"] == ("running" if restarted else "not_running")
    else:
        assert "w" not in state
    assert t.running(), "a supervisor with intensity 0 must survive exits that need no restart"
    reported = any(e["event"] == "child_terminated" and e["child"] == "w" for e in t.events())
    assert reported == (restarted or restart == "temporary" and reason == "crash")


def test_s07_transient_killed_from_outside_is_restarted(start_tree) -> None:  # type: ignore[no-untyped-def]
    t = start_tree(tree_toml(child("t1", restart="transient")))
    pid = t.pid_of("t1")
    os.kill(pid, signal.SIGKILL)
    t.wait_started("t1", 2)
    assert "exited t1#1 killed" in t.trace()


def test_s11_intensity_exceeded_stops_children_and_the_node(start_tree) -> None:  # type: ignore[no-untyped-def]
    t = start_tree(tree_toml(child("a"), child("b"), child("c"), intensity=2, period=5))
    for gen in (1, 2):
        crash(t, "b")
        t.wait_started("b", gen + 1)
    crash(t, "b")
    wait_for(lambda: not t.running(), 30, "the node to stop after the root gave up")
    tail = t.trace()[-6:]
    assert tail[:2] == ["exited b#3 {error,RuntimeError: crash}", "child_terminated b#3 {error,RuntimeError: crash}"]
    assert tail[2].startswith("reached_max_restart_intensity")
    assert tail[3:] == ["exited c#1 shutdown", "exited a#1 shutdown", "supervisor_exited root shutdown"]
    assert any(e["event"] == "reached_max_restart_intensity" for e in t.events())


def test_s16_child_supervisor_that_gives_up_is_restarted_by_its_parent(start_tree, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    text = (
        '[tree]\nstrategy = "one_for_one"\nintensity = 1\nperiod = 5\n\n'
        '[[tree.children]]\nid = "mid"\ntype = "supervisor"\nstrategy = "one_for_one"\nintensity = 1\nperiod = 5\n\n'
        '[[tree.children.children]]\nid = "w1"\nstart = "supervisor_tree.workers.puppet:Puppet"\nshutdown = 1000\n\n'
        '[[tree.children.children]]\nid = "w2"\nstart = "supervisor_tree.workers.puppet:Puppet"\nshutdown = 1000\n\n'
        '[[tree.children]]\nid = "x"\nstart = "supervisor_tree.workers.puppet:Puppet"\nshutdown = 1000\n'
    )
    t = start_tree(text)
    crash(t, "w1")
    t.wait_started("w1", 2)
    crash(t, "w1")
    t.wait_started("w2", 2)
    t.wait_started("w1", 3)
    trace = t.trace()
    assert trace.index("exited w2#1 shutdown") < trace.index("started w1#3") < trace.index("started w2#2")
    assert "supervisor_exited root/mid shutdown" in trace
    assert t.client.call("x", {"cmd": "info"})["generation"] == 1
    assert t.running()


def test_s19_stop_walks_children_newest_first(start_tree) -> None:  # type: ignore[no-untyped-def]
    t = start_tree(tree_toml(child("a"), child("b"), child("c"), child("d")))
    r = t.client.start_child("root", spec={"id": "e", "start": "supervisor_tree.workers.puppet:Puppet", "shutdown": 1000})
    assert r["ok"], r
    result = t.cli("stop")
    assert result.returncode == 0, result.stderr
    exits = [line for line in t.trace() if line.startswith("exited")]
    assert exits == [f"exited {c}#1 shutdown" for c in "edcba"]


def test_s21_shutdown_values(start_tree) -> None:  # type: ignore[no-untyped-def]
    t = start_tree(
        tree_toml(
            child("a", shutdown=1000),
            child("b", shutdown=500, on_shutdown="ignore"),
            child("c", shutdown=1000, on_shutdown="slow:200"),
            child("d", shutdown="brutal_kill", on_shutdown="ignore"),
            child("e", shutdown="infinity", on_shutdown="slow:300"),
            child("f", shutdown=1000, on_shutdown="normal"),
        )
    )
    assert t.cli("stop").returncode == 0
    trace = t.trace()
    exits = [line for line in trace if line.startswith(("exited", "shutdown_error"))]
    assert exits == [
        "exited f#1 normal",
        "shutdown_error f#1 normal",
        "exited e#1 shutdown",
        "exited d#1 killed",
        "exited c#1 shutdown",
        "exited b#1 killed",
        "shutdown_error b#1 killed",
        "exited a#1 shutdown",
    ]


def test_s23_start_failure_during_init_fails_the_start(start_tree, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    counter = tmp_path / "b.count"
    t = start_tree(tree_toml(child("a"), child("b", fail_starts=1, counter_file=str(counter)), child("c")), expect_ok=False)
    assert t.started is not None and t.started.returncode == 1
    assert "failed_to_start_child" in t.started.stderr and "b" in t.started.stderr
    trace = t.trace()
    assert trace[0] == "started a#1"
    assert "exited a#1 shutdown" in trace
    assert not any(line.startswith("started c") for line in trace)


def test_s25_failed_restart_is_retried_until_it_starts(start_tree, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    counter = tmp_path / "b.count"
    counter.write_text("100")  # attempt 101 > 3: the first start succeeds
    t = start_tree(tree_toml(child("a"), child("b", fail_starts=3, counter_file=str(counter)), intensity=5))
    counter.write_text("0")  # the next three start attempts fail, the fourth succeeds
    crash(t, "b")
    t.wait_started("b", 5, timeout=30)
    errors = [e for e in t.events() if e["event"] == "start_error" and e["child"] == "b"]
    assert len(errors) == 3
    assert t.client.call("a", {"cmd": "info"})["generation"] == 1


def test_s29_dynamic_api_results(start_tree) -> None:  # type: ignore[no-untyped-def]
    t = start_tree(tree_toml(child("a")))
    spec = {"id": "b", "start": "supervisor_tree.workers.puppet:Puppet", "shutdown": 1000}
    first = t.client.start_child("root", spec=spec)
    assert first["ok"]
    again = t.client.start_child("root", spec=spec)
    assert again["error"] == "already_started" and again["pid"] == first["pid"]
    assert t.client.terminate_child("b") == {"ok": True, "pid": None}
    assert t.client.terminate_child("b")["ok"]
    assert t.client.start_child("root", spec=spec)["error"] == "already_present"
    assert t.client.restart_child("b")["ok"]
    assert t.client.restart_child("b")["error"] == "running"
    assert t.client.delete_child("b")["error"] == "running"
    assert t.client.terminate_child("b")["ok"]
    assert t.client.delete_child("b")["ok"]
    assert t.client.restart_child("b")["error"] == "not_found"
    assert t.client.terminate_child("zzz")["error"] == "not_found"
    assert t.children() == ["a=running(1)"]


def test_s32_significant_child_finishing_shuts_the_supervisor_down(start_tree) -> None:  # type: ignore[no-untyped-def]
    text = tree_toml(child("a"), child("s", restart="transient") + "\nsignificant = true", child("c"), auto_shutdown="any_significant")
    t = start_tree(text)
    crash(t, "s", "normal")
    wait_for(lambda: not t.running(), 30, "auto shutdown to stop the node")
    exits = [line for line in t.trace() if line.startswith("exited")]
    assert exits == ["exited s#1 normal", "exited c#1 shutdown", "exited a#1 shutdown"]
    assert not any(e["event"] == "child_terminated" for e in t.events())


# ---------------------------------------------------------------------- beyond the trace tables


def test_sigstopped_worker_is_detected_by_missed_heartbeats_and_restarted(start_tree) -> None:  # type: ignore[no-untyped-def]
    t = start_tree(tree_toml(child("a")))
    os.kill(t.pid_of("a"), signal.SIGSTOP)
    t.wait_started("a", 2, timeout=30)
    assert any(line.startswith(("exited a#1 hung", "exited a#1 {hung")) for line in t.trace()), t.trace()


def test_handler_that_raises_answers_the_caller_then_restarts(start_tree) -> None:  # type: ignore[no-untyped-def]
    t = start_tree(tree_toml(child("a")))
    with pytest.raises(CallError, match="boom"):
        t.client.call("a", {"cmd": "raise", "message": "boom"})
    t.wait_started("a", 2)
    assert t.client.call("a", {"cmd": "echo", "value": 7}) == 7


def test_call_to_a_restarting_worker_waits_for_the_new_incarnation(start_tree) -> None:  # type: ignore[no-untyped-def]
    t = start_tree(tree_toml(child("slow", start_delay=0.5)))
    t.client.call("slow", {"cmd": "echo", "value": 1})
    pid = t.pid_of("slow")
    os.kill(pid, signal.SIGKILL)
    # The node has handled the death (so the process is reaped, not a dying thread group):
    # from here on the worker is restarting, and a call must wait for the new incarnation.
    t.wait_event(lambda e: e["event"] == "exited" and e["child"] == "slow", what="slow#1's exit")
    assert t.client.call("slow", {"cmd": "echo", "value": 2}, timeout=20) == 2
    assert t.client.call("slow", {"cmd": "info"})["generation"] == 2


def test_callee_dying_mid_call_raises_at_once(start_tree) -> None:  # type: ignore[no-untyped-def]
    t = start_tree(tree_toml(child("a")))
    with pytest.raises(CalleeExited, match="exited before replying"):
        t.client.call("a", {"cmd": "exit_code", "code": 3}, timeout=30)
    t.wait_started("a", 2)
    assert "exited a#1 {exit_code,3}" in t.trace()


def test_no_orphans_when_the_node_is_killed(start_tree) -> None:  # type: ignore[no-untyped-def]
    t = start_tree(tree_toml(child("a"), child("b"), child("c")))
    pids = [t.pid_of(w) for w in "abc"]
    node = t.node_pid()
    assert node is not None
    os.kill(node, signal.SIGKILL)
    wait_for(lambda: not any(alive(p) for p in pids), 2.0, "every worker to die with the node")


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_s24_ignore_at_start_keeps_a_permanent_spec_not_running(start_tree) -> None:  # type: ignore[no-untyped-def]
    t = start_tree(tree_toml(child("a"), child("quiet", ignore_start=True), child("tmp", restart="temporary", ignore_start=True)))
    assert t.children() == ["quiet=not_running", "a=running(1)"]
    assert t.client.restart_child("quiet")["ok"]  # ignore again: ok with no pid
    assert t.children() == ["quiet=not_running", "a=running(1)"]


class OnlyInTheTestProcess:
    """Unpicklable in a worker: its module is not importable there."""


def test_malformed_message_is_answered_and_the_worker_keeps_running(start_tree) -> None:  # type: ignore[no-untyped-def]
    t = start_tree(tree_toml(child("a")))
    with pytest.raises(CallError, match="malformed message"):
        t.client.call("a", OnlyInTheTestProcess())
    assert t.client.call("a", {"cmd": "info"})["generation"] == 1
    assert not any(e["event"] == "exited" for e in t.events())


RELAY = '''
from supervisor_tree import Worker

class Relay(Worker):
    def handle_call(self, msg):
        target, inner = msg
        return ["via", self.id, self.call(target, inner)]
'''


def test_workers_call_each_other_by_id(start_tree, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "relay.py").write_text(RELAY)
    text = tree_toml(child("a")) + '\n[[tree.children]]\nid = "relay"\nstart = "relay:Relay"\n'
    t = start_tree(text)
    assert t.client.call("relay", ["a", {"cmd": "echo", "value": 5}]) == ["via", "relay", 5]
    os.kill(t.pid_of("a"), signal.SIGKILL)
    t.wait_started("a", 2)
    assert t.client.call("relay", ["a", {"cmd": "info"}])[2]["generation"] == 2
