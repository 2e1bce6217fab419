"""`supervise status` shows each worker's host when the tree places workers elsewhere (cli/render.py).

The status value is the node's JSON as a placed tree's node answers it (`host` on a child
whose Ray launcher named it); a local tree's value has none and the table keeps its columns.
"""

from __future__ import annotations

from rich.console import Console

from supervisor_tree.cli.render import render_status


def _status(hosts: dict[str, str | None]) -> dict[str, object]:
    children = [{"id": wid, "key": wid, "type": "worker", "restart": "permanent", "state": "running", "pid": 100 + i,
                 "generation": 1, "uptime": 3.0, "rss": None, **({"host": h} if h else {})}
                for i, (wid, h) in enumerate(hosts.items())]
    tree = {"path": "root", "strategy": "one_for_one", "intensity": 5, "period": 10, "children": children}
    return {"node": {"name": "spread", "pid": 1, "run_dir": "/run"}, "tree": tree, "stopping": False}


def _render(value: dict[str, object]) -> str:
    console = Console(width=120, record=True, color_system=None)
    render_status(value, console)
    return console.export_text()


def test_a_placed_tree_shows_each_workers_host() -> None:
    text = _render(_status({"a": "head/10.0.0.1 5f3c12", "b": "gpu-7/10.0.0.7 a91e00"}))
    header = next(line for line in text.splitlines() if "ID" in line)
    assert "HOST" in header
    assert "head/10.0.0.1 5f3c12" in text and "gpu-7/10.0.0.7 a91e00" in text


def test_a_local_tree_has_no_host_column() -> None:
    text = _render(_status({"a": None, "b": None}))
    assert "HOST" not in text and "RSS" in text
