"""A Ray node dies: its workers exit with `node_lost` (not a crash) and come back on another node, by the tree's rules."""

from __future__ import annotations

import json
from pathlib import Path

from tests.nodes import Tree, write_config
from tests.on_ray.conftest import RayCluster
from tests.on_ray.test_otp_on_ray import config, worker


def test_killing_a_ray_node_restarts_its_workers_elsewhere(tmp_path: Path, ray_cluster: RayCluster) -> None:
    t = Tree(write_config(tmp_path, config(ray_cluster, 'strategy = "one_for_one"\nintensity = 5\nperiod = 30',
                                           [worker("steady", "head_box"), worker("mover", "side")])))
    try:
        assert t.start(detach_timeout=120).returncode == 0
        status = json.loads(t.cli("status", "--json").stdout)
        host = {c["id"]: c["host"] for c in status["tree"]["children"]}
        lost = ray_cluster.name_of(host["mover"])
        assert lost in ("side1", "side2")
        ray_cluster.kill(lost)
        exited = t.wait_event(lambda e: e["event"] == "exited" and e["child"] == "mover", 90, "mover to exit")
        assert str(exited["reason"]).startswith("{node_lost,"), exited
        t.wait_started("mover", 2, timeout=90)
        status = json.loads(t.cli("status", "--json").stdout)
        moved = {c["id"]: c for c in status["tree"]["children"]}
        assert ray_cluster.name_of(moved["mover"]["host"]) not in (lost, "head")
        assert moved["steady"]["generation"] == 1  # one_for_one: the worker on the live node is untouched
        assert t.cli("call", "mover", '{"cmd": "echo", "value": 2}').stdout.strip() == "2"
    finally:
        t.stop()
