"""`supervise status` and `supervise --help` as they read in a narrow terminal.

The id is the column a user reads first: at any width every id is printed whole, and
the optional columns (RSS, UPTIME, RESTART, GEN) give way instead.  Every command's
one-line help is a whole sentence, never cut with "...".
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from nodes import supervise, wait_for

from supervisor_tree.cli.main import main
from supervisor_tree.config.default_tree import PORT_ENV
from supervisor_tree.wire import rundir

pytestmark = pytest.mark.timeout(120)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def default_tree() -> Iterator[Path]:
    run_dir = Path(tempfile.mkdtemp(prefix="st-", dir="/tmp"))
    saved = os.environ.get(PORT_ENV)
    os.environ[PORT_ENV] = str(_free_port())
    try:
        started = supervise("start", "--detach", "--run-dir", str(run_dir), "--timeout", "60", timeout=90)
        assert started.returncode == 0, started.stderr
        yield run_dir
    finally:
        if saved is None:
            os.environ.pop(PORT_ENV, None)
        else:
            os.environ[PORT_ENV] = saved
        if rundir.is_locked(run_dir):
            supervise("stop", "--run-dir", str(run_dir), timeout=120)
        wait_for(lambda: not rundir.is_locked(run_dir), 30, "the default node to stop")
        shutil.rmtree(run_dir, ignore_errors=True)


def _ids(sup: dict[str, Any]) -> Iterator[str]:
    for child in sup["children"]:
        yield str(child["id"])
        if child.get("supervisor"):
            yield from _ids(child["supervisor"])


def _status_at(run_dir: Path, columns: int) -> str:
    env = {"COLUMNS": str(columns)}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        shown = supervise("status", "--run-dir", str(run_dir))
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert shown.returncode == 0, shown.stderr
    return shown.stdout


@pytest.mark.parametrize("columns", [80, 60, 140])
def test_every_id_is_whole_at_any_width(default_tree: Path, columns: int) -> None:
    value = json.loads(supervise("status", "--run-dir", str(default_tree), "--json").stdout)
    text = _status_at(default_tree, columns)
    first_cells = {line.split("│")[1].strip() for line in text.splitlines() if line.startswith("│")}
    assert set(_ids(value["tree"])) <= first_cells, text
    assert max(len(line) for line in text.splitlines()) <= columns, text


def test_narrow_terminals_lose_the_optional_columns_first(default_tree: Path) -> None:
    wide, narrow = _status_at(default_tree, 140), _status_at(default_tree, 80)
    header = next(line for line in wide.splitlines() if "ID" in line and "STATE" in line)
    assert all(col in header for col in ("RESTART", "UPTIME", "RSS"))
    header = next(line for line in narrow.splitlines() if "ID" in line and "STATE" in line)
    assert "RSS" not in header and "UPTIME" not in header
    assert all(col in header for col in ("ID", "TYPE", "STATE", "PID"))


def test_a_supervisors_strategy_and_intensity_never_wrap_its_id(default_tree: Path) -> None:
    text = _status_at(default_tree, 80)
    row = next(line for line in text.splitlines() if line.startswith("│ pool_sup "))
    assert "one_for_all" in row
    assert "3 in 10s" in text


@pytest.mark.parametrize("columns", [80, 100])
def test_every_commands_one_line_help_is_whole(columns: int) -> None:
    result = CliRunner().invoke(main, ["--help"], terminal_width=columns)
    assert result.exit_code == 0
    listed = result.output.split("Commands:", 1)[1].splitlines()
    helps = [line.split(None, 1)[1] for line in listed if line.strip() and len(line.split(None, 1)) == 2]
    assert len(helps) >= len(main.commands)
    for text in helps:
        assert not text.endswith("..."), text
        assert text.endswith("."), text
