"""The network server's tools: task functions the pool runs, and what `tools/list` says of them.

Owns the built-in tools (`echo`, and the CPU-bound `fib` and `sha256_loop`), each
a plain function named ``"supervisor_tree.workers.net.tools:NAME"`` that a pooled worker imports
and calls with the tool's arguments (positional, in the schema's order), the
wrapper `run_tool` that runs one call of a batch, and the small checks of the
arguments (a -32602 before anything is sent to the pool).  Runs in pool members
and in the network worker; imports neither asyncio nor ZeroMQ.

    >>> TOOLS["echo"].check({"text": "hi"}) is None
    True
    >>> TOOLS["fib"].check({"n": -1})
    'argument "n" must be >= 0; got -1'
    >>> TOOLS["fib"].positional({"n": 20.0})        # an integral float is an integer (JSON Schema)
    [20]
    >>> fib(20)
    6765
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NotRequired, TypedDict

FIB_MAX = 32  # fib(32) is ~1 s of CPU in CPython: a tool call may not take longer
SHA256_MAX_ROUNDS = 2_000_000


def echo(text: str) -> str:
    """Return `text` unchanged (runs on a pooled worker like any other tool)."""
    return text


def fib(n: int) -> int:
    """The n-th Fibonacci number, computed the slow recursive way on purpose: pure CPU."""
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def sha256_loop(rounds: int, data: str = "") -> str:
    """Hash `data` `rounds` times over (each round hashes the previous digest): CPU in C."""
    digest = data.encode()
    for _ in range(rounds):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()


def run_tool(task: str, args: list[object]) -> list[object]:
    """One tool call of a batch (the pool's run_many runs this per call): [True, value] or
    [False, "Type: message"], so that a tool that raises fails its own call only."""
    from supervisor_tree.workers.pool_member import find_task  # in the pool member, where it is loaded already

    try:
        return [True, find_task(task)(*args)]
    except Exception as exc:  # noqa: BLE001 - the tool's error is its caller's answer
        return [False, f"{type(exc).__name__}: {exc}"]


RUN_TOOL = "supervisor_tree.workers.net.tools:run_tool"


class PropertySchema(TypedDict, total=False):
    """One argument's schema, in the subset of JSON Schema that `check_arguments` reads."""

    type: str
    minimum: int
    maximum: int
    description: str


class InputSchema(TypedDict):
    """A tool's `inputSchema`: an object whose properties are its arguments, in positional order."""

    type: str
    properties: NotRequired[dict[str, PropertySchema]]
    required: NotRequired[list[str]]
    additionalProperties: NotRequired[bool]


@dataclass(frozen=True, slots=True)
class Tool:
    """One tool as `tools/list` shows it, with the pool task that runs it.

    `chunk`: how many calls of a batch one pool member takes (1 for CPU-bound
    tools, so that a batch spreads over every free member).
    """

    name: str
    task: str  # "module:function", called with the arguments in the schema's property order
    description: str
    input_schema: InputSchema
    chunk: int = 1
    cpu_bound: bool = False  # may never run inline: it would stall every connection of its network worker
    plain: tuple[str, ...] | None = field(init=False, repr=False, compare=False)  # see `quick_positional`

    def __post_init__(self) -> None:
        props = self.input_schema.get("properties", {})
        plain = tuple(props) if all(p.get("type") == "string" for p in props.values()) else None
        object.__setattr__(self, "plain", plain)

    def quick_positional(self, arguments: object) -> list[object] | None:
        """`positional(arguments)` when they plainly fit (every property a string and each given as one,
        nothing else), at a fraction of `check`'s cost; None: ask `check`.  echo's hot path."""
        plain = self.plain
        if plain is None or type(arguments) is not dict or len(arguments) != len(plain):
            return None
        out: list[object] = []
        for key in plain:
            value = arguments.get(key)
            if type(value) is not str:
                return None
            out.append(value)
        return out

    def listing(self) -> dict[str, object]:
        return {"name": self.name, "description": self.description, "inputSchema": dict(self.input_schema)}

    def check(self, arguments: object) -> str | None:
        """None when `arguments` fit the schema, else why not (the -32602 message)."""
        return check_arguments(self.input_schema, arguments)

    def positional(self, arguments: Mapping[str, object]) -> list[object]:
        """The task's positional arguments: properties in schema order, up to the first one not given.

        An integral float given for an "integer" property (20.0: an integer in JSON Schema from draft-06
        on) is passed as an int."""
        out = []
        for key, prop in self.input_schema.get("properties", {}).items():
            if key not in arguments:
                break
            value = arguments[key]
            out.append(int(value) if type(value) is float and prop.get("type") == "integer" else value)
        return out


def _int(minimum: int, maximum: int, description: str) -> PropertySchema:
    return {"type": "integer", "minimum": minimum, "maximum": maximum, "description": description}


TOOLS: dict[str, Tool] = {
    t.name: t
    for t in (
        Tool("echo", "supervisor_tree.workers.net.tools:echo", "Return the text it is given.",
             {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"],
              "additionalProperties": False}, chunk=64),
        Tool("fib", "supervisor_tree.workers.net.tools:fib", f"The n-th Fibonacci number, recursively (CPU-bound; n <= {FIB_MAX}).",
             {"type": "object", "properties": {"n": _int(0, FIB_MAX, "which Fibonacci number")}, "required": ["n"],
              "additionalProperties": False}, cpu_bound=True),
        Tool("sha256_loop", "supervisor_tree.workers.net.tools:sha256_loop", "Hash data repeatedly with SHA-256 (CPU-bound).",
             {"type": "object",
              "properties": {"rounds": _int(1, SHA256_MAX_ROUNDS, "how many times to hash"),
                             "data": {"type": "string"}},
              "required": ["rounds"], "additionalProperties": False}, cpu_bound=True),
    )
}  # fmt: skip

_JSON_TYPES: dict[str, tuple[type, ...]] = {"string": (str,), "integer": (int,), "number": (int, float),
                                            "boolean": (bool,), "object": (dict,), "array": (list,)}  # fmt: skip


def check_arguments(schema: InputSchema, arguments: object) -> str | None:
    """The subset of JSON Schema the built-in tools use: object, properties, required, type, min/max."""
    if not isinstance(arguments, dict):
        return f'"arguments" must be an object; got {arguments!r}'
    props = schema.get("properties", {})
    for key in schema.get("required", ()):
        if key not in arguments:
            return f'argument "{key}" is required'
    for key, value in arguments.items():
        prop = props.get(key)
        if prop is None:
            if schema.get("additionalProperties", True) is False:
                return f'unknown argument "{key}"; allowed: {", ".join(props)}'
            continue
        kind = str(prop.get("type"))
        if not _is_a(kind, value):
            return f'argument "{key}" must be {kind}; got {value!r}'
        if not isinstance(value, (int, float)):
            continue  # minimum and maximum bound numbers only (JSON Schema)
        low, high = prop.get("minimum"), prop.get("maximum")
        if low is not None and value < low:
            return f'argument "{key}" must be >= {low}; got {value!r}'
        if high is not None and value > high:
            return f'argument "{key}" must be <= {high}; got {value!r}'
    return None


def _is_a(kind: str, value: object) -> bool:
    """JSON Schema's `type`: a bool is no number, and an integral float (2.0) is an integer (draft-06 on)."""
    if kind in ("integer", "number") and isinstance(value, bool):
        return False
    if kind == "integer" and isinstance(value, float):
        return value.is_integer()  # False for inf and nan too
    return isinstance(value, _JSON_TYPES.get(kind, (object,)))


def schema_problem(schema: object) -> str | None:
    """None when `schema` is an `inputSchema` that `check_arguments` reads (a config's own tool), else why not."""
    if not isinstance(schema, dict) or schema.get("type") != "object":
        return f'must be a table with type = "object"; got {schema!r:.120}'
    unknown = set(schema) - {"type", "properties", "required", "additionalProperties", "description"}
    if unknown:
        return f"has {', '.join(sorted(unknown))}; allowed: type, properties, required, additionalProperties"
    props = schema.get("properties", {})
    if not isinstance(props, dict):
        return f"properties must be a table of argument schemas; got {props!r:.120}"
    for key, prop in props.items():
        if not isinstance(prop, dict) or prop.get("type") not in _JSON_TYPES:
            return f'properties.{key} must be a table with type one of {", ".join(_JSON_TYPES)}; got {prop!r:.120}'
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) and r in props for r in required):
        return f"required must list names of properties ({', '.join(props)}); got {required!r:.120}"
    if not isinstance(schema.get("additionalProperties", True), bool):
        return "additionalProperties must be true or false"
    return None
