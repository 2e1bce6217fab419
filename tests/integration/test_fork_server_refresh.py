"""The fork server imports the project's code again in place (`reload --code`), with real processes.

The test plays the node, as test_launcher.py does: a LocalLauncher, the inbound PULL
socket workers report on, a `channel.Caller` to talk to them.
"""

from __future__ import annotations

import os
import select
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import zmq

from supervisor_tree.node.launchers.local import LocalLauncher
from supervisor_tree.wire import auth, channel
from supervisor_tree.wire.channel import Caller
from supervisor_tree.worker.spawn import SpawnRequest

pytestmark = pytest.mark.timeout(60)

MODULE = '''
from supervisor_tree import Worker

VERSION = "v1"


class W(Worker):
    def handle_call(self, msg):
        return VERSION
'''


class Harness:
    def __init__(self, run_dir: str, code_dir: str) -> None:
        self.run_dir, self.code_dir = run_dir, code_dir
        self.launcher = LocalLauncher(run_dir, preload=["zmod"], sys_path=[code_dir], standby=2)
        self.launcher.start()
        self.ctx = zmq.Context()
        self.inbound = channel.make_socket(self.ctx, zmq.PULL)
        self.inbound.bind(f"ipc://{run_dir}/inbound")
        self.key = auth.key_for(run_dir)  # made by the launcher's start(), as a node would before it
        self.caller = Caller(self.ctx, run_dir, self.key)
        self.gen = 0
        self.pump_until(lambda: self.launcher.code.epoch >= 1 and self.launcher.standbys_at_hand >= 2, "the first snapshot")

    def pump_until(self, done, what: str, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            assert left > 0, f"timed out waiting for {what}"
            select.select([self.launcher.fileno()], [], [], left)
            self.launcher.read_events()

    def children(self) -> set[int]:
        """The workers and standbys: this process (the node's part, a subreaper) is their parent."""
        return {p.pid for p in psutil.Process().children() if p.status() != psutil.STATUS_ZOMBIE} - {self.launcher.pid}

    def start(self) -> tuple[str, int]:
        self.gen += 1
        base = f"{self.run_dir}/w/z-{self.gen}"
        req = SpawnRequest(self.gen, "z", self.gen, "zmod:W", {}, self.run_dir, f"ipc://{self.run_dir}/inbound",
                           f"ipc://{base}.mbx", f"ipc://{base}.ctl", 5.0, (self.code_dir,))  # fmt: skip
        self.launcher.spawn(req)
        deadline = time.monotonic() + 10
        while True:
            assert self.inbound.poll(int(max(0.0, deadline - time.monotonic()) * 1000) + 1), "no ready notice"
            notice = channel.decode_notice(self.key, self.inbound.recv())
            if notice[0] == "ready" and notice[2] == self.gen:
                return req.mailbox, int(notice[3])  # type: ignore[call-overload]

    def refresh(self, also: tuple[str, ...] = ()) -> None:
        epoch = self.launcher.code.epoch
        self.launcher.refresh(["zmod"], also)
        self.pump_until(lambda: self.launcher.code.epoch > epoch and not self.launcher.code.refreshing, "the refresh")

    def close(self) -> None:
        self.launcher.close()
        self.caller.close()
        self.inbound.close()
        self.ctx.term()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    (tmp_path / "zmod.py").write_text(MODULE)
    run_dir = tempfile.mkdtemp(prefix="st-", dir="/tmp")  # short: ipc paths are limited to 107 bytes
    h = Harness(run_dir, str(tmp_path))
    yield h
    h.close()
    shutil.rmtree(run_dir, ignore_errors=True)


def test_after_a_refresh_new_workers_run_the_new_code_and_running_ones_keep_theirs(harness: Harness, tmp_path: Path) -> None:
    h = harness
    module = str(tmp_path / "zmod.py")
    assert module in h.launcher.code.files[1]
    assert any(f.endswith("node/launchers/forkserver.py") for f in h.launcher.code.own)  # what it keeps
    assert any(f.endswith("wire/auth.py") for f in h.launcher.code.own)  # and with it the run's key, in memory
    old, old_pid = h.start()
    assert h.caller.call(old, "?", 5.0) == "v1"
    h.pump_until(lambda: h.launcher.standbys_at_hand >= 2 and set(h.launcher.standby_pids) <= h.children(),
                 "the standbys, adopted by this process")  # announced as forked, adopted once their intermediate exits
    old_standbys = h.children() - {old_pid}
    assert len(old_standbys) == 2
    (tmp_path / "zmod.py").write_text(MODULE.replace('"v1"', '"v2-new"'))  # another size: its cached bytecode is stale

    os.unlink(f"{h.run_dir}/key")  # workers forked after the refresh must still hold the key: inherited, not read
    h.refresh()
    assert h.launcher.code.problems == () and h.launcher.code.files[2][module] != h.launcher.code.files[1][module]
    h.pump_until(lambda: h.launcher.standbys_at_hand >= 2, "new standbys")
    assert not old_standbys & h.children()  # killed and reaped by the refresh
    h.refresh()  # four standbys retired in a row: three early deaths would have stopped the standbys
    h.pump_until(lambda: h.launcher.standbys_at_hand >= 2, "new standbys again")
    new, _ = h.start()
    assert h.caller.call(new, "?", 5.0) == "v2-new"
    assert h.caller.call(old, "?", 5.0) == "v1"  # not restarted: untouched


def test_a_refresh_reports_a_module_that_no_longer_imports(harness: Harness, tmp_path: Path) -> None:
    h = harness
    (tmp_path / "zmod.py").write_text("def broken(:\n")
    h.refresh(also=("zmod",))
    assert len(h.launcher.code.problems) == 1
    assert h.launcher.code.problems[0].startswith('module "zmod": SyntaxError')
