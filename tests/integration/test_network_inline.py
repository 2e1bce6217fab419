"""Inline tools over real TCP: tools the network worker's config marks `inline` run in its own process.

A node from a config (session, pool, network), JSON-RPC lines on loopback sockets:
an inline tool answers without the pool; one that raises (or calls sys.exit) answers
its caller with a tool error and the worker goes on serving; one that overran
`inline_max_ms` goes to the pool; a bad `tools` key fails the start naming it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from network_trees import port_of, start_tree, tree_config
from nodes import Tree, write_config
from test_network import Rpc

from supervisor_tree.workers.net.tools import TOOLS

pytestmark = pytest.mark.timeout(120)

TEXT = 'input_schema = { type = "object", properties = { text = { type = "string" } }, required = ["text"] }'
TOOLS_ARG = (', inline_max_ms = 50, tools = { echo = { inline = true }, '
             f'shout = {{ task = "tests.integration.inline_tools:shout", inline = true, description = "Shout it.", {TEXT} }}, '
             f'pooled_shout = {{ task = "tests.integration.inline_tools:shout", {TEXT} }}, '
             f'boom = {{ task = "tests.integration.inline_tools:boom", inline = true, {TEXT} }}, '
             f'quit = {{ task = "tests.integration.inline_tools:quit_", inline = true, {TEXT} }}, '
             f'odd = {{ task = "tests.integration.inline_tools:odd", inline = true, {TEXT} }}, '
             f'pooled_odd = {{ task = "tests.integration.inline_tools:odd", {TEXT} }}, '
             'slow = { task = "tests.integration.inline_tools:slow", inline = true, '
             'input_schema = { type = "object", properties = { ms = { type = "integer" } } } } }')


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tree]:
    t = start_tree(tmp_path_factory.mktemp("inline"), tree_config(net_args=TOOLS_ARG))
    yield t
    t.stop()


@pytest.fixture
def rpc(tree: Tree) -> Iterator[Rpc]:
    c = Rpc(port_of(tree))
    yield c
    c.close()


def _stats(tree: Tree) -> dict[str, Any]:
    return tree.client.call("network", {"op": "stats"})  # type: ignore[no-any-return]


def _text(reply: dict[str, Any]) -> str:
    return str(reply["result"]["content"][0]["text"])


def test_inline_tools_answer_from_the_network_worker_without_the_pool(tree: Tree, rpc: Rpc) -> None:
    network_pid = tree.pid_of("network")
    before = _stats(tree)
    assert rpc.call_tool("echo", text="hi")["result"] == {"content": [{"type": "text", "text": "hi"}],
                                                          "isError": False}  # fmt: skip
    assert _text(rpc.call_tool("shout", text="hi")) == f"HI from {network_pid}"
    after = _stats(tree)
    assert after["inline_calls"] - before.get("inline_calls", 0) == 2
    assert after.get("tool_calls", 0) == before.get("tool_calls", 0)  # nothing went to the pool
    pooled = _text(rpc.call_tool("pooled_shout", text="hi"))  # the same function, not inline: a pool member runs it
    assert pooled.startswith("HI from ") and pooled != f"HI from {network_pid}"
    assert set(after["inline_tools"]) >= {"echo", "shout", "boom"}


def test_tools_list_is_the_same_whatever_runs_inline(rpc: Rpc) -> None:
    listed = {t["name"]: t for t in rpc.request("tools/list")["result"]["tools"]}
    for name, tool in TOOLS.items():
        assert listed[name] == json.loads(json.dumps(tool.listing()))
    assert listed["shout"] == {"name": "shout", "description": "Shout it.", "inputSchema": {
        "type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}}


@pytest.mark.parametrize(("tool", "error"), [("boom", "ValueError: no 'x' today"), ("quit", "SystemExit: 3")])
def test_an_inline_tool_that_raises_answers_an_error_and_the_worker_goes_on(tree: Tree, rpc: Rpc, tool: str,
                                                                            error: str) -> None:  # fmt: skip
    pid = tree.pid_of("network")
    reply = rpc.call_tool(tool, text="x")
    assert reply["result"] == {"content": [{"type": "text", "text": error}], "isError": True}
    assert rpc.call_tool("echo", text="next")["result"]["content"][0]["text"] == "next"  # same connection
    other = Rpc(port_of(tree))
    try:
        assert _text(other.call_tool("shout", text="ok")) == f"OK from {pid}"
    finally:
        other.close()
    assert tree.pid_of("network") == pid  # not restarted


@pytest.mark.parametrize("tool", ["odd", "pooled_odd"])
def test_a_value_json_cannot_carry_is_a_tool_error_inline_or_pooled(rpc: Rpc, tool: str) -> None:
    reply = rpc.call_tool(tool, text="x")
    assert reply["result"]["isError"] is True
    assert reply["result"]["content"][0]["text"].startswith("TypeError: the tool returned what JSON cannot carry")
    assert rpc.call_tool("echo", text="after")["result"]["content"][0]["text"] == "after"


def test_an_inline_tool_over_its_time_bound_moves_to_the_pool(tree: Tree, rpc: Rpc) -> None:
    pid = tree.pid_of("network")
    for _ in range(3):  # over inline_max_ms on 3 of its last 20 calls: answered, then moved
        assert _text(rpc.call_tool("slow", ms=200)) == f"slept 200 ms in {pid}"
    stats = _stats(tree)
    assert stats["inline_overruns"] == 3 and stats["inline_moved_to_pool"] == 1 and "slow" not in stats["inline_tools"]
    again = _text(rpc.call_tool("slow", ms=1))
    assert again.startswith("slept 1 ms in ") and again != f"slept 1 ms in {pid}"
    assert _text(rpc.call_tool("shout", text="still")) == f"STILL from {pid}"  # the others stay inline


@pytest.mark.parametrize(("tools", "expected"), [
    ("{ fib = { inline = true } }", 'tools.fib.inline: "fib" is CPU-bound and runs on the pool only'),
    ("{ echo = { inline = 1 } }", "tools.echo.inline must be true or false; got 1"),
    ("{ echo = { inlin = true } }", 'tools.echo: unknown key "inlin" (did you mean "inline"?)'),
    ('{ mine = { inline = true } }', 'tools.mine.task must be "module:function"'),
    ('{ mine = { task = "no_such_module_x:f", inline = true } }',
     'tools.mine.task: cannot import "no_such_module_x:f": ModuleNotFoundError'),
])  # fmt: skip
def test_a_bad_tools_key_fails_the_start_naming_it(tmp_path: Path, tools: str, expected: str) -> None:
    t = Tree(write_config(tmp_path, tree_config(net_args=f", tools = {tools}")))
    try:
        started = t.start()
        shown = started.stderr + started.stdout
        if started.returncode == 0:  # the node runs; the network worker's start failed: its events say why
            failed = t.wait_event(lambda e: e["event"] == "start_error" and e["child"] == "network",
                                  what="the network's start error")
            shown = json.dumps(failed)
        assert expected in shown.replace('\\"', '"'), shown
    finally:
        t.stop()


def test_an_inline_tool_answers_over_streamable_http_too(tree: Tree) -> None:
    from test_mcp_http import in_session, initialize, rpc, send

    sid, _ = initialize(tree)
    pid = tree.pid_of("network")
    answer = send(tree, body=rpc("tools/call", 7, name="shout", arguments={"text": "web"}), headers=in_session(sid))
    # answered at once, so as plain JSON (MCP lets the server choose; there is nothing left to cancel)
    assert answer.status == 200 and answer.headers["content-type"] == "application/json"
    assert answer.json == {"jsonrpc": "2.0", "id": 7,
                           "result": {"content": [{"type": "text", "text": f"WEB from {pid}"}], "isError": False}}
    boom = send(tree, body=rpc("tools/call", 8, name="boom", arguments={"text": "web"}), headers=in_session(sid))
    assert boom.json["result"] == {"content": [{"type": "text", "text": "ValueError: no 'web' today"}],
                                   "isError": True}  # fmt: skip
