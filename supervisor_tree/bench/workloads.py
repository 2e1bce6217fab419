"""The built-in workloads: importing this module registers each of them with the harness.

    core_ops_100k, tcp_sustained_10k, sustained, restart, profile, raw, observe, observe_crash_loop

The harness imports none of them (it only keeps the registry), so a workload may
import anything of the harness without a circle; this module is the one place
that names them all.
"""

from supervisor_tree.bench import core_ops, network, observe_overhead, profile_overhead, raw, restart, sustained

BUILT_IN = (core_ops, network, observe_overhead, profile_overhead, raw, restart, sustained)
