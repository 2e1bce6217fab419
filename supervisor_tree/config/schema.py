"""The config file's schema: which keys each table allows, and the generic value checks.

Owned here: the key lists (in the order messages list them), the small validators for
plain numbers, flags and strings that spec.py does not own, and `Table`, which reads
one TOML table and reports its problems under one location.  Nothing here knows the
tree's shape; config.py walks it.

Every validator returns None when the value is fine, else "<key> must be <what is
allowed>; got <value>" (spec.py's convention), so config.py only adds the location:

    >>> check_number("heartbeat.interval", -1, above=0)
    'heartbeat.interval must be a number > 0 (seconds); got -1'
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from supervisor_tree.spec import _got, _is_int

T = TypeVar("T")

TOP_KEYS = ("node", "tree", "profile", "metrics")
NODE_KEYS = ("name", "preload", "heartbeat", "logs", "backend", "address", "host")
FLAG_KEYS = ("strategy", "intensity", "period", "auto_shutdown")
TREE_KEYS = (*FLAG_KEYS, "children")
# A child's keys: shared by both types, then the ones only one type may have.
COMMON_CHILD_KEYS = ("id", "type", "restart", "shutdown", "significant", "backoff")
PORT_KEYS = ("command", "env", "cwd", "stop_signal", "ready")  # an external program (a port) instead of start
WORKER_ONLY_KEYS = ("start", "args", "start_timeout", "retry", "retry_budget", "retry_calls", "heartbeat",
                    "max_concurrency", "mailbox_limit", "mailbox_overflow", "oom_score_adj", "resources", "node_affinity",
                    *PORT_KEYS)
SUPERVISOR_ONLY_KEYS = TREE_KEYS
WORKER_KEYS = ("id", "start", "args", "restart", "shutdown", "type", "significant",
               "start_timeout", "backoff", "retry", "retry_budget", "retry_calls", "heartbeat", "max_concurrency",
               "mailbox_limit", "mailbox_overflow", "oom_score_adj", "resources", "node_affinity", *PORT_KEYS)  # fmt: skip
READY_KEYS = ("tcp", "stdout")
SUPERVISOR_KEYS = ("id", "type", "restart", "shutdown", "significant", "backoff", *TREE_KEYS)
ALL_CHILD_KEYS = (*WORKER_KEYS, *FLAG_KEYS, "children")
HEARTBEAT_KEYS = ("interval", "misses")
LOGS_KEYS = ("max_bytes", "backups")
BACKOFF_KEYS = ("initial", "factor", "cap", "jitter", "reset_after")
PROFILE_KEYS = ("dir", "trigger")
TRIGGER_KEYS = ("mailbox_depth", "call_p99_ms", "cooldown", "duration", "engine", "workers")
METRICS_KEYS = ("port", "max_workers")
PROFILE_ENGINES = ("py-spy", "yappi")


def type_name(value: object) -> str:
    """The TOML name of a value's type, for "got ... (a table)"."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "table"
    if isinstance(value, (list, tuple)):
        return "array"
    return type(value).__name__


def is_table(value: object) -> bool:
    return isinstance(value, Mapping)


def check_number(name: str, value: object, *, above: float | None = None, at_least: float | None = None,
                 unit: str = "seconds") -> str | None:  # fmt: skip
    """A finite int or float (never a bool) > `above` or >= `at_least`."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and above is not None:
        ok = value > above  # type: ignore[operator]
    if ok and at_least is not None:
        ok = value >= at_least  # type: ignore[operator]
    if ok:
        return None
    bound = f"> {above:g}" if above is not None else f">= {at_least:g}"
    suffix = f" ({unit})" if unit else ""
    return f"{name} must be a number {bound}{suffix}; got {_got(value)}"


def check_int(name: str, value: object, *, at_least: int, unit: str = "") -> str | None:
    if _is_int(value) and value >= at_least:  # type: ignore[operator]
        return None
    suffix = f" ({unit})" if unit else ""
    return f"{name} must be an integer >= {at_least}{suffix}; got {_got(value)}"


def check_bool(name: str, value: object) -> str | None:
    if isinstance(value, bool):
        return None
    return f"{name} must be true or false; got {_got(value)}"


def check_choice(name: str, value: object, allowed: Sequence[str]) -> str | None:
    if value in allowed:
        return None
    return f"{name} must be one of {', '.join(allowed)}; got {_got(value)}"


def check_string(name: str, value: object) -> str | None:
    if isinstance(value, str) and value:
        return None
    return f"{name} must be a non-empty string; got {_got(value)}"


def check_name(value: object) -> str | None:
    if isinstance(value, str) and value and all(c.isalnum() or c in "_-." for c in value):
        return None
    return f"name must be a non-empty string of letters, digits, '_', '-' or '.'; got {_got(value)}"


def check_string_list(name: str, value: object) -> str | None:
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) and v for v in value):
        return None
    return f"{name} must be an array of non-empty strings; got {_got(value)}"


def check_table(name: str, value: object, what: str = "") -> str | None:
    if is_table(value):
        return None
    return f"{name} must be a table{what}; got {_got(value)} ({type_name(value)})"


def unknown_key(key: str, allowed: Sequence[str], prefix: str = "") -> str:
    """'unknown key "restrat" (did you mean "restart"?); allowed: id, start, ...'."""
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    hint = f' (did you mean "{prefix}{close[0]}"?)' if close else ""
    return f'unknown key "{prefix}{key}"{hint}; allowed: {", ".join(allowed)}'


class Table:
    """One table of the config being read; every problem is reported under `where`.

    `prefix` is how its keys are named in messages ("backoff." for the backoff table
    of a child whose location is `where`).  A key whose value is rejected lands in
    `bad`, so cross-field checks can skip it instead of piling on a second message.
    """

    def __init__(self, data: Mapping[str, object], where: str, report: Callable[[str, str], None],
                 prefix: str = "") -> None:  # fmt: skip
        self.data = data
        self.where = where
        self.prefix = prefix
        self.bad: set[str] = set()
        self._report = report

    def report(self, message: str) -> None:
        self._report(self.where, message)

    def reject_unknown(self, allowed: Sequence[str], known: Sequence[str] = ()) -> None:
        """Report every key not in `allowed`; keys in `known` are left to the caller."""
        for key in self.data:
            if key not in allowed and key not in known:
                self.report(unknown_key(str(key), allowed, self.prefix))

    def name(self, key: str) -> str:
        return self.prefix + key

    def get(self, key: str, check: Callable[[object], str | None], convert: Callable[[Any], T],
            default: T) -> T:  # fmt: skip
        """The converted value, or `default` when the key is absent or its value is rejected.

        `convert` only sees values `check` accepted, hence `Any`: `int`, `tuple`, an Enum.
        """
        if key not in self.data:
            return default
        value = self.data[key]
        problem = check(value)
        if problem:
            self.report(problem)
            self.bad.add(key)
            return default
        return convert(value)

    def number(self, key: str, default: float, *, above: float | None = None, at_least: float | None = None,
               unit: str = "seconds") -> float:  # fmt: skip
        name = self.name(key)
        return self.get(key, lambda v: check_number(name, v, above=above, at_least=at_least, unit=unit),
                        float, default)  # fmt: skip

    def integer(self, key: str, default: int, *, at_least: int, unit: str = "") -> int:
        name = self.name(key)
        return self.get(key, lambda v: check_int(name, v, at_least=at_least, unit=unit), int, default)

    def flag(self, key: str, default: bool) -> bool:
        name = self.name(key)
        return self.get(key, lambda v: check_bool(name, v), bool, default)

    def choice(self, key: str, allowed: Sequence[str], default: str) -> str:
        name = self.name(key)
        return self.get(key, lambda v: check_choice(name, v, allowed), str, default)

    def sub_table(self, key: str, what: str = "") -> Table | None:
        """The nested table under `key`, or None (absent, or not a table: reported)."""
        if key not in self.data:
            return None
        value = self.data[key]
        problem = check_table(self.name(key), value, what)
        if problem:
            self.report(problem)
            self.bad.add(key)
            return None
        assert isinstance(value, Mapping)
        return Table(value, self.where, self._report, prefix=f"{self.name(key)}.")


def check_port(value: object) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535:
        return None
    return f"port must be an integer 1..65535 (served on 127.0.0.1); got {value!r}"


def check_limit(value: object) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return None
    return f"mailbox_limit must be an integer >= 1 (messages waiting in the worker); got {value!r}"
