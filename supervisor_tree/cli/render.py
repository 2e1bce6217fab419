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
        nested = child.get("supervisor")
        name = f"{pad}{child['id']}"
        if nested:
            name += f" [dim]{nested['strategy']} {nested['intensity']}/{nested['period']}s[/]"
        style = _STATE_STYLE.get(state)
        table.add_row(
            name,
            child["type"],
            child["restart"],
            f"[{style}]{state}[/]" if style else state,
            str(child["pid"] or "-"),
            str(child["generation"] or "-"),
            _uptime(child.get("uptime")),
            _rss(child.get("rss")),
        )
        if nested:
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
