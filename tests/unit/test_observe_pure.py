"""observe/'s pure parts: slopes, series, gates, health checks, queue ranking, metric families, the event tail."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from supervisor_tree.observe import health
from supervisor_tree.observe.events import EventTail
from supervisor_tree.observe.memwatch import MIB, Watch, over_gate, slope_mib_per_min, slopes_of
from supervisor_tree.observe.metrics import OTHER, _bounded, _worker_families
from supervisor_tree.observe.queues import deepest
from supervisor_tree.observe.snapshot import Snapshot, SupervisorRow, WorkerRow
from supervisor_tree.wire import channel
from supervisor_tree.wire.auth import FrameKey
from supervisor_tree.wire.channel import ReplySender
from supervisor_tree.worker.mailbox import Backlog


def row(worker: str, **kw: object) -> WorkerRow:
    base: dict[str, object] = dict(
        id=worker, supervisor="root", state="running", restart="permanent", pid=100, generation=1, uptime=1.0,
        cpu=1.0, cpu_seconds=0.5, rss=30 * MIB, mailbox=0, mailbox_limit=None, calls=0, call_rate=0.0, p99_ms=0.1,
        restarts=0, recent_restarts=0, headroom=5, stats={},
    )
    base.update(kw)
    return WorkerRow(**base)  # type: ignore[arg-type]


def snap(*workers: WorkerRow, sups: tuple[SupervisorRow, ...] = (), tree: object = "default") -> Snapshot:
    sups = sups or (SupervisorRow("root", "one_for_one", 5, 10, 0, "running"),)
    return Snapshot(0.0, {"name": "t", "pid": 1}, {"path": "root"} if tree == "default" else None,  # type: ignore[arg-type]
                    workers, sups, False)


# ---------------------------------------------------------------------- slopes and series


def test_slope_of_a_straight_line_in_mib_per_minute() -> None:
    points = [(t, 100 * MIB + int(t * MIB / 60 * 3)) for t in range(0, 20, 2)]  # 3 MiB/min
    assert slope_mib_per_min(points) == pytest.approx(3.0, rel=1e-3)
    assert slope_mib_per_min(points[:3]) is None  # too few samples
    assert slope_mib_per_min([(0.0, 0), (0.5, 1), (1.0, 2), (1.5, 3)]) is None  # too short a span


def test_a_page_of_noise_over_seconds_is_not_a_leak_but_steady_growth_is() -> None:
    assert not over_gate(1.2, span_s=5.0, gate=1.0)  # 0.1 MiB in 5 s: pages, not a leak
    assert over_gate(5.0, span_s=60.0, gate=1.0)
    assert not over_gate(0.9, span_s=600.0, gate=1.0)
    assert not over_gate(None, span_s=60.0, gate=1.0)


def test_a_restart_starts_a_new_series() -> None:
    watch = Watch()
    for t in range(5):
        watch.add(snap(row("db", rss=(40 + t) * MIB)), now=float(t))
    for t in range(5, 10):  # restarted: a new pid and generation, its memory back at the start
        watch.add(snap(row("db", pid=200, generation=2, rss=30 * MIB)), now=float(t))
    assert sorted(watch.series) == [("db", 1), ("db", 2)]
    (current,) = watch.current()
    assert current.generation == 2 and current.slope == 0.0
    assert watch.series[("db", 1)].slope == pytest.approx(60.0)
    per, tree = slopes_of(watch.current())
    assert tree == 0.0 and watch.restarts("db") == 1


# ---------------------------------------------------------------------- health


def test_gates_parse_and_name_what_is_wrong() -> None:
    assert health.Gates.parse("p99_ms=2.5,mailbox=50") == health.Gates(p99_ms=2.5, mailbox=50, slope=1.0)
    assert health.Gates.parse(None) == health.Gates()
    for bad, says in (("p99", "NAME=NUMBER"), ("latency=3", "NAME=NUMBER"), ("slope=x", "must be a number"),
                      ("mailbox=-1", ">= 0")):
        with pytest.raises(health.GateError, match=says):
            health.Gates.parse(bad)


def test_health_levels() -> None:
    gates = health.Gates()
    assert health.evaluate(snap(row("a")), gates).level is health.Level.OK
    cases = [
        (row("a", state="not_running"), health.Level.CRITICAL, "running"),
        (row("a", state="not_running", restart="temporary"), health.Level.OK, "all"),
        (row("a", state="restarting"), health.Level.WARN, "restarting"),
        (row("a", state="starting"), health.Level.WARN, "restarting"),
        (row("a", recent_restarts=3), health.Level.WARN, "restarting"),
        (row("a", p99_ms=7.5), health.Level.WARN, "p99"),
        (row("a", mailbox=1500), health.Level.WARN, "mailbox"),
        (row("a", mailbox=90, mailbox_limit=100), health.Level.WARN, "mailbox"),
        (row("a", mailbox=101, mailbox_limit=100), health.Level.CRITICAL, "mailbox"),
    ]
    for worker, level, check in cases:
        report = health.evaluate(snap(worker), gates)
        assert (report.level, report.checks[0].name) == (level, check), worker
    at_edge = snap(row("a"), sups=(SupervisorRow("root/db", "one_for_all", 3, 10, 3, "running"),))
    assert [(c.name, c.subject) for c in health.evaluate(at_edge, gates).problems()] == [("headroom", "root/db")]
    assert health.evaluate(snap(tree=None), gates).level is health.Level.CRITICAL


def test_health_flags_only_the_growing_worker() -> None:
    watch = Watch()
    for t in range(0, 30, 3):
        watch.add(snap(row("leaky", rss=(50 * MIB + t * MIB // 6)), row("steady", pid=101)), now=float(t))  # 10 MiB/min
    report = health.evaluate(snap(row("leaky"), row("steady")), health.Gates(), watch.current(), 30.0)
    assert [(c.name, c.subject, c.level) for c in report.problems()] == [("memory", "leaky", health.Level.WARN)]


# ---------------------------------------------------------------------- queues


def test_deepest_ranks_mailboxes_and_queue_components() -> None:
    rows = deepest(snap(
        row("idle"),
        row("busy", mailbox=400, mailbox_limit=500, stats={"mailbox_policy": "reject", "mailbox_rejected": 7}),
        row("jobs", mailbox=3, stats={"worker": {"depth": 80, "capacity": 100, "high_water": 90, "full_refusals": 2}}),
        row("gone", state="restarting", mailbox=999),
    ), top=3)
    assert [(r.worker, r.kind, r.depth) for r in rows] == [("busy", "mailbox", 400), ("jobs", "queue", 80), ("jobs", "mailbox", 3)]
    assert (rows[0].fill, rows[0].policy, rows[0].lost) == (0.8, "reject", 7)
    assert (rows[1].limit, rows[1].lost, rows[1].high_water) == (100, 2, 90)


# ---------------------------------------------------------------------- metrics


def test_worker_series_are_capped_and_the_rest_summed() -> None:
    workers = tuple(row(f"m{i}", rss=MIB, calls=i, stats={"calls": i}, p99_ms=float(i)) for i in range(5))
    rows = _bounded(workers, cap=3)
    assert [w for w, _, _ in rows] == ["m0", "m1", "m2", OTHER]
    families = {f.name: f for f in _worker_families(rows)}
    rss = {s.labels["worker"]: s.value for s in families["supervise_worker_rss_bytes"].samples}
    assert rss[OTHER] == 2 * MIB and len(rss) == 4
    p99 = {s.labels["worker"]: s.value for s in families["supervise_worker_call_p99_seconds"].samples}
    assert p99[OTHER] == pytest.approx(0.004)  # the worst of the rest
    calls = {s.labels["worker"]: s.value for s in families["supervise_worker_calls"].samples if s.name.endswith("_total")}
    assert calls[OTHER] == 3 + 4


# ---------------------------------------------------------------------- event tail


def test_event_tail_reads_whole_lines_and_counts_per_node_run(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    recs = [{"seq": 1, "event": "node_started"}, {"seq": 2, "event": "restarting", "child": "db", "ts": 10.0},
            {"seq": 3, "event": "reached_max_restart_intensity", "supervisor": "root/core"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs) + '{"seq": 4, "event": "rest')  # half a line
    tail = EventTail(path)
    assert [r["seq"] for r in tail.poll()] == [1, 2, 3]
    assert tail.restarts["db"] == 1 and tail.escalations["root/core"] == 1 and tail.restarts_since("db", 11.0) == 0
    with path.open("a") as f:
        f.write('arting", "child": "db", "ts": 12.0}\n' + json.dumps({"seq": 1, "event": "node_started"}) + "\n")
    assert [r["seq"] for r in tail.poll()] == [4, 1]
    assert tail.restarts["db"] == 0 and [r["seq"] for r in tail.recent] == [1]  # a new node run: counts restart
    assert tail.poll() == []


# ---------------------------------------------------------------------- the worker's mailbox (real sockets)

KEY = FrameKey(bytes(32))  # the run's key, as the worker holds it


@pytest.fixture
def mailbox() -> Iterator[tuple[zmq.Socket[bytes], zmq.Socket[bytes], zmq.Socket[bytes], ReplySender]]:
    ctx = zmq.Context()
    pull, push, replies_in = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
    pull.bind("inproc://mbx")
    push.connect("inproc://mbx")
    replies_in.bind("inproc://replies")
    sender = ReplySender(ctx)
    yield pull, push, replies_in, sender
    sender.close()
    for s in (pull, push, replies_in):
        s.close(0)
    ctx.term()


def _fill(push: zmq.Socket[bytes], casts: int, calls: int) -> None:
    for i in range(casts):
        push.send(channel.encode_cast(KEY, ("cast", i)))
    for i in range(calls):
        push.send(channel.encode_call(KEY, i + 1, "inproc://replies", ("call", i)))


def _drain(box: Backlog, sock: zmq.Socket[bytes]) -> list[object]:
    recv = box.before_round(sock.recv)
    out = []
    while True:
        try:
            frame = recv(zmq.NOBLOCK)
        except zmq.Again:
            return out
        out.append(_payload(frame))


def _payload(frame: bytes) -> object:
    msg = channel.decode(KEY, frame)
    return channel.loads_payload(msg.payload) if isinstance(msg, channel.Call) else msg.payload  # type: ignore[union-attr]


def _wait_queued(sock: zmq.Socket[bytes]) -> None:
    assert sock.poll(5000, zmq.POLLIN)  # inproc delivers at once; the poll makes it certain


def test_probe_measures_the_depth_and_serves_in_order(mailbox: Any) -> None:
    pull, push, _, sender = mailbox
    box = Backlog(pull, sender, "w#1", KEY)
    assert box.figures() == {"mailbox_depth": 0}
    _fill(push, 50, 0)
    _wait_queued(pull)
    recv = box.before_round(pull.recv)
    assert box.depth() == 50 and box.figures()["mailbox_depth"] == 50
    assert _payload(recv(zmq.NOBLOCK)) == ("cast", 0)
    assert box.depth() == 49


@pytest.mark.parametrize("policy, kept", [("reject", list(range(10))), ("drop_oldest", list(range(20, 30)))])
def test_overflow_policies_keep_the_limit_and_answer_refused_calls(mailbox: Any, policy: str, kept: list[int]) -> None:
    pull, push, replies_in, sender = mailbox
    box = Backlog(pull, sender, "w#1", KEY, limit=10, policy=policy)
    _fill(push, 25, 5)  # 30 messages: the casts 0..24, then the calls 0..4 (inproc: queued when sent)
    _wait_queued(pull)
    got = _drain(box, pull)
    everything = [("cast", i) for i in range(25)] + [("call", i) for i in range(5)]
    assert got == [everything[i] for i in kept]
    fig = box.figures()
    assert fig["mailbox_limit"] == 10 and fig["mailbox_policy"] == policy
    assert fig["mailbox_dropped" if policy == "drop_oldest" else "mailbox_rejected"] == 20
    if policy == "reject":  # the five calls were among the newest: each got MailboxFull
        errors = [channel.decode(KEY, replies_in.recv()) for _ in range(5)]
        assert all(isinstance(e, channel.Reply) and not e.ok for e in errors)
        assert "MailboxFull" in str(errors[0].value)  # type: ignore[union-attr]
    else:
        assert not replies_in.poll(50)  # the calls were the newest: kept, not refused


def test_backpressure_takes_no_more_than_the_limit(mailbox: Any) -> None:
    pull, push, _, sender = mailbox
    box = Backlog(pull, sender, "w#1", KEY, limit=5, policy="backpressure")
    _fill(push, 12, 0)
    _wait_queued(pull)
    box.before_round(pull.recv)
    assert len(box.pending) == 5 and box.figures()["mailbox_rejected"] == 0


def test_a_long_round_probes_again_when_due(mailbox: Any) -> None:
    pull, push, _, sender = mailbox
    box = Backlog(pull, sender, "w#1", KEY)
    _fill(push, 3, 0)
    _wait_queued(pull)
    recv = box.before_round(pull.recv)
    for _ in range(3):
        recv(zmq.NOBLOCK)
    _fill(push, 7, 0)  # arrived while the round's handlers ran
    _wait_queued(pull)
    recv(zmq.NOBLOCK)  # not due yet: straight from the socket
    assert box.depth() == 0
    box._next_probe = 0.0  # PROBE_EVERY_S has passed (a slow handler)
    recv(zmq.NOBLOCK)
    assert box.depth() == 5  # the probe found 6; one is being served
