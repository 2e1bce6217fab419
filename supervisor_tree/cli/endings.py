"""How the CLI tells a node's end: a failed `start --detach` with the workers' whole errors,
and how long systemd should give a tree to stop.

    detach_failure(reason, RUN/node.log, offset, since=t)   # the lines `start --detach` prints on failure
    stop_timeout(spec.tree)                        # seconds for TimeoutStopSec=, None for no limit
"""

from __future__ import annotations

import math
from pathlib import Path

from supervisor_tree.node.logfile import parse_line
from supervisor_tree.spec import ShutdownKind, SupervisorSpec

__all__ = ["detach_failure", "tracebacks", "stop_timeout"]

_LOG_READ_MAX = 1 << 20  # what a failed start may have written to node.log that we read back
_CHAINED = ("The above exception was the direct cause", "During handling of the above exception")


def detach_failure(reason: str, log: Path, offset: int, since: float = 0.0) -> str:
    """'supervise: the tree failed to start: ...' and every traceback the failed start logged, whole:
    in node.log from `offset`, then in each worker's log (RUN/logs/ID.log) from time `since`."""
    reason = reason or "the node exited"
    head = reason if reason.startswith("the tree failed to start") else f"the tree failed to start: {reason}"
    lines = [f"supervise: {head}"]
    try:
        with open(log, "rb") as f:
            f.seek(offset)
            text = f.read(_LOG_READ_MAX).decode(errors="replace")
    except OSError:
        text = ""
    texts = [text, *(_worker_output(path, since) for path in sorted((log.parent / "logs").glob("*.log")))]
    for block in (b for t in texts for b in tracebacks(t)):
        lines += ["", *block]
    if len(lines) == 1:
        lines.append(f"supervise: see {log}")
    return "\n".join(lines)


def _worker_output(path: Path, since: float) -> str:
    """What a worker's log file holds of its stderr and logging records written at `since` or later."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - _LOG_READ_MAX))
            raw = f.read().decode(errors="replace")
    except OSError:
        return ""
    lines = (parse_line(line) for line in raw.splitlines())
    return "\n".join(ln.text for ln in lines if ln is not None and ln.stream in ("err", "log") and ln.ts >= since - 0.001)


def tracebacks(text: str) -> list[list[str]]:
    """Each traceback in a log, whole: the line that announced it, the frames, the exception
    (and the exceptions chained to it)."""
    lines = text.splitlines()
    blocks: list[list[str]] = []
    i = 0
    while i < len(lines):
        if not lines[i].startswith("Traceback (most recent call last):"):
            i += 1
            continue
        start = i - 1 if i > 0 and not lines[i - 1].startswith(" ") else i
        i = _block_end(lines, i + 1)
        blocks.append(lines[start:i])
    return blocks


def _block_end(lines: list[str], i: int) -> int:
    """The index after a traceback's exception line (following chained tracebacks)."""
    while i < len(lines):
        line = lines[i]
        i += 1
        if line.startswith((" ", "\t")) or not line:
            continue
        if line.startswith(("Traceback (most recent call last):", *_CHAINED)):
            continue
        # the exception line; a chained traceback may follow after one blank line
        if i + 1 < len(lines) and not lines[i] and lines[i + 1].startswith(_CHAINED):
            i += 1
            continue
        return i
    return i


def stop_timeout(tree: SupervisorSpec) -> int | None:
    """Seconds a whole tree may take to stop (children stop one after the other), with 30 s to spare;
    None when a worker's shutdown is infinity."""
    ms = _stop_ms(tree)
    return None if ms is None else math.ceil(ms / 1000) + 30


def _stop_ms(tree: SupervisorSpec) -> int | None:
    total = 0
    for child in tree.children:
        if child.supervisor is not None:
            part = _stop_ms(child.supervisor)
        elif child.effective_shutdown.kind is ShutdownKind.INFINITY:
            part = None
        else:
            part = child.effective_shutdown.timeout_ms
        if part is None:
            return None
        total += part
    return total
