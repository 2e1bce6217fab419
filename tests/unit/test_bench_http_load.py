"""The HTTP benchmark's load generator and its reference server, as the workload runs them (real processes).

A few connections to the raw httptools echo server: each opens its "session"
(the reference answers none, so the client carries on with "none"), then one
short closed-loop window; every answer counts, none is an error.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor_tree.bench.harness import registry
from supervisor_tree.bench.http_load import HttpLoad, post, request_body
from supervisor_tree.bench.network import EchoServer, LoadProcesses

pytestmark = pytest.mark.timeout(60)

MODULE = "supervisor_tree.bench.http_load"


def test_requests_are_1_kib_posts_that_carry_the_session() -> None:
    body = request_body(7, 1024)
    assert len(body) == 1024 and body.startswith(b'{"jsonrpc":"2.0","id":7,"method":"tools/call"')
    request = post(body, b"abc")
    assert b"mcp-session-id: abc\r\n" in request and request.endswith(b"\r\n\r\n" + body)
    assert HttpLoad({"conns": 0, "port": 0}).is_error(b'event: message\ndata: {"jsonrpc":"2.0","id":1,"error":{}}')
    assert not HttpLoad({"conns": 0, "port": 0}).is_error(b'{"jsonrpc":"2.0","id":1,"result":{"isError":false}}')


def test_a_window_against_the_reference_server(tmp_path: Path) -> None:
    with EchoServer(module=MODULE) as echo:
        load = LoadProcesses({"ref": echo.port}, conns=20, processes=1, scratch=tmp_path, module=MODULE)
        try:
            assert load.connected == {"ref": 20}
            trial, problems = load.window("ref", 0.5)
        finally:
            load.close()
    assert trial.ops > 20 and problems == {"errors": 0, "lost": 0, "unanswered": 0}
    assert trial.latencies is not None and trial.latencies.count == trial.ops


def test_the_workload_is_registered() -> None:
    import supervisor_tree.bench  # noqa: F401 - registers the built-in workloads

    assert registry()["http_sustained_5k_1kib"].quick
