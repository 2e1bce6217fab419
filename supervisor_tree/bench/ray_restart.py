"""``supervise bench restart --backend ray``: our restart on a Ray cluster beside Ray's own actor restart.

Both measured in the same run, on the same cluster, alternating round by round (the
machine's load shifts within seconds), each from SIGKILL of the process to the next
answered call:

* ours: a tree with `[node] backend = "ray"`, one puppet worker placed on a Ray worker
  node; SIGKILL its process, then `Client.resolve(after_generation=g)` and a call (the
  supervisor restarts it through its actor's fork server: a standby activation);
* Ray's: an actor with `max_restarts=-1, max_task_retries=-1` on the same Ray node;
  SIGKILL its process, then `ray.get(actor.pid.remote())`, which Ray retries until the
  restarted actor answers.

Without `--address` a local two-node cluster (`ray.cluster_utils.Cluster`, loopback only)
is started and stopped here, on 127.0.0.1 (`bench.__main__` sets RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
before Ray is imported, for the nodes and the tree's node alike).  Prints p50/p90 of each, and Ray's p50 over ours (the goal is
at least 5x).  Imports Ray: only reached through `bench.__main__` with `--backend ray`.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import ray

from supervisor_tree.client import Client

__all__ = ["main"]

GOAL = 5.0
SETTLE_S = 0.1  # between kills, not timed: the actor's fork server refills its standby
_now = time.perf_counter_ns


@contextmanager
def _local_cluster() -> Iterator[str]:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False})
    cluster.add_node(num_cpus=1, resources={"bench_side": 4}, node_ip_address="127.0.0.1")
    cluster.wait_for_nodes()
    try:
        yield str(cluster.address)
    finally:
        cluster.shutdown()


@contextmanager
def _tree(address: str) -> Iterator[Path]:
    run_dir = Path(tempfile.mkdtemp(prefix="st-rb-", dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None))
    config = run_dir.with_suffix(".toml")
    config.write_text(f'[node]\nname = "raybench"\nbackend = "ray"\naddress = "{address}"\n\n'
                      '[tree]\nstrategy = "one_for_one"\nintensity = 1000\nperiod = 1\n\n'
                      '[[tree.children]]\nid = "p"\nstart = "supervisor_tree.workers.puppet:Puppet"\n'
                      'resources = { bench_side = 1 }\n')
    cli = [sys.executable, "-m", "supervisor_tree.cli"]
    started = subprocess.run([*cli, "start", str(config), "--detach", "--run-dir", str(run_dir), "--timeout", "120"],
                             capture_output=True, text=True, timeout=180)
    if started.returncode != 0:
        raise RuntimeError(f"the bench tree did not start: {started.stderr.strip()[-400:]}")
    try:
        yield run_dir
    finally:
        subprocess.run([*cli, "stop", "--run-dir", str(run_dir)], capture_output=True, timeout=120)
        config.unlink(missing_ok=True)


def _ours(client: Client) -> Callable[[], float]:
    def once() -> float:
        target = client.resolve("p")
        t0 = _now()
        os.kill(target.pid, signal.SIGKILL)
        client.resolve("p", after_generation=target.generation, timeout=30.0)
        client.call("p", {"cmd": "echo", "value": 1}, timeout=30.0)
        return (_now() - t0) / 1e6

    return once


def _rays(address: str) -> Callable[[], float]:
    @ray.remote(max_restarts=-1, max_task_retries=-1, num_cpus=0, resources={"bench_side": 1})
    class Echo:
        def pid(self) -> int:
            return os.getpid()

    actor = Echo.remote()  # type: ignore[attr-defined]

    def once() -> float:
        pid = ray.get(actor.pid.remote(), timeout=60)
        t0 = _now()
        os.kill(pid, signal.SIGKILL)
        ray.get(actor.pid.remote(), timeout=60)
        return (_now() - t0) / 1e6

    return once


def _summary(name: str, ms: list[float]) -> str:
    q = statistics.quantiles(ms, n=10)
    return f"{name:<44} p50 {statistics.median(ms):8.1f} ms   p90 {q[8]:8.1f} ms   (n={len(ms)})"


def main(rounds: int, address: str | None) -> int:
    """Measure and print; 0 when both sides produced figures."""
    with _local_cluster() if address is None else _nullcontext(address) as where:
        ray.init(address=where, log_to_driver=False, configure_logging=False)
        try:
            with _tree(where) as run_dir, Client(run_dir, timeout=30.0) as client:
                ours, rays = _ours(client), _rays(where)
                ours(), rays()  # warm-up: first activation, first actor restart
                mine: list[float] = []
                theirs: list[float] = []
                for _ in range(rounds):
                    mine.append(ours())
                    time.sleep(SETTLE_S)  # not timed: the standby refills, as between real crashes
                    theirs.append(rays())
                    time.sleep(SETTLE_S)
        finally:
            ray.shutdown()
    ratio = statistics.median(theirs) / statistics.median(mine)
    print("restart after SIGKILL -> next answered call, on one Ray cluster (same run, alternating rounds)")
    print(_summary('ours (backend = "ray", supervisor in the node)', mine))
    print(_summary("Ray's own actor restart (max_restarts=-1)", theirs))
    verdict = "meets" if ratio >= GOAL else "misses"
    print(f"ratio: Ray p50 / ours p50 = {ratio:.1f}x ({verdict} the goal of >= {GOAL:g}x)")
    return 0


@contextmanager
def _nullcontext(value: str) -> Iterator[str]:
    yield value
