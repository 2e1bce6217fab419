"""The Ray tests (`make test-ray`): a local multi-node Ray cluster, started and stopped here, on loopback only.

Collected only when SUPERVISE_RAY_TESTS=1 (`make test-ray` sets it and installs the `ray`
extra first): `make test` and the default install never need Ray.  The cluster is
`ray.cluster_utils.Cluster`: a head node and two worker nodes, each with resources of its
own (`head_box`; `side` on both others, so a child placed by `side` can move when its
node is killed), all at 127.0.0.1 (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 makes Ray take
the loopback address instead of the machine's first interface, for the nodes and for
every `supervise` process the tests start).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

if os.environ.get("SUPERVISE_RAY_TESTS") != "1":
    collect_ignore_glob = ["test_*.py"]  # run by `make test-ray`, never by `make test`
else:
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # loopback only
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"


class RayCluster:
    """The cluster, its nodes by name, and the address a tree's `[node] address` takes."""

    def __init__(self, cluster: Any, nodes: dict[str, Any]) -> None:
        self.cluster, self.nodes = cluster, nodes
        self.address: str = cluster.address

    def name_of(self, host: str) -> str:
        """Which of our nodes a status HOST cell ("HOSTNAME/IP NODEID6") names."""
        suffix = host.rsplit(" ", 1)[-1]
        return next(name for name, node in self.nodes.items() if node.node_id.startswith(suffix))

    def kill(self, name: str) -> None:
        """Take Ray node `name` out of the cluster, as a lost host would be (its processes die)."""
        self.cluster.remove_node(self.nodes.pop(name), allow_graceful=False)


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "resources": {"head_box": 8}, "node_ip_address": "127.0.0.1", "include_dashboard": False})
    nodes = {"head": cluster.head_node}
    nodes["side1"] = cluster.add_node(num_cpus=1, resources={"side": 8, "side1": 8}, node_ip_address="127.0.0.1")
    nodes["side2"] = cluster.add_node(num_cpus=1, resources={"side": 8, "side2": 8}, node_ip_address="127.0.0.1")
    cluster.wait_for_nodes()
    try:
        yield RayCluster(cluster, nodes)
    finally:
        cluster.shutdown()
