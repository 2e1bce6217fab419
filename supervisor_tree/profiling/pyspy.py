"""The py-spy engine: sample a running worker from outside, by pid.

Owns running ``py-spy record`` and turning what it printed into a ``Profile`` or a
one-line ``ProfilerError``.  Needs no cooperation from the worker: it works on a
worker stuck in a loop, blocked in a syscall or deaf to its control channel.  It
must not outlive its caller: the py-spy process is stopped (SIGINT, then SIGKILL) on
every way out, and never runs past the duration plus ``GRACE_S``.

    >>> profile = record(4136, CaptureOptions(duration_s=2, rate_hz=100))  # doctest: +SKIP
    >>> profile.meta.samples                               # doctest: +SKIP
    200

Frames are aggregated per function (``--function``: the line of the ``def``), so a
frame reads ``hot_spin (app/work.py:12)`` whatever line was running, the same
granularity as the yappi engine.  py-spy pauses the process for each sample (its
default), which costs the worker a few microseconds per sample and keeps the stacks
consistent.  py-spy's ``--duration`` takes whole seconds; a fractional duration is
ended with SIGINT, on which py-spy writes what it has.
"""

from __future__ import annotations

import enum
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from supervisor_tree.profiling.collapsed import (
    Clock,
    Engine,
    Profile,
    ProfileMeta,
    Unit,
    now_iso,
    parse_collapsed,
)
from supervisor_tree.profiling.errors import ProfilerError
from supervisor_tree.profiling.exited import WorkerExited
from supervisor_tree.profiling.options import CaptureOptions

GRACE_S = 10.0  # attaching, symbol lookup and writing the output, beyond the duration
STOP_WAIT_S = 2.0  # after SIGINT, before SIGKILL
POLL_S = 0.05  # how often the wait looks at the clock and at ``cancel``
CAP_SYS_PTRACE = 19
PTRACE_SCOPE = "/proc/sys/kernel/yama/ptrace_scope"


def find_pyspy() -> str:
    """The py-spy next to this interpreter (its venv), else the one on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("py-spy")
    if found:
        return found
    raise ProfilerError(
        f"py-spy not found next to {sys.executable} or on PATH; "
        "install it (`pip install py-spy`) or use --engine yappi"
    )


def record(pid: int, options: CaptureOptions, cancel: threading.Event | None = None) -> Profile:
    """Sample ``pid`` as ``options`` say (duration, rate, py-spy's flags); a Profile.

    The meta's worker id and generation are left blank for the caller to fill in.
    Raises ``WorkerExited`` (with ``partial`` set when py-spy kept samples) if the
    process exits, ``ProfilerError`` for anything else that went wrong, including
    ``cancel`` being set (py-spy is stopped within ``POLL_S``).
    """
    flags = [f"--{flag}" for flag in ("native", "idle", "gil", "subprocesses")
             if getattr(options, flag)]
    with tempfile.TemporaryDirectory(prefix="supervisor_tree-pyspy-") as tmp:
        raw, log = Path(tmp, "raw.txt"), Path(tmp, "py-spy.log")
        cmd = [find_pyspy(), "record", "--pid", str(pid),
               "--duration", str(max(1, math.ceil(options.duration_s))),
               "--rate", str(options.rate_hz), "--format", "raw", "--output", str(raw),
               "--function", *flags]
        started_at, t0 = now_iso(), time.monotonic()
        ending = _run(cmd, log, options.duration_s, cancel)
        elapsed = time.monotonic() - t0
        output = log.read_text(errors="replace")
        wrote = raw.exists()
        text = raw.read_text(errors="replace") if wrote else ""
    if ending is not _Ending.DONE:
        raise ProfilerError(_ENDINGS[ending].format(pid=pid, limit=options.duration_s + GRACE_S))
    exited = "process exited" in output
    if not wrote or (not exited and "Wrote raw" not in output):
        raise classify_failure(pid, output)
    meta = ProfileMeta(
        engine=Engine.PYSPY, worker_id="", pid=pid, generation=0,
        duration_s=round(min(elapsed, options.duration_s) if exited else options.duration_s, 3),
        samples=_reported(output, "Samples"), started_at=started_at, rate_hz=options.rate_hz,
        clock=Clock.WALL if options.idle else Clock.CPU, unit=Unit.SAMPLES,
        extra={"errors": _reported(output, "Errors"),
               **{flag: getattr(options, flag) for flag in ("native", "idle", "gil", "subprocesses")}},
    )
    profile = Profile(parse_collapsed(text).stacks, meta)
    return _checked(profile, exited, options.duration_s)


class _Ending(enum.Enum):
    DONE = "done"  # py-spy ended by itself, or on our SIGINT at a fractional duration
    LATE = "late"  # still running at duration + grace: stopped
    CANCELLED = "cancelled"


_ENDINGS = {
    _Ending.LATE: ("py-spy did not finish sampling pid {pid} within {limit:.0f} s (duration + "
                   f"{GRACE_S:.0f} s grace) and was stopped; is the process frozen (SIGSTOP, "
                   "or stuck in the kernel)?"),
    _Ending.CANCELLED: "py-spy sampling of pid {pid} was cancelled",
}


def _checked(profile: Profile, exited: bool, requested_s: float) -> Profile:
    meta = profile.meta
    if exited:
        kept = (f"kept the {meta.samples} samples taken before" if profile.stacks
                else "no samples were taken")
        raise WorkerExited(
            f"pid {meta.pid} exited {meta.duration_s:.1f} s into a {requested_s:g} s capture; {kept}",
            partial=profile if profile.stacks else None,
        )
    if not profile.stacks:
        hint = ("" if meta.extra.get("idle") else
                ": it sat idle (blocked or waiting) the whole time; add --idle to see where it waits")
        raise ProfilerError(f"py-spy took no samples of pid {meta.pid} in {meta.duration_s:g} s{hint}")
    return profile


def _run(cmd: list[str], log: Path, duration_s: float, cancel: threading.Event | None) -> _Ending:
    """Run py-spy to its end; stop it (SIGINT) early at a fractional duration or on cancel."""
    t0 = time.monotonic()
    stop_at = None if float(duration_s).is_integer() else t0 + duration_s
    give_up_at = t0 + duration_s + GRACE_S
    with log.open("wb") as out:
        # Own session: a Ctrl-C in the terminal reaches us, and we stop py-spy ourselves.
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            interrupted = False
            while True:
                try:
                    proc.wait(timeout=POLL_S)
                    return _Ending.CANCELLED if cancel and cancel.is_set() else _Ending.DONE
                except subprocess.TimeoutExpired:
                    pass
                now = time.monotonic()
                if now >= give_up_at:
                    return _Ending.LATE
                wanted = (cancel is not None and cancel.is_set()) or (stop_at is not None and now >= stop_at)
                if wanted and not interrupted:
                    proc.send_signal(signal.SIGINT)  # py-spy writes what it has and exits
                    interrupted = True
        finally:
            _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)  # lets py-spy detach from the worker cleanly
    try:
        proc.wait(timeout=STOP_WAIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _reported(output: str, what: str) -> int:
    match = re.search(rf"{what}: (\d+)", output)
    return int(match.group(1)) if match else 0


def classify_failure(pid: int, output: str) -> ProfilerError:
    """One line from py-spy's failure output: denied, gone, not Python, or other."""
    low = output.lower()
    if "permission denied" in low or "operation not permitted" in low:
        return ProfilerError(attach_denied_message(pid, read_ptrace_scope(), has_cap_sys_ptrace()))
    if not _alive(pid) or "no such process" in low:
        return WorkerExited(f"pid {pid} is gone: it exited before py-spy could attach")
    detail = _error_line(output)
    if "python version" in low or "python interpreter" in low:
        return ProfilerError(f"py-spy found no Python interpreter it can read in pid {pid}: {detail}")
    return ProfilerError(f"py-spy failed on pid {pid}: {detail}")


def _error_line(output: str) -> str:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    for line in lines:
        if line.startswith("Error:"):
            return line[len("Error:"):].strip()
    useful = [ln for ln in lines if not ln.startswith("py-spy>")]
    return useful[-1] if useful else "no output"


def attach_denied_message(pid: int, scope: str | None, cap_sys_ptrace: bool) -> str:
    """Why the kernel refused ptrace, from Yama's ``scope`` (None: no Yama) and our
    capability, and what the user can change."""
    why = [f"ptrace_scope is {scope}" if scope is not None else "no Yama ptrace_scope"]
    fixes = []
    if scope == "3":
        fixes.append("ptrace_scope 3 forbids attaching until reboot")
    elif scope in ("1", "2"):
        fixes.append("run `sudo sysctl kernel.yama.ptrace_scope=0`")
    if not cap_sys_ptrace:
        why.append("this process lacks CAP_SYS_PTRACE")
        fixes.append("run the container with --cap-add SYS_PTRACE")
    if not fixes:
        fixes.append("run supervise as root or as the worker's user")
    fixes.append("use --engine yappi")
    return (f"py-spy may not attach to pid {pid}: the kernel refused ptrace "
            f"({', '.join(why)}); {', or '.join(fixes)}")


def read_ptrace_scope() -> str | None:
    try:
        return Path(PTRACE_SCOPE).read_text().strip()
    except OSError:
        return None


def has_cap_sys_ptrace() -> bool:
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return True  # not Linux /proc: nothing to diagnose
    match = re.search(r"^CapEff:\s*([0-9a-fA-F]+)$", status, re.MULTILINE)
    return match is None or bool(int(match.group(1), 16) >> CAP_SYS_PTRACE & 1)


def _alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False
