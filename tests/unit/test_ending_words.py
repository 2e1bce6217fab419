"""The words of an ending: tracebacks picked out of a log whole, stop timeouts, process titles."""

from __future__ import annotations

from supervisor_tree.cli.endings import stop_timeout, tracebacks
from supervisor_tree.node.heart import HeartPolicy
from supervisor_tree.node.launchers.osproc import parse_title, title
from supervisor_tree.spec import BRUTAL_KILL, INFINITY, ChildSpec, ChildType, Shutdown, SupervisorSpec

LOG = """\
12:00:00.001 root node_started pid=1
worker db#1: init failed
Traceback (most recent call last):
  File "db.py", line 3, in connect
    raise OSError("refused")
OSError: refused

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "db.py", line 9, in init
    raise RuntimeError("no db")
RuntimeError: no db
12:00:00.002 root/db#1 start_error: RuntimeError('no db')
worker cache#1: init failed
Traceback (most recent call last):
  File "cache.py", line 1, in init
ValueError: size
12:00:00.003 root node_stop: the tree failed to start
"""


def test_tracebacks_are_taken_whole_with_their_chained_causes() -> None:
    blocks = tracebacks(LOG)
    assert [b[0] for b in blocks] == ["worker db#1: init failed", "worker cache#1: init failed"]
    assert blocks[0][-1] == "RuntimeError: no db" and "OSError: refused" in blocks[0]
    assert blocks[1] == ["worker cache#1: init failed", "Traceback (most recent call last):",
                         '  File "cache.py", line 1, in init', "ValueError: size"]
    assert tracebacks("no traceback here\n") == []


def worker(worker_id: str, shutdown: Shutdown) -> ChildSpec:
    return ChildSpec(id=worker_id, start="m:W", shutdown=shutdown)


def test_stop_timeout_adds_the_shutdown_timeouts_of_every_worker() -> None:
    nested = ChildSpec(id="mid", type=ChildType.SUPERVISOR,
                       supervisor=SupervisorSpec(children=(worker("b", Shutdown.timeout(2500)), worker("c", BRUTAL_KILL))))
    assert stop_timeout(SupervisorSpec(children=(worker("a", Shutdown.timeout(5000)), nested))) == 38  # 7.5 s + 30
    assert stop_timeout(SupervisorSpec(children=(worker("a", INFINITY),))) is None


def test_titles_round_trip() -> None:
    assert title("default", "registry#3") == "supervise[default] registry#3"
    assert parse_title("supervise[default] registry#3\0\0\0") == ("default", "registry#3")
    assert parse_title("python -m supervisor_tree.cli start") is None


def test_heart_backoff_doubles_up_to_its_cap() -> None:
    policy = HeartPolicy(initial=0.5, factor=2.0, cap=3.0)
    assert [policy.delay(n) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
