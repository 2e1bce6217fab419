"""`supervise tune-retry` on a worker with a known failure rate: real calls, the same seeded faults for every policy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from nodes import Tree, started, write_config

pytestmark = pytest.mark.timeout(180)

CONFIG = """
[node]
name = "tune"
preload = ["supervisor_tree.workers.puppet"]

[tree]
intensity = 20
period = 10

[[tree.children]]
id = "p"
start = "supervisor_tree.workers.puppet:Puppet"
shutdown = "brutal_kill"
"""

GRID = """
attempts = [1, 4]
wait = ["fixed"]
initial = [0.001]
max = [0.01]
per_attempt_timeout = [0.05]
deadline = [1.0]
budget = [0.5]
"""


@pytest.fixture
def tree(tmp_path: Path):  # type: ignore[no-untyped-def]
    t = started(write_config(tmp_path, CONFIG))
    yield t
    t.stop()


def test_a_known_failure_rate_gets_the_cheapest_policy_that_cures_it(tree: Tree, tmp_path: Path) -> None:
    (tmp_path / "grid.toml").write_text(GRID)
    done = tree.cli("tune-retry", "p", "--faults", "drop:0.2", "--grid", str(tmp_path / "grid.toml"), "--budget", "6",
                    "--target", "success>=99%", "--report", str(tmp_path / "r.json"), "--apply", timeout=170)
    assert done.returncode == 0, done.stdout + done.stderr
    r = json.loads((tmp_path / "r.json").read_text())
    by_attempts = {p["policy"]["attempts"]: p for p in r["points"]}
    assert by_attempts[1]["success"] < 99.0  # a fifth of the calls are dropped: one attempt cannot hide it
    assert by_attempts[4]["success"] >= 99.0 and by_attempts[4]["amplification"] > 1.0
    assert r["recommended"]["attempts"] == 4
    assert 'retry = { attempts = 4, wait = "fixed"' in done.stdout and "retry_budget = { ratio = 0.5 }" in done.stdout
    ff = r["full_failure"]
    assert ff["within"] and ff["refused"] > 0 and ff["amplification"] <= ff["allowed"] + 0.01
    shown = json.loads(tree.cli("retry", "show", "--json").stdout)
    p = next(p for p in shown["pairs"] if p["callee"] == "p" and p["caller"] == "*")
    assert p["source"] == "live, for every caller" and p["retry"]["attempts"] == 4  # --apply


def test_a_grid_with_a_bad_value_is_refused_with_the_configs_words(tree: Tree, tmp_path: Path) -> None:
    (tmp_path / "grid.toml").write_text("attempts = [0, 2]\n")
    done = tree.cli("tune-retry", "p", "--grid", str(tmp_path / "grid.toml"))
    assert done.returncode == 2 and "retry.attempts must be an integer >= 1; got 0" in done.stderr
    target = tree.cli("tune-retry", "p", "--target", "speed>=9")
    assert target.returncode == 2 and "--target: cannot read 'speed>=9'" in target.stderr
