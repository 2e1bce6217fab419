"""ConfigError: everything wrong with a config, one line per problem.

    >>> str(ConfigError(['app.toml: tree.children[0] "db": shutdown must be ...; got -5']))
    'app.toml: tree.children[0] "db": shutdown must be ...; got -5'
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["ConfigError"]


class ConfigError(Exception):
    """Everything wrong with a config, one line per problem.

    Each line names the file, the key path, the value and what is allowed:
    ``config.toml: tree.children[2] "db": shutdown must be milliseconds >= 0,
    "brutal_kill" or "infinity"; got -5``.
    """

    problems: list[str]

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__(self.problems)

    def __str__(self) -> str:
        return "\n".join(self.problems)
