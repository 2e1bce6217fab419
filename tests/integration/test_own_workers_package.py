"""A user whose project has its own `workers` package (a common name) uses it beside ours.

The distribution claims one top-level name, `supervisor_tree`; the built-in components
are `supervisor_tree.workers.*`, so the user's `workers.jobs` and our registry live in one
tree.  The CLI runs here as an installed command would: from the user's directory, with
nothing of this repository on PYTHONPATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from nodes import wait_for

from supervisor_tree.client import Client
from supervisor_tree.wire import rundir

pytestmark = pytest.mark.timeout(120)

JOBS = textwrap.dedent(
    """
    from supervisor_tree import Worker

    class Echo(Worker):
        def handle_call(self, msg):
            return ["users-echo", msg]
    """
)

CONFIG = textwrap.dedent(
    """
    [tree]
    strategy = "one_for_one"

    [[tree.children]]
    id = "registry"
    start = "supervisor_tree.workers.registry:Registry"

    [[tree.children]]
    id = "echo"
    start = "workers.jobs:Echo"
    """
)


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-m", "supervisor_tree.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=90)


@pytest.fixture
def project(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    (tmp_path / "workers").mkdir()
    (tmp_path / "workers" / "__init__.py").write_text('"""The user\'s own workers."""\n')
    (tmp_path / "workers" / "jobs.py").write_text(JOBS)
    (tmp_path / "tree.toml").write_text(CONFIG)
    run_dir = Path(tempfile.mkdtemp(prefix="st-", dir="/tmp"))
    try:
        yield tmp_path, run_dir
    finally:
        if rundir.is_locked(run_dir):
            run_cli("stop", "--run-dir", str(run_dir), cwd=tmp_path)
        wait_for(lambda: not rundir.is_locked(run_dir), 30, "the node to stop")
        shutil.rmtree(run_dir, ignore_errors=True)


def test_the_users_workers_and_ours_in_one_tree(project: tuple[Path, Path]) -> None:
    directory, run_dir = project
    started = run_cli("start", "tree.toml", "--detach", "--run-dir", str(run_dir), cwd=directory)
    assert started.returncode == 0, started.stderr + started.stdout
    with Client(run_dir, timeout=10.0) as c:
        assert c.call("echo", "hi") == ["users-echo", "hi"]
        assert c.call("registry", ("whereis", "nobody")) is None


def test_the_default_tree_resolves_from_a_directory_with_its_own_workers(project: tuple[Path, Path]) -> None:
    directory, _ = project
    checked = run_cli("check", cwd=directory)  # no CONFIG: the built-in default tree, every start imported
    assert checked.returncode == 0, checked.stderr
    assert "supervisor_tree.workers.network:Network" in checked.stdout


def test_an_old_builtin_name_still_starts_with_a_notice(tmp_path: Path) -> None:
    (tmp_path / "old.toml").write_text('[tree]\n[[tree.children]]\nid = "reg"\nstart = "workers.registry:Registry"\n')
    checked = run_cli("check", "old.toml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert "supervisor_tree.workers.registry:Registry" in checked.stdout
    (notice,) = checked.stderr.splitlines()
    assert notice.startswith('supervise: warning: old.toml: tree.children[0] "reg": start "workers.registry:Registry" is the old name')
