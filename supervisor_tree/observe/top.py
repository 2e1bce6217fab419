"""`supervise top`: the workers of a running tree, busiest first, refreshed each second.

Owns the table (rich) and the sort orders; the figures come from `snapshot.Sampler`
(psutil and the heartbeats).  Like observer_cli and recon's proc_window: CPU and call
rates are over the last interval, not since the start.

    supervise top                      # live; keys: c cpu, m memory, b mailbox, r rate, p p99, x restarts, i id, q quit
    supervise top --sort rss --limit 10
    supervise top --once --json        # two samples one interval apart, then JSON

Columns: WORKER, SUPERVISOR, STATE, PID, GEN, CPU%, RSS, MBOX (messages waiting),
CALLS/S, P99 (ms, call latency over the last heartbeat window), RESTARTS (since the
node started) and HEADROOM (restarts its supervisor may still take in its period).
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import termios
import time
import tty
from collections.abc import Callable, Iterator, Sequence

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from supervisor_tree.observe.snapshot import Sampler, Snapshot, WorkerRow

__all__ = ["SORTS", "KEYS", "sort_rows", "table", "run_live", "fmt_bytes"]

# name -> the row's value (None sorts last); every sort but "id" is largest first
SORTS: dict[str, Callable[[WorkerRow], object]] = {
    "cpu": lambda w: w.cpu,
    "rss": lambda w: w.rss,
    "mailbox": lambda w: w.mailbox,
    "rate": lambda w: w.call_rate,
    "p99": lambda w: w.p99_ms,
    "restarts": lambda w: w.restarts,
    "id": lambda w: w.id,
}
KEYS = {"c": "cpu", "m": "rss", "b": "mailbox", "r": "rate", "p": "p99", "x": "restarts", "i": "id"}

_STATE_STYLE = {"running": "green", "restarting": "yellow", "not_running": "dim", "starting": "cyan", "stopping": "magenta"}


def sort_rows(rows: Sequence[WorkerRow], key: str) -> list[WorkerRow]:
    get = SORTS[key]
    if key == "id":
        return sorted(rows, key=lambda w: w.id)
    present = [w for w in rows if get(w) is not None]
    absent = [w for w in rows if get(w) is None]
    return sorted(present, key=lambda w: (get(w), w.id), reverse=True) + sorted(absent, key=lambda w: w.id)


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 2**20:.1f} MiB" if n < 2**30 else f"{n / 2**30:.2f} GiB"


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(snap: Snapshot, sort: str = "cpu", limit: int | None = None) -> Table:
    rows = sort_rows(snap.workers, sort)
    shown = rows[:limit] if limit else rows
    node = snap.node
    title = (f"node {node.get('name')} pid {node.get('pid')}  {len(snap.workers)} workers, "
             f"{sum(1 for w in snap.workers if w.state == 'running')} running  sort: {sort}")
    if snap.stopping:
        title += "  [yellow]stopping[/]"
    t = Table(title=title, title_justify="left", expand=False)
    for col in ("WORKER", "SUPERVISOR", "STATE", "PID", "GEN", "CPU%", "RSS", "MBOX", "CALLS/S", "P99 ms", "RESTARTS", "HEADROOM"):
        t.add_column(col, justify="left" if col in ("WORKER", "SUPERVISOR", "STATE") else "right", no_wrap=True)
    for w in shown:
        style = _STATE_STYLE.get(w.state)
        mbox = "-" if w.mailbox is None else (f"{w.mailbox}/{w.mailbox_limit}" if w.mailbox_limit else str(w.mailbox))
        head = f"[red]{w.headroom}[/]" if w.headroom <= 0 else str(w.headroom)
        t.add_row(
            w.id, w.supervisor, f"[{style}]{w.state}[/]" if style else w.state,
            str(w.pid or "-"), str(w.generation or "-"), _num(w.cpu, ".1f"), fmt_bytes(w.rss), mbox,
            _num(w.call_rate, ".0f"), _num(w.p99_ms, ".2f"), str(w.restarts), head,
        )
    if limit and len(rows) > limit:
        t.caption = f"{len(rows) - limit} more (--limit)"
    return t


@contextlib.contextmanager
def _keys() -> Iterator[Callable[[float], str | None]]:
    """Single key presses from a terminal (cbreak mode); without a terminal, just the wait."""
    fd = sys.stdin.fileno() if sys.stdin is not None and sys.stdin.isatty() else None
    if fd is None:
        yield lambda timeout: time.sleep(timeout)
        return
    old = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def read(timeout: float) -> str | None:
        ready, _, _ = select.select([fd], [], [], timeout)
        return os.read(fd, 1).decode(errors="replace") if ready else None

    try:
        yield read
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)


def run_live(sampler: Sampler, sort: str, limit: int | None, interval: float, console: Console | None = None,
             duration: float | None = None) -> None:
    """Refresh the table every `interval` s until q, Ctrl-C, the node stopping, or `duration`."""
    console = console or Console()
    help_line = Text("keys: c cpu  m memory  b mailbox  r rate  p p99  x restarts  i id  q quit", style="dim")
    end = None if duration is None else time.monotonic() + duration
    with _keys() as key, Live(console=console, auto_refresh=False, screen=False) as live:
        while end is None or time.monotonic() < end:
            snap = sampler.sample()
            live.update(Group(table(snap, sort, limit), help_line), refresh=True)
            deadline = time.monotonic() + interval
            while (left := deadline - time.monotonic()) > 0:
                pressed = key(left)
                if pressed in ("q", "Q"):
                    return
                if pressed in KEYS:
                    sort = KEYS[pressed]
                    live.update(Group(table(snap, sort, limit), help_line), refresh=True)
