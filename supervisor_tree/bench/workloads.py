"""The built-in workloads: importing this module registers each of them with the harness.

    async_calls, core_ops_100k, tcp_sustained_10k, sustained, restart, reload, profile, raw

The harness imports none of them (it only keeps the registry), so a workload may
import anything of the harness without a circle; this module is the one place
that names them all.
"""

from supervisor_tree.bench import aio, core_ops, network, profile_overhead, raw, reload, restart, sustained

BUILT_IN = (aio, core_ops, network, profile_overhead, raw, reload, restart, sustained)
