"""The built-in default tree: what `supervise start` runs with no config.

Owns one mapping in the config's own shape (so `examples/default.toml` can say the
same thing) and the function that validates it into a NodeSpec.
"""

from __future__ import annotations

from pathlib import Path

from .spec import NodeSpec

EXAMPLE = Path(__file__).resolve().parent / "default.toml"


def default_node_spec() -> NodeSpec:
    from .config import load_config

    spec = load_config(EXAMPLE)
    return spec
