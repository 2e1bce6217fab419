"""A one_for_all group restart, as its children see it: who is stopped when, who starts when.

The node kills a run of brutal_kill siblings together and prepares the next starts ahead
(node/plan.py `kill_ahead`); OTP's order must stay what the children can observe: a child
with a shutdown timeout gets its stop request only once every later sibling is dead and
while the earlier ones still run; each child's init runs after the previous one's init
returned; a child whose init fails in the middle gets OTP's retry (R7, S25).  The children
record it themselves (tests/integration/group_workers.py), one line each to a journal.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from nodes import Tree, children_by_role, wait_for, write_config

pytestmark = pytest.mark.timeout(120)

RECORDER = "tests.integration.group_workers:Recorder"


def group_toml(journal: Path, shutdowns: dict[str, object], fail_once: dict[str, Path] | None = None) -> str:
    lines = ['[node]\nheartbeat = { interval = 0.2, misses = 5 }\n', '[tree]\nstrategy = "one_for_all"\nintensity = 10\nperiod = 10\n']
    for cid, shutdown in shutdowns.items():
        args = f'journal = "{journal}"' + (f', fail_once = "{fail_once[cid]}"' if fail_once and cid in fail_once else "")
        lines.append(f'[[tree.children]]\nid = "{cid}"\nstart = "{RECORDER}"\nshutdown = {json.dumps(shutdown)}\n'
                     f"args = {{ {args} }}\n")
    return "\n".join(lines)


def journal_of(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def tree(tmp_path: Path):  # type: ignore[no-untyped-def]
    made: list[Tree] = []

    def start(text: str) -> Tree:
        t = Tree(write_config(tmp_path, text))
        made.append(t)
        result = t.start()
        assert result.returncode == 0, result.stderr
        return t

    yield start
    for t in made:
        t.stop()


def test_stop_requests_come_after_later_siblings_died_and_while_earlier_ones_run(tree, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    journal = tmp_path / "journal"
    shutdowns = {"a": 5000, "b": "brutal_kill", "c": "brutal_kill", "d": 5000, "e": "brutal_kill", "f": "brutal_kill"}
    t = tree(group_toml(journal, shutdowns))
    os.kill(t.client.resolve("a").pid, signal.SIGKILL)
    t.wait_started("f", 2, timeout=30)
    records = journal_of(journal)
    terms = [(r["id"], r["alive"]) for r in records if r["ev"] == "term"]
    assert terms == [("d", ["b", "c"])]  # e and f dead (a too: it was killed), b and c still running
    inits = [(r["id"], r["gen"]) for r in records if r["ev"] == "init"]
    assert inits == [(c, 1) for c in "abcdef"] + [(c, 2) for c in "abcdef"]
    trace = t.trace(("started", "exited"))
    after = trace[trace.index("exited a#1 killed") + 1:]
    assert [line.split()[1] for line in after if line.startswith("exited")] == ["f#1", "e#1", "d#1", "c#1", "b#1"]
    assert [line for line in after if line.startswith("started")] == [f"started {c}#2" for c in "abcdef"]
    assert all(t.client.call(c, "pid") == t.client.resolve(c).pid for c in "abcdef")


def test_an_init_failing_in_the_middle_of_a_group_restart_is_retried_as_otp_does(tree, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    journal, fail = tmp_path / "journal", tmp_path / "c.fail"
    t = tree(group_toml(journal, dict.fromkeys("abcdef", "brutal_kill"), fail_once={"c": fail}))
    fail.write_text("once")
    os.kill(t.client.resolve("a").pid, signal.SIGKILL)
    t.wait_started("f", 2, timeout=30)
    records = journal_of(journal)[6:]  # after the first start of the six
    assert [(r["ev"], r["id"], r["gen"]) for r in records] == [
        ("init", "a", 2), ("init", "b", 2), ("init_failed", "c", 2),  # d, e, f never ran init meanwhile
        ("init", "a", 3), ("init", "b", 3), ("init", "c", 3), ("init", "d", 2), ("init", "e", 2), ("init", "f", 2),
    ]
    trace = t.trace(("started", "exited", "start_error"))
    after = trace[trace.index("exited a#1 killed") + 1:]
    assert [line.split(" ", 2)[:2] for line in after] == [
        *(["exited", f"{c}#1"] for c in "fedcb"), ["started", "a#2"], ["started", "b#2"], ["start_error", "c#2"],
        ["exited", "b#2"], ["exited", "a#2"], *(["started", f"{c}#{g}"] for c, g in zip("abcdef", (3, 3, 3, 2, 2, 2))),
    ]
    assert not fail.exists()


def test_each_group_restart_starts_every_child_in_a_pre_forked_standby(tree, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The node hands the group's starts to standbys ahead of their turn and the fork server
    forks replacements once the restart is over: the next group restart again finds one
    standby per child (the standbys kept: as many as the group and one more, node/plan.py standby_for)."""
    ids = "abcdef"
    t = tree(group_toml(tmp_path / "journal", dict.fromkeys(ids, "brutal_kill")))
    node = t.node_pid()
    assert node is not None
    for round_, victim in enumerate("ad", start=2):
        pool = wait_for(lambda: (s := children_by_role(node).get("standby", [])) and len(s) >= len(ids) and s,
                        timeout=30, what=f"{len(ids)} standbys before restart {round_}")
        os.kill(t.client.resolve(victim).pid, signal.SIGKILL)
        t.wait_started("f", round_, timeout=30)
        new = {c: t.client.resolve(c) for c in ids}
        assert all(w.generation == round_ for w in new.values())
        assert {c: w.pid in pool for c, w in new.items()} == dict.fromkeys(ids, True), (pool, new)


def test_a_restart_right_after_a_group_restart_still_finds_a_standby(tree, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The node keeps one standby more than its largest group (node/plan.py standby_for): a crash
    elsewhere right after the group's restart, before the fork server refilled, is not a cold fork."""
    journal = tmp_path / "journal"
    child = f'start = "{RECORDER}"\nshutdown = "brutal_kill"\nargs = {{ journal = "{journal}" }}\n'
    text = ('[tree]\nstrategy = "one_for_one"\nintensity = 10\nperiod = 10\n\n'
            f'[[tree.children]]\nid = "p"\n{child}\n'
            '[[tree.children]]\nid = "grp"\ntype = "supervisor"\nstrategy = "one_for_all"\nintensity = 10\nperiod = 10\n\n'
            + "".join(f'[[tree.children.children]]\nid = "{c}"\n{child}\n' for c in "abcd"))
    t = tree(text)
    node = t.node_pid()
    assert node is not None
    pool = wait_for(lambda: (s := children_by_role(node).get("standby", [])) and len(s) >= 5 and s,
                    timeout=30, what="5 standbys (a group of 4, and one more)")
    os.kill(t.client.resolve("b").pid, signal.SIGKILL)
    t.wait_started("d", 2, timeout=30)
    os.kill(t.client.resolve("p").pid, signal.SIGKILL)  # at once: the fork server may not have refilled yet
    t.wait_started("p", 2, timeout=30)
    new = {c: t.client.resolve(c).pid for c in "abcdp"}
    assert {c: pid in pool for c, pid in new.items()} == dict.fromkeys("abcdp", True), (pool, new)


def test_every_started_report_of_a_group_restart_carries_its_marks(tree, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Each child's `started` report says when the node reaped its previous incarnation, decided
    its start and read its "ready" (detail.mono_ns), also for a child whose "ready" the node
    read before the launcher's news of its start (a standby is activated at once)."""
    ids = "abcdef"
    t = tree(group_toml(tmp_path / "journal", dict.fromkeys(ids, "brutal_kill")))
    for round_, victim in enumerate("cf", start=2):
        os.kill(t.client.resolve(victim).pid, signal.SIGKILL)
        for c in ids:
            marks = t.wait_started(c, round_, timeout=30)["detail"]["mono_ns"]
            assert marks["woke"] <= marks["reaped"] <= marks["spawning"] <= marks["ready_seen"], (c, marks)
