"""The network worker's init args: one frozen record, checked before anything is bound.

Owns the names, defaults and allowed values of the args a config gives
`supervisor_tree.workers.network:Network`, and the one error that lists every problem (unknown
keys get a "did you mean").  Nothing here binds, connects or starts.

    >>> NetworkSpec.from_args({"port": 7411, "max_line": 4096}).port
    7411
    >>> NetworkSpec.from_args({"prot": 7411})
    Traceback (most recent call last):
    ...
    ValueError: network args: unknown key "prot" (did you mean "port"?)
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

NOFILE_MARGIN = 256  # descriptors besides connections: ZeroMQ sockets, pidfds, the listener, logs


@dataclass(frozen=True, slots=True)
class NetworkSpec:
    host: str = "127.0.0.1"
    port: int = 0  # 0: ephemeral, published by the "address" call and the worker's stats
    reuse_port: bool = False  # SO_REUSEPORT: several network workers share one fixed port
    standby: bool = False  # bind at start, listen only when told ({"op": "listen"}; net/listener.py)
    overflow: str = ""  # the worker id to tell to listen when this one is nearly full ("": none)
    backlog: int = 4096
    max_line: int = 1 << 20  # bytes in one request line, newline excluded
    max_connections: int = 50_000
    max_pending: int = 64  # requests in flight per connection before it stops being read
    write_high_water: int = 256 * 1024  # bytes of unread replies before a connection stops being read
    session: str = "session"  # worker ids the requests go to
    pool: str = "pool"
    call_timeout: float = 5.0  # s: a request the tree has not answered by then gets -32011
    batches_in_flight: int = 4  # tool-call batches of one tool at the pool at once (net/batch.py)
    nofile: int = 0  # RLIMIT_NOFILE soft limit to raise to; 0: max_connections + NOFILE_MARGIN
    http: bool = True  # also serve MCP's Streamable HTTP (net/streamable.py) on http_port
    http_port: int = 0  # 0: ephemeral, published by the "address" call
    http_path: str = "/mcp"  # the one endpoint
    allowed_origins: tuple[str, ...] = ()  # Origin values accepted besides loopback ones ("https://app.example")

    @property
    def pool_wait(self) -> float:
        """How long a tool call may wait for a free pool member: half the call's time, the rest is for running."""
        return self.call_timeout / 2

    @classmethod
    def from_args(cls, args: Mapping[str, object]) -> NetworkSpec:
        fields = {f.name: f for f in dataclasses.fields(cls)}
        problems = []
        for key in args:
            if key not in fields:
                close = difflib.get_close_matches(key, fields, n=1)
                hint = f' (did you mean "{close[0]}"?)' if close else f"; allowed: {', '.join(fields)}"
                problems.append(f'unknown key "{key}"{hint}')
        for key, value in args.items():
            field = fields.get(key)
            if field is not None and (problem := _check(key, field.type, value)):
                problems.append(problem)
        if problems:
            raise ValueError("network args: " + "; ".join(problems))
        values = dict(args)
        if "allowed_origins" in values:
            values["allowed_origins"] = tuple(cast("list[str]", values["allowed_origins"]))
        return cls(**cast("Mapping[str, Any]", values))  # every value checked against its field's type above


def _check(key: str, kind: object, value: object) -> str | None:
    if key == "allowed_origins":
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) and "://" in v for v in value)
        return None if ok else f'{key} must be a list of origins like "https://app.example"; got {value!r}'
    if key == "http_path":
        ok = isinstance(value, str) and value.startswith("/") and "?" not in value
        return None if ok else f'{key} must be a path starting with "/" (no query); got {value!r}'
    if kind in ("str", str):
        ok = isinstance(value, str) and (bool(value) or key == "overflow")
        return None if ok else f"{key} must be a non-empty string; got {value!r}"
    if kind in ("bool", bool):
        return None if isinstance(value, bool) else f"{key} must be true or false; got {value!r}"
    if kind in ("float", float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
        return None if ok else f"{key} must be a number of seconds > 0; got {value!r}"
    low = 0 if key in ("port", "http_port", "nofile") else 1
    high = 65535 if key in ("port", "http_port") else None
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low and (high is None or value <= high)
    return None if ok else f"{key} must be an integer >= {low}{f' and <= {high}' if high else ''}; got {value!r}"
