"""`supervise reload`: a changed config or changed code applied to a running tree, touching only what changed."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest
from nodes import Tree, wait_for, write_config

from supervisor_tree.client import Client, ClientError

pytestmark = pytest.mark.timeout(180)

APP = '''
import os
from supervisor_tree import Worker

VERSION = "v1"


class Echo(Worker):
    def init(self, tag="-", fail=False):
        if fail:
            raise RuntimeError("this spec refuses to start")
        self.tag = tag

    def handle_call(self, msg):
        return {"tag": self.tag, "version": VERSION, "pid": os.getpid()}
'''

OTHER = '''
from supervisor_tree import Worker


class Other(Worker):
    def handle_call(self, msg):
        return "other"
'''


def child(id: str, start: str = "relapp:Echo", prefix: str = "tree.children", **args: object) -> str:
    text = f'[[{prefix}]]\nid = "{id}"\nstart = "{start}"\nshutdown = 2000\n'
    if args:
        text += "args = { " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in args.items()) + " }\n"
    return text


def sup(id: str, strategy: str, intensity: int = 5) -> str:
    return f'[[tree.children]]\nid = "{id}"\ntype = "supervisor"\nstrategy = "{strategy}"\nintensity = {intensity}\nperiod = 10\n'


HEAD = '[tree]\nstrategy = "one_for_one"\nintensity = 5\nperiod = 10\n\n'
NESTED = "tree.children.children"


def config(core: str, edge_intensity: int = 5, tail: str = "") -> str:
    """root: core (rest_for_one), edge (one_for_all: two workers of another module), solo."""
    return (HEAD + sup("core", "rest_for_one") + core + sup("edge", "one_for_all", edge_intensity)
            + child("e1", "other:Other", NESTED) + child("e2", "other:Other", NESTED) + child("solo", tag="solo") + tail)  # fmt: skip


BASE = config(child("a", prefix=NESTED, tag="a") + child("b", prefix=NESTED, tag="b1") + child("c", prefix=NESTED, tag="c"))


@pytest.fixture
def tree(tmp_path: Path):  # type: ignore[no-untyped-def]
    (tmp_path / "relapp.py").write_text(APP)
    (tmp_path / "other.py").write_text(OTHER)
    t = Tree(write_config(tmp_path, BASE, "app.toml"))
    started = t.start()
    assert started.returncode == 0, started.stderr + started.stdout
    yield t
    t.stop()


def workers(t: Tree) -> dict[str, tuple[int, int]]:
    """id -> (pid, generation) of every worker of the running tree."""
    out: dict[str, tuple[int, int]] = {}

    def walk(view: dict[str, Any]) -> None:
        for c in view["children"]:
            if "supervisor" in c:
                walk(c["supervisor"])
            elif c["state"] == "running":
                out[c["key"]] = (c["pid"], c["generation"])

    walk(t.client.status()["tree"])
    return out


def shape(t: Tree) -> list[object]:
    """The tree as status shows it, without what changes by itself (uptime, memory, counters, the node's clock)."""

    def strip(view: dict[str, Any]) -> dict[str, Any]:
        kids = [{k: (strip(v) if k == "supervisor" else v) for k, v in c.items() if k not in ("uptime", "rss", "stats")}
                for c in view["children"]]  # fmt: skip
        return {**{k: v for k, v in view.items() if k != "clock"}, "children": kids}

    return [strip(t.client.status()["tree"]), [(c["key"], c["restart"]) for c in t.client.which_children("core")]]


def test_a_reload_adds_removes_and_changes_children_and_leaves_the_others_running(tree: Tree) -> None:
    t = tree
    new = config(child("a", prefix=NESTED, tag="a") + child("n", prefix=NESTED, tag="n") + child("b", prefix=NESTED, tag="b2"),
                 edge_intensity=7, tail=child("extra", tag="x"))  # fmt: skip
    write_config(t.config.parent, new, "app2.toml")
    before = workers(t)

    dry = t.cli("reload", str(t.config.parent / "app2.toml"), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == [
        f"plan for {t.config.parent / 'app2.toml'} (dry run: nothing changed): 7 steps; 4 unchanged",
        "  1. flags root/edge: in place, no child restarted (intensity 5 -> 7)",
        "  2. remove root/core/c: terminate (shutdown 2000 ms), then delete",
        "  3. change root/core/b: restart with the new spec (args.tag 'b1' -> 'b2')",
        "  4. add root/core/n: start before b",
        "  5. add root/extra: start (the newest child)",
        "  6. record root/core: root takes its new spec in place, nothing restarts (children)",
        "  7. record root/edge: root takes its new spec in place, nothing restarts (children)",
    ]
    assert workers(t) == before

    done = t.cli("reload", str(t.config.parent / "app2.toml"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].startswith("reload of ") and "7 of 7 steps applied" in done.stdout
    after = workers(t)
    for unchanged in ("a", "e1", "e2", "solo"):
        assert after[unchanged] == before[unchanged], unchanged  # same pid, same generation
    assert "c" not in after and after["b"][1] == 2
    assert t.client.call("b", "?")["tag"] == "b2"
    assert [c["key"] for c in reversed(t.client.which_children("core"))] == ["a", "n", "b"]
    edge = next(c for c in t.client.status()["tree"]["children"] if c["id"] == "edge")
    assert edge["supervisor"]["intensity"] == 7
    steps = [e for e in t.events() if e["event"] == "reload_step"]
    assert [(e["detail"]["kind"], e["detail"]["outcome"]) for e in steps] == [
        ("flags", "done"), ("remove", "done"), ("change", "done"), ("add", "done"), ("add", "done"), ("record", "done"),
        ("record", "done")]

    # n was started at its place: in rest_for_one, b is its successor
    os.kill(after["n"][0], signal.SIGKILL)
    t.wait_started("b", 3)
    assert workers(t)["a"] == before["a"]
    # and the supervisor kept what the reload recorded: the same config again changes nothing
    again = t.cli("reload", str(t.config.parent / "app2.toml"))
    assert again.returncode == 0 and again.stdout.startswith("nothing to change"), again.stdout


def test_a_config_with_problems_changes_nothing_and_exits_2(tree: Tree) -> None:
    t = tree
    bad = BASE.replace('intensity = 5\nperiod = 10\n\n[[tree.children]]\nid = "core"', 'intensity = -1\nperiod = 10\n\n[[tree.children]]\nid = "core"')
    bad = bad.replace('tag = "b1"', 'tag = "b2", bogus = 1').replace('id = "c"\nstart = "relapp:Echo"', 'id = "c"\nstart = "relapp:Nope"')
    write_config(t.config.parent, bad, "bad.toml")
    before = shape(t)
    result = t.cli("reload", str(t.config.parent / "bad.toml"))
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 3 and all(line.startswith(f"supervise: {t.config.parent / 'bad.toml'}: tree") for line in lines)
    assert "intensity must be an integer >= 0; got -1" in lines[0]
    assert 'args: init of relapp:Echo takes no "bogus"' in lines[1]  # check knows init's signature
    assert 'module relapp has no attribute "Nope"' in lines[2]
    assert shape(t) == before
    assert not [e for e in t.events() if e["event"].startswith("reload_")]


def test_a_step_that_fails_stops_the_reload_there_and_the_tree_keeps_running(tree: Tree) -> None:
    t = tree
    new = config(child("a", prefix=NESTED, tag="a") + child("b", prefix=NESTED, tag="b2") + child("c", prefix=NESTED, tag="c")
                 + child("broken", prefix=NESTED, fail=True) + child("later", prefix=NESTED))  # fmt: skip
    write_config(t.config.parent, new, "app2.toml")
    before = workers(t)
    result = t.cli("reload", str(t.config.parent / "app2.toml"))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"reload of {t.config.parent / 'app2.toml'}: 1 of 4 steps applied; 6 unchanged",
        "  ok   1. change root/core/b: restart with the new spec (args.tag 'b1' -> 'b2')",
        "  FAIL 2. add root/core/broken: start (the newest child)",
        "  -    3. add root/core/later: start (the newest child)",
        "  -    4. record root/core: root takes its new spec in place, nothing restarts (children)",
        "  not applied: 3, 4; the tree keeps running",
    ]
    assert result.stderr.startswith("supervise: reload stopped at step 2. add root/core/broken: start (the newest child): start_failed:")
    assert "this spec refuses to start" in result.stderr
    after = workers(t)
    assert set(after) == set(before) and after["b"][1] == 2 and after["a"] == before["a"]
    assert t.client.call("b", "?")["tag"] == "b2" and t.client.call("a", "?")["tag"] == "a"


def test_a_changed_child_that_will_not_start_gets_its_old_spec_back(tree: Tree) -> None:
    t = tree
    new = config(child("a", prefix=NESTED, tag="a") + child("b", prefix=NESTED, tag="b1", fail=True) + child("c", prefix=NESTED, tag="c"))
    write_config(t.config.parent, new, "app2.toml")
    before = workers(t)
    result = t.cli("reload", str(t.config.parent / "app2.toml"), "--json")
    assert result.returncode == 1
    value = json.loads(result.stdout)
    assert value["ok"] is False and value["outcome"]["applied"] == [] and value["outcome"]["not_applied"] == [2]
    failed = value["outcome"]["failed"]
    assert failed["n"] == 1 and "the previous spec runs again" in failed["error"]
    after = workers(t)
    assert after["b"][1] == 3  # 2 would not start; 3 is the old spec again
    assert t.client.call("b", "?")["tag"] == "b1"
    assert {k: v for k, v in after.items() if k != "b"} == {k: v for k, v in before.items() if k != "b"}


def test_a_reload_under_load_loses_no_call_to_an_unchanged_worker(tree: Tree) -> None:
    t = tree
    new = config(child("a", prefix=NESTED, tag="a") + child("n", prefix=NESTED) + child("b", prefix=NESTED, tag="b2"),
                 edge_intensity=9, tail=child("extra"))  # fmt: skip
    write_config(t.config.parent, new, "app2.toml")
    pid_a = workers(t)["a"][0]
    stop, answers, errors = threading.Event(), [], []

    def load() -> None:
        with Client(t.run_dir, timeout=5.0) as c:
            while not stop.is_set():
                for worker in ("a", "solo", "e1"):
                    try:
                        answers.append(c.call(worker, "?"))
                    except ClientError as exc:
                        errors.append(f"{worker}: {exc!r}")

    thread = threading.Thread(target=load)
    thread.start()
    try:
        wait_for(lambda: len(answers) > 50, 20, "the load to run")
        result = t.cli("reload", str(t.config.parent / "app2.toml"))
        counted = len(answers)
        wait_for(lambda: len(answers) > counted + 50, 20, "calls after the reload")
    finally:
        stop.set()
        thread.join(30)
    assert result.returncode == 0, result.stderr
    assert errors == []
    assert {a["pid"] for a in answers if isinstance(a, dict) and a["tag"] == "a"} == {pid_a}


def test_sighup_reloads_the_nodes_own_config(tree: Tree) -> None:
    t = tree
    pid_b = workers(t)["b"][0]
    t.config.write_text(BASE.replace('tag = "b1"', 'tag = "from-hup"'))
    node = t.node_pid()
    assert node is not None
    os.kill(node, signal.SIGHUP)
    t.wait_event(lambda e: e["event"] == "reload_done", 30, "the SIGHUP reload")
    assert t.client.call("b", "?")["tag"] == "from-hup" and workers(t)["b"][0] != pid_b
    t.config.write_text(BASE.replace("intensity = 5\nperiod = 10\n\n[[tree.children]]", "intensity = -2\nperiod = 10\n\n[[tree.children]]", 1))
    os.kill(node, signal.SIGHUP)
    refused = t.wait_event(lambda e: e["event"] == "reload_refused", 30, "the refusal")
    assert "intensity must be an integer >= 0; got -2" in refused["reason"]
    assert t.running() and t.client.call("b", "?")["tag"] == "from-hup"


def test_reload_code_restarts_the_workers_whose_module_changed_and_they_run_the_new_code(tree: Tree) -> None:
    t = tree
    before = workers(t)
    assert t.client.call("a", "?")["version"] == "v1"
    unchanged = t.cli("reload", "--code", "--dry-run")
    assert unchanged.returncode == 0 and unchanged.stdout.strip() == "no worker's code changed", unchanged.stdout
    module = t.config.parent / "relapp.py"
    module.write_text(APP.replace('VERSION = "v1"', 'VERSION = "v2"'))  # the same size: the cached bytecode must go

    dry = t.cli("reload", "--code", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert lines[0] == "plan for the workers' code (dry run: nothing changed): 5 steps"
    assert lines[1] == f"  1. refresh root: the fork server imports the project's code again (it holds {module}); new standbys"
    assert lines[2:] == [f"  {n}. code {w}: restart: its code changed ({module})"
                         for n, w in enumerate(["root/core/a", "root/core/b", "root/core/c", "root/solo"], 2)]  # fmt: skip
    assert workers(t) == before

    one = t.cli("reload", "--code", "a")
    assert one.returncode == 0 and "2 of 2 steps applied" in one.stdout, one.stdout + one.stderr
    assert t.client.call("a", "?")["version"] == "v2" and t.client.call("b", "?")["version"] == "v1"
    rest = t.cli("reload", "--code")
    assert rest.returncode == 0 and "3 of 3 steps applied" in rest.stdout, rest.stdout + rest.stderr
    after = workers(t)
    for worker in ("b", "c", "solo"):
        assert t.client.call(worker, "?")["version"] == "v2"
        assert after[worker][1] == before[worker][1] + 1
    assert after["e1"] == before["e1"] and after["e2"] == before["e2"]  # their module did not change
    # a worker started after the reload (a crash restart) runs the new code too: the fork server has it
    os.kill(after["solo"][0], signal.SIGKILL)
    t.wait_started("solo", after["solo"][1] + 1)
    assert t.client.call("solo", "?")["version"] == "v2"
    nomatch = t.cli("reload", "--code", "zz*")
    assert nomatch.returncode == 2 and "no running worker matches 'zz*'" in nomatch.stderr


SCORING = 'VERSION = "v1"\n\n\ndef score(x):\n    return [VERSION, x]\n'


def test_a_rolling_code_reload_of_a_pool_keeps_all_members_but_one_answering(tmp_path: Path) -> None:
    from supervisor_tree.workers.pool import MemberExited, PoolClient
    from supervisor_tree.workers.pool_tree import pool_toml

    size = 4
    (tmp_path / "scoring.py").write_text(SCORING)
    t = Tree(write_config(tmp_path, HEAD + pool_toml("pool", size=size, max_overflow=0), "pool.toml"))
    try:
        assert t.start().returncode == 0
        members = [f"pool_member-{n}" for n in range(1, size + 1)]
        for m in members:  # each member imports the task module (its own import: the fork server never had it)
            assert t.client.call(m, ("run", "scoring:score", [1])) == ["v1", 1]
        (tmp_path / "scoring.py").write_text(SCORING.replace('"v1"', '"v2"'))
        stop, served, refused = threading.Event(), [], []

        def load() -> None:
            with Client(t.run_dir, timeout=10.0) as c:
                pool = PoolClient(c, "pool")
                while not stop.is_set():
                    try:
                        served.append(pool.run("scoring:score", 2, timeout=5.0))
                    except MemberExited as exc:  # a task in flight on the member being restarted: its caller is told
                        refused.append(repr(exc))

        thread = threading.Thread(target=load)
        thread.start()
        try:
            wait_for(lambda: len(served) > 20, 20, "the pool to serve")
            result = t.cli("reload", "--code", "pool_member-*")
            assert result.returncode == 0, result.stdout + result.stderr
            wait_for(lambda: ["v2", 2] in served[-5:], 20, f"the pool to serve the new code ({served[-5:]}, {refused[-3:]})")
        finally:
            stop.set()
            thread.join(30)
        assert result.returncode == 0, result.stdout + result.stderr
        assert [line.split(":")[0].strip() for line in result.stdout.splitlines()[1:]] == [
            f"ok   {n}. code root/pool_sup/pool_members/{m}" for n, m in enumerate(members, 1)]
        # Capacity: at any point of the reload at most one member is down.
        down: set[str] = set()
        most = 0
        events = t.events()
        begin = next(i for i, e in enumerate(events) if e["event"] == "reload_started")
        for e in events[begin:]:
            if e.get("child") in members and e["event"] == "exited":
                down.add(e["child"])
            elif e.get("child") in members and e["event"] == "started":
                down.discard(e["child"])
            most = max(most, len(down))
        assert most == 1
        for m in members:
            assert t.client.call(m, ("run", "scoring:score", [3])) == ["v2", 3]
        assert len(t.client.which_children("pool_members")) == size
        assert len(refused) <= size  # at most the task each member had in flight when it was stopped
    finally:
        t.stop()
