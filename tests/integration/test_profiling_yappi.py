"""The yappi engine in real processes: stacks from yappi's call graph, clocks, pstats
and callgrind files, and a capture over a control channel while the worker serves,
dies, or turns out to be another process."""

from __future__ import annotations

import importlib
import json
import os
import pstats
import re
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from supervisor_tree.profiling import (
    CaptureOptions,
    Clock,
    Engine,
    Format,
    ProfilerError,
    Target,
    Unit,
    WorkerExited,
    capture,
    parse_collapsed,
    subtree_share,
    top_frames,
    write,
)

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[2]

WORKLOAD = """
import threading, time

def hot_spin():
    x = 0
    for i in range(40000):
        x += i

def cool_spin():
    x = 0
    for i in range(10000):  # a quarter of hot_spin's work
        x += i

def sleepy():
    time.sleep(0.3)  # the profiled workload itself: wall time that the cpu clock must leave out

def handle():
    hot_spin()
    cool_spin()
"""

# Engine calls in a fresh interpreter, so yappi's global state never touches pytest's.
ENGINE_RUN = WORKLOAD + """
import json, sys
from supervisor_tree.profiling import yappi_engine

clock, prefix = sys.argv[1], sys.argv[2]
yappi_engine.start(clock=clock)
side = threading.Thread(target=sleepy, name="side")
side.start()
t0 = time.monotonic()
while time.monotonic() - t0 < 1.0:
    handle()
side.join()
errors = []
try:
    yappi_engine.start()
except Exception as exc:
    errors.append(str(exc))
result = yappi_engine.stop(["collapsed", "pstats", "callgrind"], prefix)
try:
    yappi_engine.stop()
except Exception as exc:
    errors.append(str(exc))
result["errors"] = errors
print(json.dumps(result))
"""


def run_engine(clock: str, prefix: Path) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", ENGINE_RUN, clock, str(prefix)],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_engine_stacks_files_and_errors(tmp_path: Path) -> None:
    result = run_engine("wall", tmp_path / "p")
    stacks = parse_collapsed(str(result["collapsed"]))
    hot, cool = subtree_share(stacks, "hot_spin"), subtree_share(stacks, "cool_spin")
    print(f"yappi (wall): hot_spin {hot:.1%}, cool_spin {cool:.1%} of all threads")
    assert hot > 2.5 * cool
    busy = subtree_share(stacks, "handle (<string>:")
    assert 0.60 <= hot / busy <= 0.95  # within the request handler: ~80%
    edge = re.compile(r"handle \(<string>:\d+\);hot_spin \(<string>:\d+\)")
    assert any(edge.fullmatch(stack) for stack in stacks.stacks)  # rebuilt from yappi's call edges
    assert subtree_share(stacks, "sleepy (<string>:") > 0.15  # the other thread, on the wall clock
    assert not [s for s in stacks.stacks if "yappi" in s or "profiling/" in s]  # the profiler's frames
    assert result["threads"] == 2 and int(str(result["calls"])) > 100
    assert 1.0 <= float(str(result["duration_s"])) < 5.0
    loaded = pstats.Stats(str(result["pstats"]))
    assert any(func[2] == "hot_spin" for func in loaded.stats)  # type: ignore[attr-defined]
    callgrind = Path(str(result["callgrind"])).read_text()
    assert callgrind.count("\nfn=") >= 3 and "hot_spin" in callgrind
    assert result["pstats"] == f"{tmp_path / 'p'}.pstats"
    errors = result["errors"]
    assert isinstance(errors, list)
    start_twice, stop_twice = errors
    assert "already running" in start_twice
    assert "not running" in stop_twice


def test_cpu_clock_leaves_out_sleep(tmp_path: Path) -> None:
    cpu = parse_collapsed(str(run_engine("cpu", tmp_path / "c")["collapsed"]))
    assert subtree_share(cpu, "sleepy") < 0.05
    assert subtree_share(cpu, "hot_spin") > 0.6


# ------------------------------------------------------- over a control channel

# A stand-in worker: a thread serves "requests", the main thread answers control ops
# read from stdin (one JSON object per line), the way a worker's control socket does.
PIPE_WORKER = WORKLOAD + """
import json, os, sys
from supervisor_tree.profiling import yappi_engine

served = 0

def serve_forever():
    global served
    while True:
        handle()
        served += 1

def control_op(op, args):
    if op == "profile_start":
        return yappi_engine.start(**args)
    if op == "profile_stop":
        return yappi_engine.stop(**args)
    if op == "served":
        return served
    if op == "stall":  # busy inside one long call: control ops queue up unanswered
        time.sleep(args["s"])  # the workload: a handler that blocks, so control ops queue behind it
        return None
    if op == "exit_in":
        threading.Timer(args["s"], os._exit, (3,)).start()
        return None
    raise ValueError(f"unknown op {op!r}")

threading.Thread(target=serve_forever, name="serve", daemon=True).start()
print("ready", flush=True)
for line in sys.stdin:
    msg = json.loads(line)
    try:
        reply = {"ok": True, "value": control_op(msg["op"], msg["args"])}
    except Exception as exc:
        reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(reply), flush=True)
"""


class PipeControl:
    """``Control`` over the stand-in's stdin/stdout: one op, one reply line, a deadline."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self.proc, self.buf = proc, b""

    def __call__(self, op: str, args: Mapping[str, object], timeout: float) -> Mapping[str, object]:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"op": op, "args": dict(args)}) + "\n").encode())
        self.proc.stdin.flush()
        reply = json.loads(self.read_line(timeout))
        if not reply["ok"]:
            raise RuntimeError(reply["error"])
        return reply["value"]  # type: ignore[no-any-return]

    def read_line(self, timeout: float) -> bytes:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while b"\n" not in self.buf:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no reply within {timeout}s")
                if sel.select(left):
                    chunk = os.read(self.proc.stdout.fileno(), 65536)
                    if not chunk:
                        raise ConnectionError("control pipe closed")
                    self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line


@pytest.fixture
def worker() -> Iterator[tuple[subprocess.Popen[bytes], PipeControl]]:
    proc = subprocess.Popen([sys.executable, "-c", PIPE_WORKER], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, cwd=REPO)
    control = PipeControl(proc)
    try:
        assert control.read_line(15) == b"ready"
        yield proc, control
    finally:
        proc.kill()
        proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            assert pipe is not None
            pipe.close()


YAPPI = CaptureOptions(engine=Engine.YAPPI, duration_s=2)


def test_capture_over_the_control_channel_while_the_worker_serves(worker, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    proc, control = worker
    served_before = int(str(control("served", {}, 5)))
    profile = capture(Target("svc", proc.pid, 4), YAPPI, control)
    served_during = int(str(control("served", {}, 5))) - served_before
    assert served_during > 10  # ~500 unloaded (4 ms a request for 2 s): it kept serving
    meta = profile.meta
    assert (meta.engine, meta.worker_id, meta.pid, meta.generation) == (Engine.YAPPI, "svc", proc.pid, 4)
    assert (meta.unit, meta.clock, meta.rate_hz) == (Unit.MICROSECONDS, Clock.WALL, None)
    assert 2.0 <= meta.duration_s < 4.0 and meta.samples > 100
    assert top_frames(profile, 1)[0][0].startswith("hot_spin (<string>:")
    hot = subtree_share(profile, "hot_spin") / subtree_share(profile, "handle (<string>:")
    assert 0.60 <= hot <= 0.95
    # Every output format, each describing itself.
    svg = Path(write(profile, Format.SVG, None, str(tmp_path)))
    assert svg.name.startswith("svc-yappi-") and "worker svc" in svg.read_text()
    stats = pstats.Stats(write(profile, Format.PSTATS, None, str(tmp_path)))
    assert any(func[2] == "hot_spin" for func in stats.stats)  # type: ignore[attr-defined]
    assert any(func[0] == "supervisor_tree profile" and "worker svc" in func[2] for func in stats.stats)  # type: ignore[attr-defined]
    callgrind = Path(write(profile, Format.CALLGRIND, None, str(tmp_path))).read_text()
    assert callgrind.splitlines()[1].startswith("desc: supervisor_tree: yappi · worker svc")
    assert "fn=" in callgrind
    # yappi is off again in the worker.
    with pytest.raises(RuntimeError, match="not running"):
        control("profile_stop", {}, 5)


def test_a_worker_that_dies_ends_the_capture_and_says_its_data_is_lost(worker) -> None:  # type: ignore[no-untyped-def]
    proc, control = worker
    control("exit_in", {"s": 0.5}, 5)
    t0 = time.monotonic()
    with pytest.raises(WorkerExited) as info:
        capture(Target("svc", proc.pid, 4), CaptureOptions(engine=Engine.YAPPI, duration_s=30), control)
    assert time.monotonic() - t0 < 3.0
    message = str(info.value)
    assert message.startswith(f'worker "svc" (generation 4): pid {proc.pid} exited')
    assert "lost" in message and "--engine py-spy" in message and info.value.partial is None


def test_an_answer_from_another_pid_means_a_restart_and_yappi_is_stopped_there(worker) -> None:  # type: ignore[no-untyped-def]
    proc, control = worker
    stale = Target("svc", os.getpid(), 3)  # what the caller believed: an older incarnation
    with pytest.raises(ProfilerError, match=f"answered by pid {proc.pid}, not {os.getpid()}: the worker restarted"):
        capture(stale, YAPPI, control)
    with pytest.raises(RuntimeError, match="not running"):
        control("profile_stop", {}, 5)


def test_a_worker_too_busy_to_answer_is_pointed_to_py_spy(worker, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    proc, control = worker
    # The module, not the function the package re-exports under the same name.
    monkeypatch.setattr(importlib.import_module("supervisor_tree.profiling.capture"), "START_TIMEOUT_S", 0.5)
    stall = json.dumps({"op": "stall", "args": {"s": 30}}) + "\n"
    proc.stdin.write(stall.encode())  # not answered for 30 s: the control loop is busy
    proc.stdin.flush()
    with pytest.raises(ProfilerError, match="profile_start failed: no reply within 0.5s; a worker busy inside one long call"):
        capture(Target("svc", proc.pid, 4), YAPPI, control)


def test_yappi_needs_a_control_channel() -> None:
    with pytest.raises(ProfilerError, match="needs its control channel"):
        capture(Target("svc", os.getpid(), 1), YAPPI, None)
