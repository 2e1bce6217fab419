"""Human renderings of what the node reports (rich tables).  No I/O but printing.

`supervise status` at any width keeps every id whole: the column a user reads first
never gives way.  A terminal too narrow for every column loses the optional ones,
in this order: RSS, UPTIME, RESTART, GEN.  A supervisor's strategy and intensity sit
in its TYPE cell, on two lines (`one_for_all` / `3 in 10s`), so they never widen or
wrap the ID column.

    render_status(client.status())                      # the console's width
    render_status(value, Console(width=80))             # what an 80-column terminal shows
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

__all__ = ["render_status", "OPTIONAL_COLUMNS"]

COLUMNS = ("ID", "TYPE", "RESTART", "STATE", "PID", "HOST", "GEN", "UPTIME", "RSS")  # HOST: a placed tree's only
OPTIONAL_COLUMNS = ("RSS", "UPTIME", "RESTART", "GEN")  # dropped first to last when the width runs out
_RIGHT = {"PID", "GEN", "UPTIME", "RSS"}
_STATE_STYLE = {"running": "green", "restarting": "yellow", "not_running": "dim", "starting": "cyan",
                "stopping": "magenta"}


def _uptime(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"
    return f"{seconds // 3600:.0f}h{seconds % 3600 // 60:02.0f}m"


def _rss(rss: int | None) -> str:
    return "-" if rss is None else f"{rss / 2**20:.1f} MiB"


def _rows(sup: dict[str, Any], depth: int) -> Iterator[dict[str, str]]:
    """One dict per child (column -> plain text), depth first, in start order."""
    for child in sup["children"]:
        nested = child.get("supervisor")
        kind = f"{nested['strategy']}\n{nested['intensity']} in {nested['period']}s" if nested else child["type"]
        yield {
            "ID": "  " * depth + str(child["id"]),
            "TYPE": kind,
            "RESTART": child["restart"],
            "STATE": child["state"],
            "PID": str(child["pid"] or "-"),
            "HOST": str(child.get("host") or "-"),
            "GEN": str(child["generation"] or "-"),
            "UPTIME": _uptime(child.get("uptime")),
            "RSS": _rss(child.get("rss")),
        }
        if nested:
            yield from _rows(nested, depth + 1)


def _width(column: str, rows: list[dict[str, str]]) -> int:
    return max(len(line) for text in [column, *(r[column] for r in rows)] for line in text.split("\n"))


def fitting_columns(rows: list[dict[str, str]], width: int) -> list[str]:
    """The columns to show within `width` characters (a heavy-edged table: 3 per column, plus 1).
    HOST only when a worker runs on another host (`[node] backend = "ray"`)."""
    shown = [c for c in COLUMNS if c != "HOST" or any(r["HOST"] != "-" for r in rows)]
    for optional in (None, *OPTIONAL_COLUMNS):
        if optional is not None:
            shown.remove(optional)
        if sum(_width(c, rows) for c in shown) + 3 * len(shown) + 1 <= width:
            break
    return shown


def render_status(value: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    node = value["node"]
    tree = value["tree"]
    stopping = "  [yellow]stopping[/]" if value.get("stopping") else ""
    console.print(f"node [bold]{node['name']}[/] pid {node['pid']}  run dir {node['run_dir']}{stopping}",
                  overflow="fold")
    if tree is None:
        console.print("no tree (the root supervisor has exited)")
        return
    rows = list(_rows(tree, 0))
    shown = fitting_columns(rows, console.width)
    table = Table(title=f"root: {tree['strategy']}, {tree['intensity']} in {tree['period']}s", title_justify="left")
    for col in shown:
        table.add_column(col, justify="right" if col in _RIGHT else "left", no_wrap=col != "TYPE",
                         min_width=_width(col, rows) if col in ("ID", "STATE") else None)
    for row in rows:
        cells = []
        for col in shown:
            style = _STATE_STYLE.get(row[col], "") if col == "STATE" else ("dim" if "\n" in row[col] else "")
            cells.append(Text(row[col], style=style))
        table.add_row(*cells)
    console.print(table)
