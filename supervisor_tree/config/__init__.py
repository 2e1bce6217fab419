"""TOML -> a validated NodeSpec: the loader, the schema helpers, the built-in default tree.

    from supervisor_tree.config import load_config, ConfigError

    spec = load_config("tree.toml")     # every problem at once, one line each

Imports the vocabulary (`spec`) only; it imports the user's worker modules to check
`start`, never the node.
"""

from supervisor_tree.config.describe import describe
from supervisor_tree.config.load import (
    ConfigError,
    load_config,
    node_spec_from_mapping,
    parse_config,
)

__all__ = ["ConfigError", "describe", "load_config", "node_spec_from_mapping", "parse_config"]
