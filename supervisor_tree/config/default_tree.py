"""The built-in default tree: what `supervise start` runs with no config.

Owns one config in the config's own shape (`default.toml`, the same text as
`examples/default.toml`) and the function that validates it into a NodeSpec,
with one override from the environment: ``SUPERVISE_NETWORK_PORT`` replaces the
network's port (7411) wherever the tree names it, for a machine where 7411 is
taken or for tests that run beside a default node.

    $ SUPERVISE_NETWORK_PORT=17411 supervise start --detach
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path

from supervisor_tree.spec import NodeSpec

EXAMPLE = Path(__file__).resolve().parent / "default.toml"
PORT_ENV = "SUPERVISE_NETWORK_PORT"
DEFAULT_PORT = 7411
NETWORK_START = "supervisor_tree.workers.network:Network"


def default_node_spec() -> NodeSpec:
    """The default tree; its flame graphs go to ./profiles (the package's own directory may be read-only)."""
    spec = _load()
    profile = dict(spec.extra.get("profile") or {})  # type: ignore[call-overload]
    profile["dir"] = os.path.abspath("profiles")
    return dataclasses.replace(spec, extra={**spec.extra, "profile": profile})


def _load() -> NodeSpec:
    from supervisor_tree.config.load import ConfigError, load_config, node_spec_from_mapping

    port = os.environ.get(PORT_ENV)
    if not port:
        return load_config(EXAMPLE)
    if not (port.isdigit() and 1 <= int(port) <= 65535):  # not 0: the shards must share one port
        raise ConfigError([f"${PORT_ENV}: must be a TCP port number 1..65535; got {port!r}"])
    data = tomllib.loads(EXAMPLE.read_text())
    _set_network_port(data["tree"], int(port))
    source = f"{EXAMPLE} (network port {port} from ${PORT_ENV})"
    return node_spec_from_mapping(data, source=source, config_dir=str(EXAMPLE.parent), check_imports=True)


def _set_network_port(table: Mapping[str, object], port: int) -> None:
    """Every network worker of the tree (at any depth) listens on `port`."""
    for child in table.get("children", ()):  # type: ignore[attr-defined]
        if child.get("start") == NETWORK_START:
            child.setdefault("args", {})["port"] = port
        _set_network_port(child, port)
