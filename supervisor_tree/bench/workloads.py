"""The built-in workloads: importing this module registers each of them with the harness.

    raw, core_ops_100k, tcp_sustained_10k, http_sustained_5k_1kib, sustained, restart,
    reload, profile, async_calls, observe, observe_crash_loop, pipelined_calls,
    pipelined_components

The harness imports none of them (it only keeps the registry), so a workload may
import anything of the harness without a circle; this module is the one place
that names them all.
"""

from supervisor_tree.bench import (
    aio,
    core_ops,
    http_network,
    network,
    observe_overhead,
    pipelined,
    profile_overhead,
    raw,
    reload,
    restart,
    sustained,
)

BUILT_IN = (core_ops, network, http_network, profile_overhead, observe_overhead, raw, reload, restart, sustained, aio,
            pipelined)
