"""The py-spy engine on real processes: shares, stuck and blocked processes, a process
that exits mid-capture, ptrace refused, --all, and no py-spy left running afterwards."""

from __future__ import annotations

import os
import selectors
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from supervisor_tree.profiling import (
    CaptureOptions,
    Engine,
    Format,
    ProfilerError,
    Target,
    WorkerExited,
    capture,
    capture_all,
    pyspy,
    subtree_share,
    top_frames,
    write,
)

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[2]

SPINNER = """
def hot_spin():
    x = 0
    for i in range(40000):
        x += i

def cool_spin():
    x = 0
    for i in range(10000):  # a quarter of hot_spin's work: ~20% of the time
        x += i

print("ready", flush=True)
while True:
    hot_spin()
    cool_spin()
"""

Spawn = Callable[[str], subprocess.Popen[bytes]]


def wait_ready(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """Block until the child prints its first line (it is running its workload)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    buf = b""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            assert left > 0, f"pid {proc.pid} did not get ready within {timeout}s"
            if sel.select(left):
                chunk = os.read(proc.stdout.fileno(), 4096)
                assert chunk, f"pid {proc.pid} exited before getting ready"
                buf += chunk


def pyspy_children() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True) if _name(p) == "py-spy"]


def _name(proc: psutil.Process) -> str:
    try:
        return str(proc.name())
    except psutil.Error:
        return ""


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Start ``python -c code``, wait until it says ready; kill them all afterwards."""
    started: list[subprocess.Popen[bytes]] = []

    def start(code: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, cwd=REPO)
        started.append(proc)
        wait_ready(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
    assert pyspy_children() == []  # the profiler never outlives a capture


def target(proc: subprocess.Popen[bytes], worker_id: str = "spinner") -> Target:
    return Target(worker_id, proc.pid, generation=1)


def test_hot_spin_is_the_widest_frame(spawn: Spawn) -> None:
    proc = spawn(SPINNER)
    profile = capture(target(proc), CaptureOptions(duration_s=2, rate_hz=100))
    hot, cool = subtree_share(profile, "hot_spin"), subtree_share(profile, "cool_spin")
    print(f"py-spy: hot_spin {hot:.1%}, cool_spin {cool:.1%} of {profile.meta.samples} samples")
    assert top_frames(profile, 1)[0][0].startswith("hot_spin (<string>:")
    assert 0.60 <= hot <= 0.95 and 0.05 <= cool <= 0.40
    meta = profile.meta
    assert (meta.engine, meta.worker_id, meta.pid, meta.generation) == (Engine.PYSPY, "spinner", proc.pid, 1)
    assert (meta.duration_s, meta.rate_hz) == (2.0, 100)
    assert 150 <= meta.samples <= 260 and meta.started_at
    assert pyspy_children() == []


def test_a_process_stuck_in_a_tight_loop_is_captured(spawn: Spawn) -> None:
    proc = spawn('print("ready", flush=True)\nwhile True: pass\n')
    profile = capture(target(proc), CaptureOptions(duration_s=1))
    assert profile.total >= 50
    assert all(stack.startswith("<module> (<string>:") for stack in profile.stacks)


def test_a_blocked_process_is_captured_with_idle(spawn: Spawn) -> None:
    proc = spawn('import time\nprint("ready", flush=True)\ntime.sleep(600)\n')
    profile = capture(target(proc), CaptureOptions(duration_s=1, idle=True))
    assert profile.total >= 50 and profile.meta.extra["idle"] is True
    assert all("<module>" in stack for stack in profile.stacks)


def test_a_fractional_duration_ends_on_time(spawn: Spawn) -> None:
    proc = spawn(SPINNER)
    t0 = time.monotonic()
    profile = capture(target(proc), CaptureOptions(duration_s=1.5))
    assert time.monotonic() - t0 < 3.0
    assert profile.meta.duration_s == 1.5 and 80 <= profile.meta.samples <= 200


def test_a_process_that_exits_mid_capture_ends_it_with_what_was_collected(spawn: Spawn) -> None:
    proc = spawn(SPINNER.replace("while True:", "import time\nt0 = time.time()\nwhile time.time() - t0 < 1.0:"))
    t0 = time.monotonic()
    with pytest.raises(WorkerExited) as info:
        capture(target(proc), CaptureOptions(duration_s=10))
    assert time.monotonic() - t0 < 5.0  # ended when the process did, not after 10 s
    message = str(info.value)
    assert message.startswith('worker "spinner" (generation 1): pid') and "exited" in message
    assert "kept the" in message
    partial = info.value.partial
    assert partial is not None and partial.total >= 30 and partial.meta.worker_id == "spinner"
    assert partial.meta.duration_s < 5.0


def test_a_process_already_gone_is_named(spawn: Spawn) -> None:
    proc = spawn('print("ready", flush=True)')
    proc.wait()
    with pytest.raises(WorkerExited, match=r"pid \d+ is gone"):
        capture(target(proc), CaptureOptions(duration_s=1))


def test_cancel_stops_py_spy_at_once(spawn: Spawn) -> None:
    proc = spawn(SPINNER)
    cancel = threading.Event()
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            capture(target(proc), CaptureOptions(duration_s=60), cancel=cancel)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    runner = threading.Thread(target=run)
    runner.start()
    deadline = time.monotonic() + 10
    while not pyspy_children():
        assert time.monotonic() < deadline, "py-spy never started"
        time.sleep(0.01)  # polling the process table: no event says py-spy started
    t0 = time.monotonic()
    cancel.set()
    runner.join(10)
    assert not runner.is_alive() and time.monotonic() - t0 < 3.0
    assert len(outcome) == 1 and "cancelled" in str(outcome[0])
    assert pyspy_children() == []


@pytest.mark.skipif(shutil.which("capsh") is None or os.geteuid() != 0, reason="needs capsh and root")
def test_ptrace_refused_says_why_and_what_to_change(spawn: Spawn) -> None:
    proc = spawn(SPINNER)
    probe = (
        "from supervisor_tree.profiling import *\n"
        f"try: capture(Target('spinner', {proc.pid}, 1), CaptureOptions(duration_s=1))\n"
        "except ProfilerError as e: print(e)\n"
    )
    # The same capture in a child that lacks CAP_SYS_PTRACE, as in a default container.
    done = subprocess.run(
        ["capsh", "--drop=cap_sys_ptrace", "--", "-c", f'exec "{sys.executable}" -c "$0"', probe],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )
    message = done.stdout.strip()
    assert message.startswith(f'worker "spinner" (generation 1): py-spy may not attach to pid {proc.pid}')
    for advice in ("lacks CAP_SYS_PTRACE", "--cap-add SYS_PTRACE", "--engine yappi"):
        assert advice in message
    assert "\n" not in message


@pytest.mark.parametrize(("scope", "cap", "expected"), [
    ("1", True, "the kernel refused ptrace (ptrace_scope is 1); run `sudo sysctl kernel.yama.ptrace_scope=0`, "
                "or use --engine yappi"),
    ("1", False, "the kernel refused ptrace (ptrace_scope is 1, this process lacks CAP_SYS_PTRACE); run `sudo "
                 "sysctl kernel.yama.ptrace_scope=0`, or run the container with --cap-add SYS_PTRACE, or use --engine yappi"),
    ("3", True, "(ptrace_scope is 3); ptrace_scope 3 forbids attaching until reboot, or use --engine yappi"),
    (None, True, "(no Yama ptrace_scope); run supervise as root or as the worker's user, or use --engine yappi"),
])
def test_ptrace_advice_fits_the_setting(scope: str | None, cap: bool, expected: str) -> None:
    message = pyspy.attach_denied_message(4136, scope, cap)
    assert message.startswith("py-spy may not attach to pid 4136: ") and message.endswith(expected)


def test_py_spy_missing_is_one_clear_line(spawn: Spawn, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    proc = spawn(SPINNER)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ProfilerError, match=r"py-spy not found next to .* or on PATH; install it"):
        capture(target(proc), CaptureOptions(duration_s=1))


def test_all_workers_at_once_one_graph_each_plus_a_merged_one(spawn: Spawn, tmp_path: Path) -> None:
    a, b = spawn(SPINNER), spawn('print("ready", flush=True)\nwhile True: pass\n')
    gone = spawn('print("ready", flush=True)')
    gone.wait()
    t0 = time.monotonic()
    result = capture_all([target(a, "a"), target(b, "b"), target(gone, "gone")], CaptureOptions(duration_s=2))
    assert time.monotonic() - t0 < 6.0  # in parallel, not 2 s after 2 s
    assert set(result.profiles) == {"a", "b"}
    assert set(result.errors) == {"gone"} and "is gone" in result.errors["gone"]
    roots = {stack.split(";")[0] for stack in result.merged.stacks}
    assert roots == {"a", "b"}
    assert 0.3 <= subtree_share(result.merged, "hot_spin", under="a") <= 0.6
    paths = [write(p, Format.SVG, None, str(tmp_path)) for p in (*result.profiles.values(), result.merged)]
    assert sorted(Path(p).name.split("-")[0] for p in paths) == ["a", "all", "b"]
