"""`supervise chaos` as a user runs it: real faults on a real tree under load, healed, reported, gated."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import psutil
import pytest
from nodes import REPO, SUPERVISE, Tree, started, supervise, wait_for, write_config

from supervisor_tree.chaos.report import ChaosReport
from supervisor_tree.chaos.schedule import read_log
from supervisor_tree.chaos.steady import check
from supervisor_tree.client import Client

pytestmark = pytest.mark.timeout(180)

PUPPET = 'start = "supervisor_tree.workers.puppet:Puppet"\nshutdown = "brutal_kill"\n'
RETRY = 'retry = { attempts = 5, wait = "fixed", initial = 0.005, per_attempt_timeout = 0.3, deadline = 4.0 }\n'
CONFIG = f"""
[node]
name = "chaos"
preload = ["supervisor_tree.workers.puppet"]
heartbeat = {{ interval = 0.1, misses = 5 }}

[tree]
intensity = 10
period = 10

[[tree.children]]
id = "solo"
{PUPPET}{RETRY}
[[tree.children]]
id = "group"
type = "supervisor"
strategy = "one_for_all"
intensity = 50
period = 10

[[tree.children.children]]
id = "g1"
{PUPPET}{RETRY}
[[tree.children.children]]
id = "g2"
{PUPPET}{RETRY}
[[tree.children]]
id = "mid"
type = "supervisor"
intensity = 2
period = 10

[[tree.children.children]]
id = "w"
{PUPPET}{RETRY}
"""


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_config(tmp_path_factory.mktemp("chaos"), CONFIG)


@pytest.fixture(scope="module")
def tree(config: Path):  # type: ignore[no-untyped-def]
    t = started(config)
    yield t
    t.stop()


def report_of(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def test_a_run_starts_the_tree_injects_heals_and_passes_its_gates(config: Path, tmp_path: Path) -> None:
    run_dir = Tree(config).run_dir  # a fresh directory: chaos starts the tree there, and stops it at the end
    done = supervise("chaos", str(config), "--run-dir", str(run_dir), "--duration", "3", "--rate", "4",
                     "--faults", "kill,exception,term", "--targets", "solo,g*", "--seed", "11", "--load", "echo",
                     "--load-rate", "200", "--max-lost", "0", "--min-success", "90", "--report",
                     str(tmp_path / "r.json"), "--log", str(tmp_path / "l.jsonl"), timeout=150)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("chaos: seed 11\n") and "PASSED" in done.stdout
    r = report_of(tmp_path / "r.json")
    injected = [o for o in r["outcomes"] if o["status"] == "injected"]
    assert injected and all(o["blast_ok"] for o in injected)
    group = [o for o in injected if o["target"] in ("g1", "g2") and o["fault"] == "kill"]
    assert all(o["predicted"] == "restart g1, g2" for o in group)  # one_for_all: both, whichever was hit
    assert all(o["recovery_ms"] is not None and o["detect_ms"] is not None for o in injected if o["fault"] == "kill")
    assert r["requests"]["sent"] > 0 and r["requests"]["lost"] == 0 and r["requests"]["duplicated"] == 0
    assert r["steady_state"]["after"]["ok"] and r["survived"]
    assert not (run_dir / "lock").exists() or not Tree(config).running()  # the tree it started is stopped


def test_a_crash_looping_worker_escalates_as_otp_says_and_the_report_shows_where(tree: Tree, tmp_path: Path) -> None:
    log = tmp_path / "crash.jsonl"
    header = {"log": "supervisor_tree chaos decisions", "version": 1, "seed": 0, "rate": 1, "duration": 1.0,
              "faults": ["fail_start"], "targets": ["w"]}
    decision = {"i": 0, "at": 0.1, "fault": "fail_start", "target": "w", "params": {"fails": 4}}
    log.write_text(json.dumps(header) + "\n" + json.dumps(decision) + "\n")
    done = tree.cli("chaos", "--replay", str(log), "--load", "none", "--report", str(tmp_path / "r.json"),
                    "--log", str(tmp_path / "again.jsonl"), timeout=150)
    assert done.returncode == 0, done.stdout + done.stderr
    r = report_of(tmp_path / "r.json")
    (outcome,) = r["outcomes"]
    assert outcome["predicted"] == "restart w; escalate root/mid" and outcome["blast_ok"], outcome
    assert r["supervisors"]["root/mid"]["reached_max_restart_intensity"] == 1
    # 4 failing starts: mid retries twice (both fail), a third restart is past its intensity 2; root then
    # restarts mid, whose start of w fails twice more, and a third time for good.
    assert r["supervisors"]["root/mid"]["restarting"] == 2 and r["supervisors"]["root"]["restarting"] == 3
    assert read_log(tmp_path / "again.jsonl") == read_log(log)  # a replay writes the decisions it ran

    decision["params"] = {"fails": 40}  # past root's intensity too: the whole tree would stop
    log.write_text(json.dumps(header) + "\n" + json.dumps(decision) + "\n")
    done = tree.cli("chaos", "--replay", str(log), "--load", "none", "--report", str(tmp_path / "r2.json"),
                    "--log", str(tmp_path / "again2.jsonl"), timeout=150)
    (outcome,) = report_of(tmp_path / "r2.json")["outcomes"]
    assert outcome["status"] == "skipped" and outcome["reason"].startswith("tree: the root would give up")
    assert done.returncode == 0 and tree.running()


def test_the_same_seed_gives_the_same_decision_log(tree: Tree, tmp_path: Path) -> None:
    logs = []
    for name in ("a", "b", "c"):
        seed = "5" if name != "c" else "6"
        done = tree.cli("chaos", "--dry-run", "--seed", seed, "--rate", "5", "--duration", "2", "--faults",
                        "kill,stop,fail_start:2", "--log", str(tmp_path / name), timeout=60)
        assert done.returncode == 0, done.stderr
        logs.append((tmp_path / name).read_text())
    assert logs[0] == logs[1] != logs[2]
    assert "-> restart g1, g2" in done.stdout  # a dry run prints each decision's predicted radius


def test_drop_faults_are_cured_by_retries_and_restart_nothing(tree: Tree, tmp_path: Path) -> None:
    done = tree.cli("chaos", "--duration", "2", "--rate", "3", "--faults", "drop:1.0,slow:20", "--targets", "solo",
                    "--seed", "3", "--load", "echo", "--load-rate", "100", "--max-lost", "0", "--report",
                    str(tmp_path / "r.json"), "--log", str(tmp_path / "l.jsonl"), timeout=150)
    assert done.returncode == 0, done.stdout + done.stderr
    r = report_of(tmp_path / "r.json")
    assert r["requests"]["retried"] >= 1 and r["requests"]["lost"] == 0
    assert all(o["blast_ok"] for o in r["outcomes"] if o["status"] == "injected")


def test_ctrl_c_stops_injecting_and_heals(tree: Tree, tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([*SUPERVISE, "chaos", "--run-dir", str(tree.run_dir), "--duration", "120", "--rate", "5",
                             "--faults", "stop", "--seed", "9", "--load", "echo", "--log", str(tmp_path / "l.jsonl")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        node = psutil.Process(tree.node_pid())
        wait_for(lambda: any(p.status() == psutil.STATUS_STOPPED for p in node.children(recursive=True)),
                 60, "a SIGSTOPped worker")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out + err
    assert "interrupted" in out and "steady state before: ok · after: ok" in out
    assert not any(p.status() == psutil.STATUS_STOPPED for p in node.children(recursive=True))
    with Client(tree.run_dir) as c:
        assert check(c).ok


def test_bad_options_say_what_is_wrong(tree: Tree) -> None:
    nothing = tree.cli("chaos", "--targets", "nomatch*", "--duration", "1")
    assert nothing.returncode == 2 and "--targets 'nomatch*' matches no worker of the tree; workers: " in nothing.stderr
    bad = tree.cli("chaos", "--faults", "kill,melt")
    assert bad.returncode == 2 and "unknown fault 'melt'" in bad.stderr
    rate = tree.cli("chaos", "--max-down", "0")
    assert rate.returncode == 2 and "--max-down 0 is out of range" in rate.stderr


def test_the_pytest_helper_runs_an_experiment_with_gates(chaos_experiment: Any, tree: Tree) -> None:
    report: ChaosReport = chaos_experiment(run_dir=tree.run_dir, duration=2, rate=3, faults="kill", targets="solo,w",
                                           seed=4, load="echo", load_rate=100, max_lost=0, min_success=90.0)
    assert report.passed, report.summary()
    assert report.seed == 4 and [g.gate for g in report.gates] == ["max-lost", "min-success (%)"]
