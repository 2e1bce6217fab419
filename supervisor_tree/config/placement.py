"""Where a tree's workers run: `[node] backend/address/host`, and a child's `resources` / `node_affinity`.

Owns the checks of those keys and the `Backend` record the node reads; never imports
Ray (whether it is installed is asked of importlib, so `check` stays fast and the
default install never needs it).

    [node]
    backend = "ray"          # "local" (the default: a fork server on this machine) or "ray"
    address = "auto"         # ray.init's address: "auto", "HOST:PORT" or "ray://HOST:PORT"
    host = "127.0.0.1"       # the address of this machine the workers reach the node at

    [[tree.children]]
    resources = { CPU = 1, gpu_box = 0.5 }   # Ray resources the worker's actor asks for
    node_affinity = "5f3c...e1"              # a Ray node id (hex): the actor runs there

Every check returns None or "<key> must be ...; got ..." (schema.py's convention).
"""

from __future__ import annotations

import importlib.util
import ipaddress
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from supervisor_tree.spec import _got

__all__ = ["BACKENDS", "Backend", "check_backend", "check_address", "check_host", "check_resources",
           "check_node_affinity", "ray_missing", "RAY_INSTALL", "read_backend", "read_placement", "check_placed"]

T = TypeVar("T")

BACKENDS = ("local", "ray")
RAY_INSTALL = "pip install 'supervisor-tree[ray]' (in a checkout: pip install -e '.[ray]')"
_HOST_PORT = re.compile(r"^(?:ray://)?[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")
_NODE_ID = re.compile(r"^[0-9a-f]{56}$")
_RESOURCE = re.compile(r"^[A-Za-z_][A-Za-z0-9_:.\-]*$")


@dataclass(frozen=True, slots=True)
class Backend:
    """Where the node places its workers.  `local`: forked here.  `ray`: Ray actors on the cluster at `address`."""

    kind: str = "local"
    address: str = "auto"
    host: str = "127.0.0.1"
    options: Mapping[str, object] = field(default_factory=dict)

    @property
    def is_local(self) -> bool:
        return self.kind == "local"


def check_backend(value: object) -> str | None:
    if value in BACKENDS:
        return None
    return f"backend must be one of {', '.join(repr(b) for b in BACKENDS)}; got {_got(value)}"


def check_address(value: object) -> str | None:
    if isinstance(value, str) and (value == "auto" or _HOST_PORT.match(value)):
        return None
    return f'address must be "auto", "HOST:PORT" or "ray://HOST:PORT" (a Ray cluster); got {_got(value)}'


def check_host(value: object) -> str | None:
    if isinstance(value, str) and value:
        try:
            ipaddress.ip_address(value)
            return None
        except ValueError:
            pass
    return f"host must be an IP address of this machine that the workers can reach (e.g. \"127.0.0.1\"); got {_got(value)}"


def check_resources(value: object) -> str | None:
    if not isinstance(value, Mapping) or not value:
        return f"resources must be a table of resource name = amount (e.g. {{ CPU = 1 }}); got {_got(value)}"
    for name, amount in value.items():
        if not isinstance(name, str) or not _RESOURCE.match(name):
            return f"resources: {_got(name)} is not a resource name (letters, digits, _ : . -)"
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not math.isfinite(amount) or amount < 0:
            return f"resources.{name} must be a number >= 0; got {_got(amount)}"
    return None


def check_node_affinity(value: object) -> str | None:
    if isinstance(value, str) and _NODE_ID.match(value):
        return None
    return f"node_affinity must be a Ray node id (56 hex digits, as `ray list nodes` shows); got {_got(value)}"


def ray_missing() -> str | None:
    """Why `backend = "ray"` cannot run in this environment, or None when Ray is importable."""
    try:
        found = importlib.util.find_spec("ray") is not None
    except (ValueError, ImportError):  # sys.modules["ray"] is None: imports of it are blocked
        found = False
    if found:
        return None
    return f'backend = "ray" needs Ray, which is not installed here: {RAY_INSTALL}'


# ---------------------------------------------------------------------------
# Reading the keys (load.py calls these with its Table)


class _Table(Protocol):
    data: Mapping[str, object]
    bad: set[str]

    def get(self, key: str, check: Callable[[object], str | None], convert: Callable[[Any], T], default: T) -> T: ...
    def report(self, message: str) -> None: ...


def read_backend(t: _Table | None, check_imports: bool) -> Backend:
    """[node] backend/address/host; with backend = "ray" and `check_imports` (the environment is checked, as by
    `supervise check` and `start`), Ray must be importable here."""
    if t is None:
        return Backend()
    kind = t.get("backend", check_backend, str, "local")
    address = t.get("address", check_address, str, "auto")
    host = t.get("host", check_host, str, "127.0.0.1")
    if kind == "local" and "backend" not in t.bad:
        for key in ("address", "host"):
            if key in t.data:
                t.report(f'{key} is only for backend = "ray"; this node forks its workers here (add backend = "ray")')
    elif "backend" not in t.bad and check_imports:
        missing = ray_missing()
        if missing:
            t.report(missing)
    return Backend(kind, address, host)


def read_placement(t: _Table) -> tuple[dict[str, float] | None, str | None]:
    """A child's `resources` and `node_affinity` (None where absent)."""
    resources = t.get("resources", check_resources, lambda v: {str(k): float(a) for k, a in v.items()}, None)
    affinity = t.get("node_affinity", check_node_affinity, str, None)
    return resources, affinity


def check_placed(t: _Table, backend: Backend, is_port: bool) -> None:
    """What a child asks of its placement that this backend cannot give."""
    if backend.is_local:
        for key in ("resources", "node_affinity"):
            if key in t.data:
                t.report(f'{key} is only for [node] backend = "ray"; this node forks its workers here')
    elif is_port:
        t.report('command (an external program) runs on the node\'s machine only; with backend = "ray" use a Python '
                 "worker (start = ...) or run the program from one")
