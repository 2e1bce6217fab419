"""Both engines against a worker of a real running tree, its code untouched: py-spy by
pid, yappi over the worker's own control socket; and a worker killed mid-capture."""

from __future__ import annotations

import os
import pstats
import signal
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from nodes import Tree, write_config

from supervisor_tree.profiling import (
    CaptureOptions,
    Control,
    Engine,
    Format,
    Target,
    WorkerExited,
    capture,
    subtree_share,
    write,
)

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]

SPIN_APP = '''
import threading

from supervisor_tree import Worker


def hot_spin():
    x = 0
    for i in range(40000):
        x += i


def cool_spin():
    x = 0
    for i in range(10000):  # a quarter of hot_spin's work
        x += i


def spin_forever():
    while True:
        hot_spin()
        cool_spin()


class Spinner(Worker):
    def init(self):
        threading.Thread(target=spin_forever, name="spin", daemon=True).start()

    def handle_call(self, msg):
        return msg
'''

CONFIG = """
[tree]
strategy = "one_for_one"
intensity = 5
period = 10

[[tree.children]]
id = "spinner"
start = "spinapp:Spinner"
"""


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[Tree]:
    (tmp_path / "spinapp.py").write_text(SPIN_APP)
    t = Tree(write_config(tmp_path, CONFIG))
    try:
        started = t.start()
        assert started.returncode == 0, started.stderr
        yield t
    finally:
        t.stop()


def spinner(t: Tree) -> Target:
    found = t.client.resolve("spinner")
    return Target("spinner", int(found.pid), int(found.generation))


def control_of(t: Tree, worker_id: str) -> Control:
    def control(op: str, args: Mapping[str, object], timeout: float) -> Mapping[str, object]:
        return t.client.control_worker(worker_id, op, dict(args), timeout)  # type: ignore[no-any-return]
    return control


def spin_share(share_hot: float, share_cool: float) -> float:
    return share_hot / (share_hot + share_cool)


def test_py_spy_and_yappi_on_a_running_worker(tree: Tree, tmp_path: Path) -> None:
    target = spinner(tree)
    sampled = capture(target, CaptureOptions(duration_s=2))
    by_pyspy = spin_share(subtree_share(sampled, "hot_spin"), subtree_share(sampled, "cool_spin"))
    traced = capture(target, CaptureOptions(engine=Engine.YAPPI, duration_s=2), control_of(tree, "spinner"))
    by_yappi = spin_share(subtree_share(traced, "hot_spin"), subtree_share(traced, "cool_spin"))
    print(f"real worker: hot_spin is {by_pyspy:.1%} (py-spy) and {by_yappi:.1%} (yappi) of the spin thread")
    assert 0.60 <= by_pyspy <= 0.95 and 0.60 <= by_yappi <= 0.95
    assert traced.meta.generation == target.generation and traced.meta.pid == target.pid
    assert 1.9 <= traced.meta.duration_s < 4.0
    stats = pstats.Stats(write(traced, Format.PSTATS, None, str(tmp_path)))
    assert any(func[2] == "hot_spin" for func in stats.stats)  # type: ignore[attr-defined]
    assert tree.client.control_worker("spinner", "ping", {}, 5) == "pong"  # still serving


def test_a_worker_killed_mid_capture(tree: Tree) -> None:
    target = spinner(tree)
    # A timer, not a sleep: the kill lands while each capture is under way.
    threading.Timer(1.0, os.kill, (target.pid, signal.SIGKILL)).start()
    with pytest.raises(WorkerExited) as sampled:
        capture(target, CaptureOptions(duration_s=10))
    assert sampled.value.partial is not None and sampled.value.partial.total > 30
    assert str(sampled.value).startswith(f'worker "spinner" (generation {target.generation}): pid {target.pid} exited')

    tree.wait_started("spinner", target.generation + 1)  # the supervisor restarted it
    restarted = spinner(tree)
    threading.Timer(1.0, os.kill, (restarted.pid, signal.SIGKILL)).start()
    options = CaptureOptions(engine=Engine.YAPPI, duration_s=10)
    with pytest.raises(WorkerExited, match="yappi's data lived in that process and is lost"):
        capture(restarted, options, control_of(tree, "spinner"))
