"""Helpers of the network tests: a tree with the network component, started as a user starts one.

    t = start_tree(tmp_path, tree_config(max_connections=3))
    port_of(t), http_port_of(t)          # the network's ephemeral TCP and HTTP ports
"""

from __future__ import annotations

from pathlib import Path

from nodes import Tree, started, write_config

from supervisor_tree.workers.pool_tree import pool_toml

MAX_LINE = 64 * 1024


def tree_config(max_connections: int = 5000, call_timeout: float = 3.0, net_args: str = "") -> str:
    return f"""
[node]
heartbeat = {{ interval = 0.2, misses = 10 }}
preload = ["supervisor_tree.workers.session", "supervisor_tree.workers.pool", "supervisor_tree.workers.pool_member", "supervisor_tree.workers.network", "supervisor_tree.workers.net.tools"]

[tree]
strategy = "one_for_one"
intensity = 50
period = 10

[[tree.children]]
id = "session"
start = "supervisor_tree.workers.session:Session"

{pool_toml("pool", size=2, max_overflow=0, intensity=50, member_intensity=50, member_shutdown="brutal_kill", manager_shutdown="brutal_kill")}
[[tree.children]]
id = "network"
start = "supervisor_tree.workers.network:Network"
args = {{ port = 0, max_line = {MAX_LINE}, max_connections = {max_connections}, call_timeout = {call_timeout}{net_args} }}
"""


def start_tree(directory: Path, text: str) -> Tree:
    return started(write_config(directory, text))


def port_of(t: Tree) -> int:
    return int(t.client.call("network", {"op": "address"})["port"])


def http_port_of(t: Tree) -> int:
    return int(t.client.call("network", {"op": "address"})["http_port"])
