"""The built-in default tree as a user starts it: `supervise start --detach` with no config.

The network's ports come from $SUPERVISE_NETWORK_PORT and $SUPERVISE_NETWORK_HTTP_PORT
(free ports picked here), so that the test never depends on 7411 and 7412 being free; everything else is the
default tree unchanged, in a private run directory.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nodes import REPO, supervise, wait_for

from supervisor_tree.config.default_tree import DEFAULT_HTTP_PORT, DEFAULT_PORT, EXAMPLE, HTTP_PORT_ENV, PORT_ENV
from supervisor_tree.wire import rundir

pytestmark = pytest.mark.timeout(120)

COMPONENTS = ("registry", "session", "queue", "pool", "network.1", "network.2", "network.3")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def default_node(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, int]]:
    port = free_port()
    monkeypatch.setenv(PORT_ENV, str(port))
    monkeypatch.setenv(HTTP_PORT_ENV, str(free_port()))
    run_dir = Path(tempfile.mkdtemp(prefix="st-", dir="/tmp"))  # short: ipc paths have a length limit
    try:
        yield run_dir, port
    finally:
        if rundir.is_locked(run_dir):
            supervise("stop", "--run-dir", str(run_dir), timeout=120)
        info = rundir.read_info(run_dir)
        if rundir.is_locked(run_dir) and info:
            os.kill(info.pid, signal.SIGKILL)
        wait_for(lambda: not rundir.is_locked(run_dir), 30, "the default node to stop")
        shutil.rmtree(run_dir, ignore_errors=True)


def rpc(port: int, *requests: dict[str, Any]) -> list[dict[str, Any]]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"".join(json.dumps(r).encode() + b"\n" for r in requests))
        buf = b""
        while buf.count(b"\n") < len(requests):
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed after {buf!r}")
            buf += chunk
    return [json.loads(line) for line in buf.splitlines()]


def test_start_with_no_config_runs_all_five_components(default_node: tuple[Path, int]) -> None:
    run_dir, port = default_node
    started = supervise("start", "--detach", "--run-dir", str(run_dir), "--timeout", "60", timeout=90)
    assert started.returncode == 0, started.stderr

    status = supervise("status", "--run-dir", str(run_dir), "--json")
    assert status.returncode == 0, status.stderr
    text = status.stdout
    for component in COMPONENTS:
        assert f'"{component}"' in text, f"{component} missing from status: {text[:2000]}"
    assert "running" in text

    replies = rpc(port,
                  {"jsonrpc": "2.0", "id": 1, "method": "ping"},
                  {"jsonrpc": "2.0", "id": 2, "method": "initialize", "params": {"protocolVersion": "2025-06-18"}},
                  {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                   "params": {"name": "echo", "arguments": {"text": "default tree"}}})  # fmt: skip
    assert replies[0] == {"jsonrpc": "2.0", "id": 1, "result": {}}
    assert replies[1]["result"]["_meta"]["supervisor-tree/sessionId"]
    assert replies[2]["result"]["content"][0]["text"] == "default tree"

    stopped = supervise("stop", "--run-dir", str(run_dir), timeout=120)
    assert stopped.returncode == 0, stopped.stderr


def test_the_default_tree_listens_on_7411_and_7412_and_examples_says_the_same() -> None:
    assert (REPO / "examples" / "default.toml").read_text() == EXAMPLE.read_text()
    tree = tomllib.loads(EXAMPLE.read_text())["tree"]
    ports = {(c["args"]["port"], c["args"]["http_port"]) for sup in tree["children"] for c in sup.get("children", ())
             if c.get("start") == "supervisor_tree.workers.network:Network"}  # fmt: skip
    assert ports == {(DEFAULT_PORT, DEFAULT_HTTP_PORT)}
    checked = supervise("check", str(EXAMPLE))
    assert checked.returncode == 0, checked.stderr


def test_every_process_of_the_default_tree_is_named_by_its_title(default_node: tuple[Path, int]) -> None:
    import subprocess

    from nodes import children_by_role, title_of

    from supervisor_tree.client import Client

    run_dir, _ = default_node
    started = supervise("start", "--detach", "--run-dir", str(run_dir), "--timeout", "60", timeout=90)
    assert started.returncode == 0, started.stderr
    info = rundir.read_info(run_dir)
    assert info is not None
    assert title_of(info.pid) == "supervise[default] node"
    roles = children_by_role(info.pid)
    assert len(roles.pop("fork-server")) == 1 and roles.pop("standby")
    workers = {role.partition("#")[0]: (int(role.partition("#")[2]), pids) for role, pids in roles.items()}
    with Client(run_dir, timeout=10.0) as c:
        for worker_id, (generation, pids) in workers.items():
            target = c.resolve(worker_id)
            assert (target.generation, [target.pid]) == (generation, pids), worker_id
    assert set(COMPONENTS) | {f"pool_member-{n}" for n in range(1, 5)} == set(workers)
    for pid in [info.pid, *(p for _, pids in workers.values() for p in pids)]:
        assert title_of(pid).startswith("supervise[default] ")
    registry = workers["registry"][1][0]
    dump = subprocess.run([str(Path(sys.executable).parent / "py-spy"), "dump", "--pid", str(registry)],
                          capture_output=True, text=True, timeout=60)
    assert f"Process {registry}: supervise[default] registry#1" in dump.stdout, dump.stderr
