"""Workload ``http_sustained_5k_1kib``: the network component's MCP Streamable HTTP under 5K connections.

Owns one figure beside its reference, measured in the same run:
``http_tools_call_1KiB``: 5,000 HTTP/1.1 keep-alive connections (quick: 500),
each with its own MCP session (initialize first), sending a 1 KiB JSON-RPC
``tools/call`` of ``echo`` as a POST and reading its whole answer (an event
stream of one event) before the next (closed loop); answers read per second,
latency percentiles from every sample.  Reference: the same load processes,
connections and requests against a raw HTTP server on the same HTTP library
(httptools in an asyncio Protocol on uvloop, `http_load echo`) that answers
each POST with its body; no JSON, no MCP, no ZeroMQ, no pool.  Our rounds and
the reference's alternate.

    $ supervise bench http_sustained_5k_1kib [--quick]

The tree is `tcp_sustained_10k`'s (bench/network.py): session, a pool of 2
members, one network worker, serving HTTP on a fixed port.
"""

from __future__ import annotations

from supervisor_tree.bench._tree import BenchTree
from supervisor_tree.bench.harness import BenchContext, Measurement, measure_throughput, workload
from supervisor_tree.bench.measurement import Role
from supervisor_tree.bench.network import (
    LINE_SIZE,
    PER_PROCESS,
    EchoServer,
    LoadProcesses,
    alternate,
    free_port,
    network_toml,
)

MODULE = "supervisor_tree.bench.http_load"


@workload("http_sustained_5k_1kib", quick=True,
          description="5K HTTP connections (quick 500), 1 KiB MCP tools/call over Streamable HTTP, vs raw httptools")
def http_sustained(ctx: BenchContext) -> list[Measurement]:
    conns = ctx.count(full=5_000, quick=500)
    window = max(2.0, ctx.duration / ctx.repeats)
    port, http_port = free_port(), free_port()
    toml = network_toml(1, port, pool_size=2, max_connections=PER_PROCESS + 1000, net_args=f"http_port = {http_port}")
    processes = 2 if conns > 2000 else 1
    with BenchTree(toml, base="/tmp") as tree, EchoServer(module=MODULE) as echo:
        load = LoadProcesses({"ours": http_port, "ref": echo.port}, conns, processes, tree.dir, module=MODULE)
        try:
            trials, trouble, _ = alternate(ctx, load, conns, window, "http_sustained")
        finally:
            load.close()
    note = (f"{conns} HTTP/1.1 keep-alive connections, one MCP session each, 1 closed-loop POST each, {LINE_SIZE} B "
            f"JSON-RPC bodies, {processes} load process(es), {window:g} s windows, one server process, ours and the "
            "reference alike")
    reference = measure_throughput("raw_httptools_echo_1KiB", trials["ref"], unit="req/s", role=Role.REFERENCE,
                                   note=note)  # fmt: skip
    measured = measure_throughput("http_tools_call_1KiB", trials["ours"], unit="req/s", note=note,
                                  extra={"problems": trouble})  # fmt: skip
    return [measured.compared_to(reference), reference]
