"""The registry end to end: a real node, workers that register themselves, sends by name."""

from __future__ import annotations

import pytest
from components import start_tree, worker  # noqa: F401 - start_tree is a fixture
from nodes import wait_for

from supervisor_tree.workers.registry import AlreadyRegistered, Names, NotRegistered

pytestmark = pytest.mark.timeout(120)

REGISTRY = worker("registry", "supervisor_tree.workers.registry:Registry")
NAMED = "tests.integration.component_workers:Named"


def test_register_lookup_and_send_by_name(start_tree) -> None:  # type: ignore[no-untyped-def]
    t = start_tree(REGISTRY, worker("w1", NAMED, name="alpha"))
    names = Names(t.client)
    entry = names.whereis("alpha")
    assert entry == {"id": "w1", "generation": 1, "pid": t.pid_of("w1")}
    assert names.whereis("nobody") is None
    names.send("alpha", "hello")
    assert names.call("alpha", "casts") == 1
    assert names.list() == {"alpha": "w1"}
    # Another name for the same worker, from outside (the registry resolves its incarnation).
    assert names.register("beta", "w1")["generation"] == 1
    assert names.call("beta", "info")["id"] == "w1"
    with pytest.raises(AlreadyRegistered, match="registered to worker 'w1'"):
        names.register("beta", "registry")
    assert names.unregister("beta") is True
    with pytest.raises(NotRegistered):
        names.send("beta", "x", timeout=0.2)
    # The CLI speaks the JSON form.
    out = t.cli("call", "registry", '{"op": "whereis", "name": "alpha"}', "--json")
    assert out.returncode == 0, out.stderr
    assert '"id": "w1"' in out.stdout


def test_name_vanishes_when_its_worker_is_killed(start_tree) -> None:  # type: ignore[no-untyped-def]
    t = start_tree(REGISTRY, worker("gone", NAMED, restart="temporary", name="ephemeral"))
    names = Names(t.client)
    assert names.whereis("ephemeral")["id"] == "gone"
    t.client.kill("gone")
    wait_for(lambda: names.whereis("ephemeral") is None, 10, "the name to vanish with its worker")
    assert names.stats()["dropped_on_exit"] == 1


def test_name_comes_back_with_the_restarted_worker(start_tree) -> None:  # type: ignore[no-untyped-def]
    t = start_tree(REGISTRY, worker("svc", NAMED, name="service"))
    names = Names(t.client)
    names.send("service", "before")
    assert names.call("service", "casts") == 1
    t.client.kill("svc")
    t.wait_started("svc", 2)
    wait_for(lambda: (names.whereis("service") or {}).get("generation") == 2, 10, "svc#2 to register again")
    # The cached target died: the next send looks the name up again and reaches the new incarnation.
    names.send("service", "after")
    assert names.call("service", "casts") == 1
    assert names.call("service", "info")["generation"] == 2
    assert names.stats()["registers"] == 2


def test_cached_send_by_name_costs_no_lookup(start_tree) -> None:  # type: ignore[no-untyped-def]
    t = start_tree(REGISTRY, worker("sink", NAMED, name="sink"))
    names = Names(t.client)
    names.send("sink", 0)  # the first send looks the name up
    served = names.stats()["lookups"]
    for i in range(1, 1000):
        names.send("sink", i)
    assert names.call("sink", "casts") == 1000  # every cast arrived (same socket, in order, before this call)
    assert names.stats()["lookups"] == served
    assert names.lookups == 1
