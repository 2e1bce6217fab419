"""Human renderings of what the node reports (rich tables).  No I/O but printing."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


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


_STATE_STYLE = {"running": "green", "restarting": "yellow", "not_running": "dim", "starting": "cyan", "stopping": "magenta"}


def _rows(table: Table, sup: dict[str, Any], depth: int) -> None:
    pad = "  " * depth
    for child in sup["children"]:
        state = child["state"]
        table.add_row(
            f"{pad}{child['id']}",
            child["type"],
            child["restart"],
            f"[{_STATE_STYLE.get(state, '')}]{state}[/]" if _STATE_STYLE.get(state) else state,
            str(child["pid"] or "-"),
            str(child["generation"] or "-"),
            _uptime(child.get("uptime")),
            _rss(child.get("rss")),
        )
        nested = child.get("supervisor")
        if nested:
            table.add_row(f"{pad}  [dim]{nested['strategy']} intensity {nested['intensity']}/{nested['period']}s[/]", "", "", "", "", "", "", "")
            _rows(table, nested, depth + 1)


def render_status(value: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    node = value["node"]
    tree = value["tree"]
    console.print(f"node [bold]{node['name']}[/] pid {node['pid']}  run dir {node['run_dir']}" + ("  [yellow]stopping[/]" if value.get("stopping") else ""))
    if tree is None:
        console.print("no tree (the root supervisor has exited)")
        return
    table = Table(title=f"root: {tree['strategy']}, intensity {tree['intensity']}/{tree['period']}s", title_justify="left")
    for col in ("ID", "TYPE", "RESTART", "STATE", "PID", "GEN", "UPTIME", "RSS"):
        table.add_column(col, justify="right" if col in ("PID", "GEN", "UPTIME", "RSS") else "left")
    _rows(table, tree, 0)
    console.print(table)
