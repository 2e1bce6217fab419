"""The built-in default tree: what `supervise start` runs with no config.

Owns one config in the config's own shape (`default.toml`, the same text as
`examples/default.toml`) and the function that validates it into a NodeSpec,
with two overrides from the environment: ``SUPERVISE_NETWORK_PORT`` replaces the
network's TCP port (7411) and ``SUPERVISE_NETWORK_HTTP_PORT`` its MCP Streamable
HTTP port (7412) wherever the tree names them, for a machine where one is taken
or for tests that run beside a default node.

    $ SUPERVISE_NETWORK_PORT=17411 SUPERVISE_NETWORK_HTTP_PORT=17412 supervise start --detach
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
HTTP_PORT_ENV = "SUPERVISE_NETWORK_HTTP_PORT"
DEFAULT_PORT = 7411
DEFAULT_HTTP_PORT = 7412
_OVERRIDES = ((PORT_ENV, "port"), (HTTP_PORT_ENV, "http_port"))  # (variable, the network's arg it sets)
NETWORK_START = "supervisor_tree.workers.network:Network"


def default_node_spec() -> NodeSpec:
    """The default tree; its flame graphs go to ./profiles (the package's own directory may be read-only)."""
    spec = _load()
    profile = dict(spec.extra.get("profile") or {})  # type: ignore[call-overload]
    profile["dir"] = os.path.abspath("profiles")
    return dataclasses.replace(spec, extra={**spec.extra, "profile": profile})


def _load() -> NodeSpec:
    from supervisor_tree.config.load import ConfigError, load_config, node_spec_from_mapping

    given = {arg: (env, os.environ[env]) for env, arg in _OVERRIDES if os.environ.get(env)}
    if not given:
        return load_config(EXAMPLE)
    bad = [f"${env}: must be a TCP port number 1..65535; got {port!r}" for env, port in given.values()
           if not (port.isdigit() and 1 <= int(port) <= 65535)]  # not 0: the shards must share one port
    if bad:
        raise ConfigError(bad)
    data = tomllib.loads(EXAMPLE.read_text())
    for arg, (_, port) in given.items():
        _set_network_arg(data["tree"], arg, int(port))
    source = f"{EXAMPLE} ({', '.join(f'network {arg} {port} from ${env}' for arg, (env, port) in given.items())})"
    return node_spec_from_mapping(data, source=source, config_dir=str(EXAMPLE.parent), check_imports=True)


def _set_network_arg(table: Mapping[str, object], arg: str, port: int) -> None:
    """Every network worker of the tree (at any depth) takes `port` for `arg` ("port" or "http_port")."""
    for child in table.get("children", ()):  # type: ignore[attr-defined]
        if child.get("start") == NETWORK_START:
            child.setdefault("args", {})[arg] = port
        _set_network_arg(child, arg, port)
