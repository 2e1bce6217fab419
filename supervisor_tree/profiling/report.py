r"""What the CLI prints after a capture: the hottest frames as a short rich table.

Owns presentation only; the numbers come from ``collapsed.top_frames``.  The library
never prints: the CLI passes these renderables to its own ``rich.console.Console``.

    >>> from rich.console import Console
    >>> console = Console()                                 # doctest: +SKIP
    >>> console.print(path, profile.meta.describe(), sep="\n")  # doctest: +SKIP
    >>> console.print(hot_frames_table(profile, 10))        # doctest: +SKIP
"""

from __future__ import annotations

from rich.table import Table

from supervisor_tree.profiling.collapsed import Profile, top_frames


def hot_frames_table(profile: Profile, n: int = 10) -> Table:
    """The ``n`` frames with the most self time, with their self and total shares.

    No title: print ``profile.meta.describe()`` above it (a long line wraps badly
    inside a table's width).
    """
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("self %", justify="right")
    table.add_column("total %", justify="right")
    table.add_column("frame", overflow="fold")
    for frame, self_pct, total_pct in top_frames(profile, n):
        table.add_row(f"{self_pct:.1f}", f"{total_pct:.1f}", frame)
    return table


def errors_table(errors: dict[str, str]) -> Table:
    """``--all``: the workers that could not be profiled, and why."""
    table = Table(title="not profiled", title_justify="left", box=None, header_style="bold")
    table.add_column("worker")
    table.add_column("reason", overflow="fold")
    for worker_id, reason in sorted(errors.items()):
        table.add_row(worker_id, reason)
    return table
