"""Per-worker logs, end to end: every line a worker writes lands in RUN/logs/ID.log, and `supervise logs` reads it."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest
from nodes import REPO, SUPERVISE, Tree, started, supervise, wait_for, write_config

from supervisor_tree.client import CallError

pytestmark = pytest.mark.timeout(120)

PRINTER = "tests.integration.aio_workers:Printer"


def tree_toml(logs: str = "") -> str:
    node = "[node]\nheartbeat = { interval = 0.2, misses = 5 }\n" + (f"logs = {logs}\n" if logs else "")
    return (node + '\n[tree]\nstrategy = "one_for_one"\nintensity = 10\nperiod = 10\n\n'
            f'[[tree.children]]\nid = "printer"\nstart = "{PRINTER}"\nshutdown = 2000\n')


@pytest.fixture
def tree(tmp_path: Path):  # type: ignore[no-untyped-def]
    t = started(write_config(tmp_path, tree_toml()))
    yield t
    t.stop()


def test_stdout_stderr_and_logging_each_land_in_the_workers_file(tree: Tree) -> None:
    for msg in (["print", "to stdout"], ["stderr", "to stderr"], ["log", "through logging"]):
        assert tree.client.call("printer", msg) == "ok"
    shown = wait_for(lambda: (r := tree.cli("logs", "printer")).stdout.count("\n") >= 6 and r, what="six lines")
    lines = shown.stdout.splitlines()
    assert [line.split(" | ", 1)[1] for line in lines] == [
        "--- starting ---", "hello", "INFO tests.aio: printer started", "to stdout", "to stderr",
        "WARNING tests.aio: through logging"]
    assert [line.split()[1:3] for line in lines][:2] == [["printer#1", "sys"], ["printer#1", "out"]]
    assert [line.split()[2] for line in lines][2:] == ["log", "out", "err", "log"]
    as_json = [json.loads(line) for line in tree.cli("logs", "printer", "--json", "-n", "1").stdout.splitlines()]
    assert len(as_json) == 1
    assert as_json[0] | {"ts": 0, "time": ""} == {"ts": 0, "time": "", "id": "printer", "generation": 1,
                                                  "stream": "log", "line": "WARNING tests.aio: through logging"}
    assert tree.cli("logs", "printer", "--since", "1h").stdout == shown.stdout
    assert tree.cli("logs", "printer", "--since", "2999-01-01T00:00").stdout == ""


def test_a_crashing_workers_last_stderr_lines_are_in_its_exited_event(tree: Tree) -> None:
    with pytest.raises(CallError, match="RuntimeError: lost the database"):
        tree.client.call("printer", ["crash", "lost the database"])
    exited = tree.wait_event(lambda e: e["event"] == "exited" and e["child"] == "printer", what="printer's exit")
    tail = exited["detail"]["tail"]
    assert tail[:2] == ["INFO tests.aio: printer started", "lost the database"]  # stderr and logging, in order
    assert tail[-1] == "RuntimeError: lost the database"
    tree.wait_started("printer", 2)
    marks = [line for line in tree.cli("logs", "printer").stdout.splitlines() if " sys " in line]
    assert [m.split(" | ")[1] for m in marks] == [
        "--- starting ---", "--- exited: {error,RuntimeError: lost the database} ---", "--- starting ---"]
    assert [m.split()[1] for m in marks] == ["printer#1", "printer#1", "printer#2"]


def test_an_unknown_worker_is_named_with_the_known_ones(tree: Tree) -> None:
    result = tree.cli("logs", "nosuch")
    assert result.returncode == 1
    assert "no log for worker 'nosuch'" in result.stderr and "(logs: printer)" in result.stderr


def test_a_log_is_rotated_by_size(tmp_path: Path) -> None:
    t = Tree(write_config(tmp_path, tree_toml(logs="{ max_bytes = 4096, backups = 2 }")))
    try:
        assert t.start().returncode == 0
        assert t.client.call("printer", ["spam", 300, 100]) == "ok"
        logs = t.run_dir / "logs"
        def written() -> bool:
            try:
                return "000299" in (logs / "printer.log").read_text()
            except FileNotFoundError:  # read between a rotation's rename and the new file's creation
                return False

        wait_for(written, what="the last line written")
        assert sorted(p.name for p in logs.iterdir()) == ["printer.log", "printer.log.1", "printer.log.2"]
        assert all(p.stat().st_size <= 4096 + 200 for p in logs.iterdir())
        last = t.cli("logs", "printer", "-n", "3").stdout.splitlines()
        assert [line.split(" | ")[1][:6] for line in last] == ["000297", "000298", "000299"]
    finally:
        t.stop()


def test_the_foreground_prefixes_each_workers_lines(tmp_path: Path) -> None:
    config = write_config(tmp_path, tree_toml())
    run_dir = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    node = subprocess.Popen([*SUPERVISE, "start", str(config), "--run-dir", str(run_dir)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        wait_for(lambda: (run_dir / "logs" / "printer.log").exists() and "hello" in (run_dir / "logs" / "printer.log").read_text(),
                 what="printer's first line")
        assert supervise("stop", "--run-dir", str(run_dir)).returncode == 0
        out, _ = node.communicate(timeout=30)
    finally:
        node.kill()
    lines = out.splitlines()
    assert any(line.endswith("printer#1 | hello") for line in lines), out
    assert any(line.endswith("printer#1 | sys: --- exited: shutdown ---") for line in lines), out
    assert all(time.strptime(line[:8], "%H:%M:%S") for line in lines if "printer#1" in line)


def test_each_restart_writes_through_fifos_of_its_own_and_the_node_leaves_none(tree: Tree) -> None:
    # The node makes each incarnation's FIFOs ahead under names of their own and renames them at its start.
    for gen in (1, 2, 3):
        assert tree.client.call("printer", ["print", f"from incarnation {gen}"]) == "ok"
        if gen < 3:
            os.kill(tree.pid_of("printer"), signal.SIGKILL)
            tree.wait_started("printer", gen + 1)
    printed = wait_for(lambda: (lines := [line for line in tree.cli("logs", "printer").stdout.splitlines()
                                          if "from incarnation" in line]) and len(lines) == 3 and lines,
                       what="three printed lines")
    assert [(line.split()[1], line.split(" | ")[1]) for line in printed] == [
        ("printer#1", "from incarnation 1"), ("printer#2", "from incarnation 2"), ("printer#3", "from incarnation 3")]
    w = tree.run_dir / "w"

    def fifos() -> set[str]:
        return {p.name for p in w.iterdir() if stat.S_ISFIFO(p.lstat().st_mode)}

    assert {"printer-3.out", "printer-3.err"} <= fifos(), fifos()
    wait_for(lambda: not {"printer-1.out", "printer-2.out"} & fifos(),  # an exited incarnation's go soon after
             what="the exited incarnations' FIFOs to go")
    assert supervise("stop", "--run-dir", str(tree.run_dir)).returncode == 0
    wait_for(lambda: not tree.running(), what="the node to stop")
    assert w.is_dir() and not [p.name for p in w.iterdir() if stat.S_ISFIFO(p.lstat().st_mode)]
