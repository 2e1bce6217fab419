"""config/placement.py: `[node] backend/address/host` and a child's `resources` / `node_affinity`.

Every bad value is one line naming the file, the key and what is allowed; `check`
shows the backend and each worker's placement; backend = "ray" without Ray installed
is an error of `check` (which looks at the environment, as it imports `start`) that says how
to install it: run in a process where importing Ray is blocked, so it holds whether or not
this environment has the extra.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from supervisor_tree.config.describe import describe
from supervisor_tree.config.load import parse_config
from supervisor_tree.config.placement import Backend
from tests.unit.test_config import problems

RAY_TREE = """
[node]
backend = "ray"
address = "ray://10.0.0.5:10001"
host = "127.0.0.1"

[tree]
[[tree.children]]
id = "a"
start = "m:W"
resources = { CPU = 1, side = 0.5 }
node_affinity = "{affinity}"
"""
NODE_ID = "ab" * 28


def test_a_ray_tree_is_read_and_described() -> None:
    spec = parse_config(RAY_TREE.replace("{affinity}", NODE_ID), source="config.toml", check_imports=False)
    assert spec.extra["backend"] == Backend("ray", "ray://10.0.0.5:10001", "127.0.0.1")
    child = spec.tree.children[0]
    assert child.resources == {"CPU": 1.0, "side": 0.5} and child.node_affinity == NODE_ID
    text = describe(spec)
    assert "backend ray  address ray://10.0.0.5:10001  node reached at 127.0.0.1 (tcp, CurveZMQ)" in text
    assert "resources CPU=1,side=0.5  on node abababababab" in text


def test_the_default_backend_is_local() -> None:
    spec = parse_config("[tree]\n", source="config.toml", check_imports=False)
    assert spec.extra["backend"] == Backend() and Backend().is_local


@pytest.mark.parametrize(("node", "expected"), [
    ('backend = "k8s"', "config.toml: node: backend must be one of 'local', 'ray'; got 'k8s'"),
    ('backend = "ray"\naddress = "the cluster"',
     'config.toml: node: address must be "auto", "HOST:PORT" or "ray://HOST:PORT" (a Ray cluster); got \'the cluster\''),
    ('backend = "ray"\nhost = "my laptop"', "config.toml: node: host must be an IP address of this machine"),
    ('address = "auto"', 'config.toml: node: address is only for backend = "ray"; this node forks its workers here'),
])
def test_bad_node_keys_are_one_line_each(node: str, expected: str) -> None:
    found = problems(f"[node]\n{node}\n[tree]\n")
    assert any(p.startswith(expected) for p in found), found


@pytest.mark.parametrize(("child", "expected"), [
    ("resources = { CPU = -1 }", 'tree.children[0] "a": resources.CPU must be a number >= 0; got -1'),
    ("resources = 4", 'tree.children[0] "a": resources must be a table of resource name = amount'),
    ('resources = { "bad name" = 1 }', "resources: 'bad name' is not a resource name"),
    ('node_affinity = "node-1"', 'tree.children[0] "a": node_affinity must be a Ray node id (56 hex digits'),
])
def test_bad_placement_is_one_line_naming_the_child(child: str, expected: str) -> None:
    found = problems(f'[tree]\n[[tree.children]]\nid = "a"\nstart = "m:W"\n{child}\n')
    assert any(expected in p for p in found), found


def test_placement_on_a_local_tree_is_an_error_not_ignored() -> None:
    found = problems('[tree]\n[[tree.children]]\nid = "a"\nstart = "m:W"\nresources = { CPU = 1 }\n')
    assert found == ['config.toml: tree.children[0] "a": resources is only for [node] backend = "ray"; '
                     "this node forks its workers here"]


def test_ray_backend_without_ray_says_how_to_install_it(tmp_path: object) -> None:
    path = f"{tmp_path}/ray.toml"
    with open(path, "w") as f:
        f.write(textwrap.dedent(RAY_TREE.replace("{affinity}", NODE_ID)).replace('"m:W"', '"supervisor_tree.workers.puppet:Puppet"'))
    blocked = (f"import sys; sys.modules['ray'] = None; sys.argv = ['supervise', 'check', {path!r}]; "
               "from supervisor_tree.cli.main import main; main()")
    done = subprocess.run([sys.executable, "-c", blocked], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"supervise: {path}: node: backend = \"ray\" needs Ray, which is not installed here: "
                                   "pip install 'supervisor-tree[ray]' (in a checkout: pip install -e '.[ray]')")
