"""The network worker's init args: one frozen record, checked before anything is bound.

Owns the names, defaults and allowed values of the args a config gives
`supervisor_tree.workers.network:Network`, and the one error that lists every problem (unknown
keys get a "did you mean").  Nothing here binds, connects, starts or imports a tool.

`tools` is a table of tables, one per tool: a built-in tool (net/tools.py) takes only
`inline` (run it in the network worker's own process; refused for CPU-bound tools), a
tool of the config's own needs `task` ("module:function") and may have `description`,
`input_schema` (the subset of JSON Schema net/tools.py checks), `chunk` and `inline`.

    >>> NetworkSpec.from_args({"tools": {"echo": {"inline": True}}}).tools
    (ToolSetting(name='echo', inline=True, task='', description='', input_schema=None, chunk=1),)
    >>> NetworkSpec.from_args({"tools": {"fib": {"inline": True}}})
    Traceback (most recent call last):
    ...
    ValueError: network args: tools.fib.inline: "fib" is CPU-bound and runs on the pool only (an inline tool runs in the network worker's event loop, so it must be cheap; built-ins that may: echo)

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
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from supervisor_tree.workers.net.tools import TOOLS, schema_problem

NOFILE_MARGIN = 256  # descriptors besides connections: ZeroMQ sockets, pidfds, the listener, logs
TOOL_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")  # MCP's tool name rule
TOOL_KEYS = ("inline", "task", "description", "input_schema", "chunk")


@dataclass(frozen=True, slots=True)
class ToolSetting:
    """One entry of `tools`: a built-in tool's setting (`task` empty) or a tool of the config's own."""

    name: str
    inline: bool = False  # run in the network worker's event loop, not on the pool
    task: str = ""  # "module:function" of a tool of the config's own
    description: str = ""
    input_schema: Mapping[str, object] | None = None  # its arguments, passed in `properties` order; None: none
    chunk: int = 1  # calls of a batch one pool member takes


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
    tools: tuple[ToolSetting, ...] = ()  # per-tool settings and the config's own tools (module docstring)
    inline_max_ms: float = 10.0  # an inline call that takes longer moves its tool to the pool (net/inline.py)

    @property
    def pool_wait(self) -> float:
        """How long a tool call may wait for a free pool member: half the call's time, the rest is for running."""
        return self.call_timeout / 2

    @classmethod
    def from_args(cls, args: Mapping[str, object]) -> NetworkSpec:
        fields = {f.name: f for f in dataclasses.fields(cls)}
        problems = [_unknown_key(key, list(fields)) for key in args if key not in fields]
        for key, value in args.items():
            field = fields.get(key)
            if field is not None and (problem := _check(key, field.type, value)):
                problems.append(problem)
        if problems:
            raise ValueError("network args: " + "; ".join(problems))
        values = dict(args)
        if "allowed_origins" in values:
            values["allowed_origins"] = tuple(cast("list[str]", values["allowed_origins"]))
        if "tools" in values:
            values["tools"] = tuple(_tool(name, cast("dict[str, Any]", t))
                                    for name, t in cast("dict[str, object]", values["tools"]).items())
        return cls(**cast("Mapping[str, Any]", values))  # every value checked against its field's type above


def _unknown_key(key: str, allowed: Sequence[str]) -> str:
    """'unknown key "inlne" (did you mean "inline"?)', or the allowed keys when none is close."""
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f' (did you mean "{close[0]}"?)' if close else f"; allowed: {', '.join(allowed)}"
    return f'unknown key "{key}"{hint}'


def _tool(name: str, table: dict[str, Any]) -> ToolSetting:
    return ToolSetting(name, **table)


def _tools_problem(value: object) -> str | None:
    if not isinstance(value, dict):
        return f'tools must be a table of tool tables, like {{ echo = {{ inline = true }} }}; got {value!r:.120}'
    problems = [p for name, table in value.items() for p in _tool_problems(str(name), table)]
    return "; ".join(problems) or None


def _tool_problems(name: str, table: object) -> list[str]:
    where = f"tools.{name}"
    if not TOOL_NAME.fullmatch(name):
        return [f"{where}: a tool name is 1-128 of A-Z a-z 0-9 _ - . (MCP)"]
    if not isinstance(table, dict):
        return [f"{where} must be a table, like {{ inline = true }}; got {table!r:.120}"]
    problems = [f"{where}: {_unknown_key(key, TOOL_KEYS)}" for key in table if key not in TOOL_KEYS]
    inline = table.get("inline", False)
    if not isinstance(inline, bool):
        problems.append(f"{where}.inline must be true or false; got {inline!r}")
    builtin = TOOLS.get(name)
    if builtin is not None:
        problems += [f"{where}.{key}: {name!r} is a built-in tool; only inline may be set"
                     for key in table if key in TOOL_KEYS and key != "inline"]  # fmt: skip
        if inline is True and builtin.cpu_bound:
            cheap = ", ".join(t.name for t in TOOLS.values() if not t.cpu_bound)
            problems.append(f'{where}.inline: "{name}" is CPU-bound and runs on the pool only (an inline tool runs in '
                            f"the network worker's event loop, so it must be cheap; built-ins that may: {cheap})")
        return problems
    task = table.get("task")
    if not (isinstance(task, str) and re.fullmatch(r"[\w.]+:[\w.]+", task)):
        problems.append(f'{where}.task must be "module:function" (a tool of the config\'s own; built-ins: '
                        f"{', '.join(TOOLS)}); got {task!r}")
    if not isinstance(table.get("description", ""), str):
        problems.append(f"{where}.description must be a string")
    if "input_schema" in table and (why := schema_problem(table["input_schema"])):
        problems.append(f"{where}.input_schema {why}")
    chunk = table.get("chunk", 1)
    if not (isinstance(chunk, int) and not isinstance(chunk, bool) and chunk >= 1):
        problems.append(f"{where}.chunk must be an integer >= 1; got {chunk!r}")
    return problems


def _check(key: str, kind: object, value: object) -> str | None:
    if key == "tools":
        return _tools_problem(value)
    if key == "inline_max_ms":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
        return None if ok else f"{key} must be a number of milliseconds > 0; got {value!r}"
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
