"""Fixtures for every test.

`start_tree(text)`: a tree started from a config text (detached, in the test's tmp
dir), stopped when the test ends; call it again for more trees.

`no_leaked_processes` (autouse) fails a test that leaves a child process behind:
every descendant of the test process that appeared during the test must be gone
(or a zombie, which holds no resources but its pid) once the test's own fixtures
have torn down.  Leaked processes are SIGKILLed so that the next test starts clean.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from nodes import Trees

LEAK_GRACE_S = 3.0  # what a process may take to exit after its test let it go


def _live_descendants() -> dict[int, psutil.Process]:
    found = {}
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                found[proc.pid] = proc
        except psutil.NoSuchProcess:
            pass
    return found


def _describe(proc: psutil.Process) -> str:
    try:
        return f"pid {proc.pid} ({' '.join(proc.cmdline())[:120] or proc.name()})"
    except psutil.Error:
        return f"pid {proc.pid}"


@pytest.fixture(autouse=True)
def no_leaked_processes():
    # Autouse fixtures are set up first, so this teardown runs after the test's other fixtures'.
    before = set(_live_descendants())
    yield
    deadline = time.monotonic() + LEAK_GRACE_S
    while True:
        leaked = {pid: p for pid, p in _live_descendants().items() if pid not in before}
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.02)  # polling the process table: no event tells us a non-child exited
    if leaked:
        described = ", ".join(_describe(p) for p in leaked.values())
        for proc in leaked.values():
            try:
                proc.kill()
            except psutil.Error:
                pass
        pytest.fail(f"the test left {len(leaked)} process(es) behind: {described}", pytrace=False)


@pytest.fixture
def start_tree(tmp_path: Path) -> Iterator[Trees]:
    trees = Trees(tmp_path)
    yield trees
    trees.stop_all()
