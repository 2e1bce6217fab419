"""The network worker's `tools` arg: per-tool settings and a config's own tools, checked before anything starts."""

from __future__ import annotations

import json

import pytest

from supervisor_tree.workers.net.config import NetworkSpec, ToolSetting
from supervisor_tree.workers.net.inline import Toolbox


def _problems(tools: object) -> str:
    with pytest.raises(ValueError) as info:
        NetworkSpec.from_args({"tools": tools})
    text = str(info.value)
    assert text.startswith("network args: ") and "\n" not in text
    return text


def test_a_config_tool_and_an_inline_builtin_parse() -> None:
    spec = NetworkSpec.from_args({"inline_max_ms": 5, "tools": {
        "echo": {"inline": True},
        "up": {"task": "pkg.mod:up", "description": "d", "chunk": 8,
               "input_schema": {"type": "object", "properties": {"s": {"type": "string"}}, "required": ["s"]}}}})  # fmt: skip
    assert spec.tools[0] == ToolSetting("echo", inline=True)
    assert spec.tools[1].task == "pkg.mod:up" and spec.tools[1].chunk == 8 and spec.inline_max_ms == 5


@pytest.mark.parametrize(("tools", "expected"), [
    ({"sha256_loop": {"inline": True}}, 'tools.sha256_loop.inline: "sha256_loop" is CPU-bound'),
    ({"echo": {"task": "m:f"}}, "tools.echo.task: 'echo' is a built-in tool; only inline may be set"),
    ({"echo": True}, "tools.echo must be a table, like { inline = true }; got True"),
    ({"bad name": {"task": "m:f"}}, "tools.bad name: a tool name is 1-128 of"),
    ({"t": {"task": "m:f", "chunk": 0}}, "tools.t.chunk must be an integer >= 1; got 0"),
    ({"t": {"task": "m:f", "input_schema": {"type": "array"}}}, 'tools.t.input_schema must be a table with type = "object"'),
    ({"t": {"task": "m:f", "input_schema": {"type": "object", "properties": {"a": {"type": "str"}}}}},
     "tools.t.input_schema properties.a must be a table with type one of string, integer"),
    ({"t": {"task": "m:f", "input_schema": {"type": "object", "required": ["a"]}}},
     "tools.t.input_schema required must list names of properties"),
    (["echo"], "tools must be a table of tool tables, like { echo = { inline = true } }"),
])  # fmt: skip
def test_each_bad_tools_value_is_named(tools: object, expected: str) -> None:
    assert expected in _problems(tools)


def test_bad_inline_max_ms_is_named() -> None:
    with pytest.raises(ValueError, match="inline_max_ms must be a number of milliseconds > 0; got 0"):
        NetworkSpec.from_args({"inline_max_ms": 0})


def test_an_inline_tool_moves_to_the_pool_when_most_of_its_recent_calls_overran() -> None:
    box = Toolbox.from_settings([ToolSetting("echo", inline=True)], max_ms=10.0)
    assert box.inline["echo"]("hi") == "hi"
    box.took("echo", 0.005, 1)
    for call in (2, 30, 60, 90):  # overruns far apart: a busy machine, not a slow tool
        box.took("echo", 0.5, call)
    assert "echo" in box.inline and box.counts["inline_overruns"] == 4
    box.took("echo", 0.5, 95)
    assert "echo" in box.inline  # 2 of its last 20
    box.took("echo", 0.5, 100)
    assert "echo" not in box.inline and box.moved == ["echo"] and box.counts["inline_moved_to_pool"] == 1
    box.took("echo", 0.5, 101)
    assert box.counts["inline_moved_to_pool"] == 1 and "echo" in box.tools  # still a tool, on the pool now


def test_replies_made_while_a_read_is_cut_into_lines_go_out_in_one_write() -> None:
    from supervisor_tree.workers.net.mcp import Methods
    from supervisor_tree.workers.net.server import Server

    class Transport:
        def __init__(self) -> None:
            self.written: list[bytes] = []

        def write(self, data: bytes) -> None:
            self.written.append(data)

        def set_write_buffer_limits(self, high: int) -> None:
            pass

    box = Toolbox.from_settings([ToolSetting("echo", inline=True)])
    conn = Server(NetworkSpec(), Methods(None, toolbox=box)).connection()  # type: ignore[arg-type]
    transport = Transport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    call = b'{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"echo","arguments":{"text":"t%d"}}}\n'
    conn.data_received(call % (1, 1) + b'{"jsonrpc":"2.0","id":2,"method":"ping"}\n' + call % (3, 3) + b"{\n")
    assert len(transport.written) == 1  # four replies, one write(2)
    replies = [json.loads(line) for line in transport.written[0].splitlines()]
    assert [r["id"] for r in replies] == [1, 2, 3, None]
    assert replies[0]["result"]["content"][0]["text"] == "t1" and replies[3]["error"]["code"] == -32700
    conn.data_received(call % (4, 4))
    assert len(transport.written) == 2 and json.loads(transport.written[1])["id"] == 4
