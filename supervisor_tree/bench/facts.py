"""Facts a result file carries: the machine, the versions, the commit.

Owns reading them; never fails on a missing fact (it is recorded as None or
"unknown").  The commit is read from the ``.git`` directory's files, without
running git, so it works where git is not installed; ``SUPERVISOR_TREE_COMMIT``
or ``GITHUB_SHA`` override it (CI builds from a tarball have no ``.git``).

    >>> {"cpu_model", "cores_logical", "memory_total_bytes", "kernel"} <= set(machine_facts())
    True
"""

from __future__ import annotations

import os
import platform
import socket
from pathlib import Path

__all__ = ["git_commit", "machine_facts", "package_version", "versions"]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Hardware", "cpu model"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_facts() -> dict[str, object]:
    """CPU model, cores, memory, kernel, load at the time of the call."""
    import psutil

    try:
        load: list[float] | None = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "cpu_model": _cpu_model(),
        "cores_logical": psutil.cpu_count(logical=True),
        "cores_physical": psutil.cpu_count(logical=False),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_total_bytes": psutil.virtual_memory().total,
        "memory_available_bytes": psutil.virtual_memory().available,
        "kernel": platform.release(),
        "os": platform.platform(),
        "arch": platform.machine(),
        "hostname": socket.gethostname(),
        "loadavg": load,
    }


def package_version() -> str:
    installed = _dist_version("supervisor_tree")
    if installed != "missing":
        return installed
    import supervisor_tree

    return str(getattr(supervisor_tree, "__version__", "0+unknown"))


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "missing"


def versions() -> dict[str, str]:
    """python, pyzmq, libzmq, the package, and the other libraries the figures depend on."""
    import zmq

    out = {
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "pyzmq": zmq.__version__,
        "libzmq": zmq.zmq_version(),
        "supervisor_tree": package_version(),
    }
    for name in ("multiprocess", "psutil", "rich", "cloudpickle"):
        out[name] = _dist_version(name)
    return out


def _git_dir(start: Path) -> Path | None:
    for d in (start, *start.parents):
        dot = d / ".git"
        if dot.is_dir():
            return dot
        if dot.is_file():  # a worktree or submodule: "gitdir: <path>"
            text = dot.read_text(encoding="utf-8").strip()
            if text.startswith("gitdir:"):
                target = Path(text[len("gitdir:") :].strip())
                return target if target.is_absolute() else (d / target).resolve()
    return None


def _resolve_ref(git_dir: Path, ref: str) -> str | None:
    common = git_dir
    commondir = git_dir / "commondir"
    if commondir.is_file():
        common = (git_dir / commondir.read_text(encoding="utf-8").strip()).resolve()
    for base in (git_dir, common):
        loose = base / ref
        if loose.is_file():
            return loose.read_text(encoding="utf-8").strip()
    packed = common / "packed-refs"
    if packed.is_file():
        for line in packed.read_text(encoding="utf-8").splitlines():
            sha, _, name = line.partition(" ")
            if name.strip() == ref:
                return sha.strip()
    return None


def git_commit(start: Path | None = None) -> str | None:
    """The commit checked out where the package lives (or `start`); None without git."""
    for var in ("SUPERVISOR_TREE_COMMIT", "GITHUB_SHA"):
        if os.environ.get(var):
            return os.environ[var]
    try:
        base = start if start is not None else Path(__file__).resolve().parent
        git_dir = _git_dir(base)
        if git_dir is None:
            return None
        head = (git_dir / "HEAD").read_text(encoding="utf-8").strip()
        if head.startswith("ref:"):
            return _resolve_ref(git_dir, head[len("ref:") :].strip())
        return head or None
    except OSError:
        return None
