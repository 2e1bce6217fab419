"""node/logfiles and the event log's rotation: bounded files, and readers that see across a rotation."""

from __future__ import annotations

import os
from pathlib import Path

from supervisor_tree.node.eventlog import EventLog, follow_events, read_events
from supervisor_tree.node.logfiles import LogLimits, SharedLog, generations, rotate


def test_rotate_keeps_the_newest_backups(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    for n in range(5):
        path.write_text(f"{n}\n")
        rotate(path, backups=3)
    assert not path.exists()
    assert [p.read_text() for p in generations(path)] == ["2\n", "3\n", "4\n"]  # oldest first
    assert {p.name for p in tmp_path.iterdir()} == {"events.jsonl.1", "events.jsonl.2", "events.jsonl.3"}


def test_the_event_log_rotates_by_size_and_read_events_reads_across(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path, limits=LogLimits(max_bytes=4096, backups=2))
    for n in range(100):
        log.emit("exited", supervisor="root", child=f"w{n}", reason="killed")
    log.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.jsonl", "events.jsonl.1", "events.jsonl.2"]
    assert all(p.stat().st_size <= 4096 + 200 for p in tmp_path.iterdir())
    seqs = [r["seq"] for r in read_events(path)]
    assert seqs == list(range(seqs[0], 101)) and len(seqs) > 4096 // 200  # the newest, in order, from three files


def test_follow_events_goes_on_across_a_rotation(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path, limits=LogLimits(max_bytes=4096, backups=2))
    log.emit("node_started", supervisor="root")
    batches = [range(n, n + 7) for n in range(0, 63, 7)]

    def running() -> bool:  # asked whenever the follower is idle: the writer's next batch, if any
        if not batches:
            return False
        for n in batches.pop(0):
            log.emit("exited", supervisor="root", child=f"w{n}", reason="killed")
        return True

    seen = [r["seq"] for r in follow_events(path, running, poll=0)]
    log.close()
    assert len(generations(path)) == 3  # it rotated twice while followed
    assert seen == list(range(2, 65))  # everything after it started, across both rotations


def test_node_log_is_copied_and_truncated_under_its_writers(tmp_path: Path) -> None:
    path = tmp_path / "node.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)  # as a detached node's stderr
    try:
        shared = SharedLog(path, LogLimits(max_bytes=4096, backups=2), fd=fd)
        os.write(fd, b"x" * 4000 + b"\n")
        assert not shared.check()
        os.write(fd, b"y" * 200 + b"\n")
        assert shared.check()
        assert path.stat().st_size == 0 and (tmp_path / "node.log.1").stat().st_size == 4202
        os.write(fd, b"after\n")  # the same descriptor writes on, at the start of the emptied file
        assert path.read_bytes() == b"after\n"
    finally:
        os.close(fd)
    assert SharedLog.of_this_process(path, LogLimits()) is None  # pytest's stderr is not node.log


def test_observe_reads_on_across_a_rotation_and_keeps_its_counts(tmp_path: Path) -> None:
    from supervisor_tree.observe.events import EventTail

    path = tmp_path / "events.jsonl"
    log = EventLog(path, limits=LogLimits(max_bytes=4096, backups=2))
    tail = EventTail(path)
    log.emit("node_started", supervisor="root")
    seen = [r["seq"] for r in tail.poll()]
    for n in range(30):  # about one rotation's worth, read in three polls
        log.emit("restarting", supervisor="root", child="db")
        if n % 10 == 9:
            seen += [r["seq"] for r in tail.poll()]
    log.close()
    assert (tmp_path / "events.jsonl.1").exists()  # it did rotate in between
    assert seen == list(range(1, 32)) and tail.restarts["db"] == 30  # nothing missed, nothing reset
