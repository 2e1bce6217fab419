"""Workload ``tcp_sustained_10k``: the network component under 10K TCP connections, beside raw asyncio.

Owns two sets of figures, each beside a reference measured in the same run:

1. ``tcp_tools_call_1KiB``: 10,000 connections (quick: 1,000), each sending a
   1 KiB JSON-RPC ``tools/call`` of ``echo`` and reading its reply before the
   next (closed loop); replies read per second, and latency percentiles from
   every sample.  ``echo`` runs on the pool (network -> pool manager -> member
   -> network).  ``tcp_tools_call_1KiB_inline``: the same against a second
   network worker whose config marks ``echo`` inline (``tools = { echo = {
   inline = true } }``: it runs in the network worker itself).  Reference for
   both: the same clients, connections and frames against a raw asyncio line
   echo server in another process (``tcp_load echo``): what loopback TCP and
   one Python event loop give on this machine today.  The three take rounds by
   turns (the machine's load shifts).
2. ``idle_connections_held`` and ``server_rss_per_connection``: how many idle
   connections the network component holds (target 40-50K; quick: 5K), each
   proven alive by a JSON-RPC ping, and the server's RSS per connection, beside
   the raw echo server holding as many.

    $ supervise bench tcp_sustained_10k [--quick]

The tree: session, a pool (manager + members), the network component as
`shards` workers sharing one port (SO_REUSEPORT), and ``network.inline`` on a port of its own; each process here may hold at
most RLIMIT_NOFILE's hard limit of sockets (20,000 on this machine, and no
CAP_SYS_RESOURCE to raise it), so 50K connections take 3 shards on the server
and 3+ load processes on the client side.  Load processes spread their source
addresses over 127.0.0.2-9 (one address has ~28K ephemeral ports).
"""

from __future__ import annotations

import json
import math
import os
import select
import socket
import subprocess
import sys
from array import array
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import psutil

from supervisor_tree.bench._tree import REPO, BenchTree
from supervisor_tree.bench.harness import (
    BenchContext,
    BenchError,
    Better,
    Histogram,
    Measurement,
    Trial,
    measure_throughput,
    workload,
)
from supervisor_tree.bench.measurement import Role
from supervisor_tree.client import Client
from supervisor_tree.workers.pool_tree import pool_toml

SOURCES = [f"127.0.0.{i}" for i in range(2, 10)]
PER_PROCESS = 18_000  # connections per load process: under the hard RLIMIT_NOFILE of 20,000
LINE_SIZE = 1024
STEP_TIMEOUT = 120.0  # s any one step of a load process may take
TARGET_RPS = 43_000.0  # the seed's "Network I/O: 43K msg/s"


def network_toml(shards: int, port: int, pool_size: int, max_connections: int, net_args: str = "",
                 inline_port: int = 0) -> str:  # fmt: skip
    """The tree under test: session, pool (members + manager), network shards on one port (by turns), and with
    `inline_port` a network worker there that runs echo inline."""
    def args(i: int) -> str:
        turns = (', standby = true' if i > 1 else '') + (f', overflow = "network.{i + 1}"' if i < shards else '')
        extra = f", {net_args}" if net_args else ""
        return f"{{ port = {port}, reuse_port = true, max_connections = {max_connections}{turns}{extra} }}"

    net = "\n".join(
        f'[[tree.children.children]]\nid = "network.{i}"\nstart = "supervisor_tree.workers.network:Network"\nshutdown = 5000\n'
        f"args = {args(i)}\n" for i in range(1, shards + 1))
    if inline_port:
        net += (f'\n[[tree.children.children]]\nid = "network.inline"\nstart = "supervisor_tree.workers.network:Network"\n'
                f"shutdown = 5000\nargs = {{ port = {inline_port}, max_connections = {max_connections}, http = false, "
                "tools = { echo = { inline = true } } }\n")
    pool = pool_toml("pool", size=pool_size, max_overflow=0, intensity=100, member_intensity=100,
                     member_shutdown=None, manager_shutdown=None)
    return f"""[node]
name = "bench-network"
preload = ["supervisor_tree.workers.session", "supervisor_tree.workers.pool", "supervisor_tree.workers.pool_member", "supervisor_tree.workers.network", "supervisor_tree.workers.net.tools"]

[tree]
strategy = "one_for_one"
intensity = 100
period = 10

[[tree.children]]
id = "session"
start = "supervisor_tree.workers.session:Session"

{pool}
[[tree.children]]
id = "network"
type = "supervisor"
strategy = "one_for_one"
intensity = 100
period = 10

{net}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def _read_json(proc: subprocess.Popen[str], what: str, timeout: float = STEP_TIMEOUT) -> Any:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    if not line:
        raise BenchError(f"{what}: load process {proc.pid} gave no answer (exit code {proc.poll()})")
    return json.loads(line)


class EchoServer:
    """The reference: `tcp_load echo` (or `module`'s) in its own process, or `shards` of them sharing a port."""

    def __init__(self, shards: int = 1, module: str = "supervisor_tree.bench.tcp_load") -> None:
        self.shards = shards
        self.module = module
        self.procs: list[subprocess.Popen[str]] = []

    def __enter__(self) -> EchoServer:
        port = 0 if self.shards == 1 else free_port()
        for _ in range(self.shards):
            proc = subprocess.Popen([sys.executable, "-m", self.module, "echo", str(port)],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_env())
            self.procs.append(proc)
            self.port = int(_read_json(proc, "echo server")["port"])
        return self

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.close()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            if proc.stdout is not None:
                proc.stdout.close()


class LoadProcesses:
    """`n` load processes (`module`'s client), each with its share of connections to every target."""

    def __init__(self, targets: dict[str, int], conns: int, processes: int, scratch: Path,
                 module: str = "supervisor_tree.bench.tcp_load") -> None:  # fmt: skip
        self.scratch = scratch
        self.procs: list[subprocess.Popen[str]] = []
        share = [conns // processes + (1 if i < conns % processes else 0) for i in range(processes)]
        for i, n in enumerate(share):
            spec = {"targets": {name: {"port": port, "conns": n, "first_id": sum(share[:i])}
                                for name, port in targets.items()},
                    "sources": SOURCES, "line_size": LINE_SIZE}  # fmt: skip
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", module, "client", json.dumps(spec)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_env()))
        self.connected = {name: 0 for name in targets}
        for proc in self.procs:
            for name, got in _read_json(proc, "connect").items():
                self.connected[name] += got["connected"]

    def _ask(self, command: str) -> list[dict[str, Any]]:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(command + "\n")
            proc.stdin.flush()
        return [_read_json(p, command) for p in self.procs]

    def window(self, target: str, seconds: float) -> tuple[Trial, dict[str, int]]:
        files = [self.scratch / f"samples-{i}.bin" for i in range(len(self.procs))]
        answers = []
        for proc, path in zip(self.procs, files):
            assert proc.stdin is not None
            proc.stdin.write(f"run {target} {seconds} {path}\n")
            proc.stdin.flush()
        answers = [_read_json(p, f"run {target}") for p in self.procs]
        hist = Histogram()
        for path in files:
            samples = array("q")
            samples.frombytes(path.read_bytes())
            hist.record_many(samples)
        replies = sum(a["replies"] for a in answers)
        seconds_taken = max(a["elapsed_s"] for a in answers)
        problems = {k: sum(a[k] for a in answers) for k in ("errors", "lost", "unanswered")}
        return Trial(replies, seconds_taken, hist), problems

    def ping(self, target: str) -> int:
        return sum(a["answered"] - a["errors"] for a in self._ask(f"ping {target}"))

    def close(self) -> None:
        for proc in self.procs:
            try:
                assert proc.stdin is not None
                proc.stdin.write("quit\n")
                proc.stdin.close()
            except (BrokenPipeError, OSError):
                pass
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            if proc.stdout is not None:
                proc.stdout.close()


def _shard_pids(run_dir: Path, shards: int) -> list[int]:
    return _pids(run_dir, [f"network.{i}" for i in range(1, shards + 1)])


def _pids(run_dir: Path, workers: list[str]) -> list[int]:
    with Client(run_dir, timeout=10.0) as c:
        return [int(c.resolve(w).pid) for w in workers]


def _rss(pids: list[int]) -> int:
    return sum(int(psutil.Process(p).memory_info().rss) for p in pids)


class Rounds(NamedTuple):
    trials: dict[str, list[Trial]]  # by target, after the warm-up
    trouble: dict[str, int]  # errors, lost connections, requests unanswered at the end of a window (not the ref's)
    cpu_us: dict[str, list[float]]  # by target: CPU of its server processes per reply, one figure per window


def alternate(ctx: BenchContext, load: LoadProcesses, conns: int, window: float, label: str,
              names: tuple[str, ...] = ("ours", "ref"), pids: Mapping[str, list[int]] | None = None) -> Rounds:  # fmt: skip
    """Windows of each target in `names` by turns (the machine's load shifts; the last name is the reference),
    with the CPU time of each target's server processes (`pids`) per reply."""
    for name, got in load.connected.items():
        if got < conns:
            raise BenchError(f"only {got} of {conns} connections to {name} opened")
    rounds = Rounds({name: [] for name in names}, {"errors": 0, "lost": 0, "unanswered": 0},
                    {name: [] for name in names})  # fmt: skip
    with ctx.progress.task(f"{label} {'/'.join(names)} rounds", total=ctx.warmup + ctx.repeats) as advance:
        for round_ in range(ctx.warmup + ctx.repeats):
            for name in names:
                before = _cpu((pids or {}).get(name, []))
                trial, problems = load.window(name, window)
                used = _cpu((pids or {}).get(name, [])) - before
                if round_ >= ctx.warmup:
                    rounds.trials[name].append(trial)
                    if pids and trial.ops:
                        rounds.cpu_us[name].append(used / trial.ops * 1e6)
                    if name != names[-1]:
                        for k, v in problems.items():
                            rounds.trouble[k] += v
            advance()
    return rounds


def _cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) the processes `pids` have used so far (one that is gone counts 0)."""
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


def _tree_pids(tree: BenchTree, leave_out: list[int]) -> list[int]:
    """The node and every process under it (network shards, pool manager and members, session), but `leave_out`."""
    node = psutil.Process(tree.node_pid)
    return [p.pid for p in [node, *node.children(recursive=True)] if p.pid not in leave_out]


def sustained(ctx: BenchContext, tree: BenchTree, ports: dict[str, int], shards: int,
              conns: int) -> list[Measurement]:  # fmt: skip
    window = max(2.0, ctx.duration / ctx.repeats)
    inline_pid = _pids(tree.run_dir, ["network.inline"])
    with EchoServer(shards) as echo:
        processes = 2 if conns > 2000 else 1
        load = LoadProcesses({**ports, "ref": echo.port}, conns, processes, tree.dir)
        pids = {"ours": _tree_pids(tree, inline_pid), "inline": inline_pid, "ref": echo.pids}
        try:
            rounds = alternate(ctx, load, conns, window, "tcp_sustained", ("ours", "inline", "ref"), pids)
        finally:
            load.close()
    note = (f"{conns} connections, 1 closed-loop request each, {LINE_SIZE} B lines, {processes} load process(es), "
            f"{window:g} s windows, {shards} server process(es) on one port, ours and the reference alike")
    trials = rounds.trials
    reference = measure_throughput("raw_asyncio_echo_1KiB", trials["ref"], unit="req/s", role=Role.REFERENCE,
                                   note=note)  # fmt: skip
    pooled = measure_throughput("tcp_tools_call_1KiB", trials["ours"], unit="req/s", target=TARGET_RPS,
                                p99_target_us=5000.0, note=note + "; echo on the pool",
                                extra={"problems": rounds.trouble})  # fmt: skip
    inline = measure_throughput("tcp_tools_call_1KiB_inline", trials["inline"], unit="req/s", target=TARGET_RPS,
                                p99_target_us=5000.0, note="the same, echo inline in one network worker "
                                "(tools = { echo = { inline = true } })")  # fmt: skip
    cpu = {name: Measurement.from_values(f"{what}_cpu_per_request", "us", rounds.cpu_us[name], better=Better.LOWER,
                                         role=Role.REFERENCE if name == "ref" else Role.OURS, note=note)
           for name, what in (("ours", "tcp_tools_call_pooled"), ("inline", "tcp_tools_call_inline"),
                              ("ref", "raw_asyncio_echo"))}  # fmt: skip
    return [pooled.compared_to(reference), inline.compared_to(reference), reference,
            cpu["ours"].compared_to(cpu["ref"]), cpu["inline"].compared_to(cpu["ref"]), cpu["ref"]]  # fmt: skip


def held(ctx: BenchContext, tree: BenchTree, port: int, shards: int, conns: int) -> list[Measurement]:
    processes = math.ceil(conns / PER_PROCESS)
    pids = _shard_pids(tree.run_dir, shards)
    results: dict[str, tuple[int, float]] = {}
    with EchoServer(shards) as echo:
        for name, target_port, server_pids in (("ours", port, pids), ("ref", echo.port, echo.pids)):
            before = _rss(server_pids)
            load = LoadProcesses({name: target_port}, conns, processes, tree.dir)
            try:
                answered = load.ping(name)
                after = _rss(server_pids)
            finally:
                load.close()
            results[name] = (answered, (after - before) / max(1, answered))
    note = (f"{conns} idle connections asked for, {processes} load process(es), each proven by a ping; "
            f"servers: {shards} processes on one port (SO_REUSEPORT), ours and the reference alike")
    ref_held = Measurement.from_values("raw_asyncio_echo_idle_connections", "conns", [results["ref"][0]],
                                       role=Role.REFERENCE, note=note)
    ref_rss = Measurement.from_values("raw_asyncio_echo_rss_per_connection", "B", [results["ref"][1]],
                                      better=Better.LOWER, role=Role.REFERENCE)
    ours_held = Measurement.from_values("idle_connections_held", "conns", [results["ours"][0]],
                                        target=min(40_000.0, conns), note=note)
    ours_rss = Measurement.from_values("server_rss_per_connection", "B", [results["ours"][1]], better=Better.LOWER,
                                       note="RSS growth of the network workers / connections held")
    return [ours_held.compared_to(ref_held), ours_rss.compared_to(ref_rss), ref_held, ref_rss]


@workload("tcp_sustained_10k", quick=True,
          description="10K TCP connections (quick 1K), 1 KiB JSON-RPC tools/call, vs raw asyncio echo")
def tcp_sustained_10k(ctx: BenchContext) -> list[Measurement]:
    conns = ctx.count(full=10_000, quick=1_000)
    idle = ctx.count(full=50_000, quick=5_000)
    shards = max(1, math.ceil(idle / PER_PROCESS))
    port, inline_port = free_port(), free_port()
    toml = network_toml(shards, port, pool_size=2, max_connections=PER_PROCESS + 1000, inline_port=inline_port)
    with BenchTree(toml, base="/tmp") as tree:
        held_figures = held(ctx, tree, port, shards, idle)  # first: RSS growth from a fresh server
        return sustained(ctx, tree, {"ours": port, "inline": inline_port}, shards, conns) + held_figures
