"""systemd's notify protocol, spoken to a datagram socket standing in for NOTIFY_SOCKET; the unit file."""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor_tree.node.systemd import Notifier, unit_file


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    sock.settimeout(5.0)
    yield sock, path
    sock.close()


def test_without_notify_socket_nothing_is_sent_and_nothing_fails() -> None:
    env: dict[str, str] = {}
    notifier = Notifier.from_environ(env)
    assert not notifier.active
    notifier.ready("up")
    notifier.tick(1e9)
    notifier.stopping("bye")


def test_ready_then_watchdog_at_half_the_timeout_then_stopping(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid()), "OTHER": "kept"}
    notifier = Notifier.from_environ(env)
    assert env == {"OTHER": "kept"}  # taken out: the fork server and the workers must not inherit them
    notifier.tick(0.0)  # before READY=1: systemd's watchdog is not running yet
    notifier.ready("tree t up: 3 workers")
    notifier.tick(10.0)
    notifier.tick(10.5)  # within the interval (1 s): nothing
    notifier.tick(11.0)
    notifier.status("restarting")
    notifier.stopping("shutdown requested")
    got = [sock.recv(4096).decode() for _ in range(5)]
    assert got == [f"READY=1\nSTATUS=tree t up: 3 workers\nMAINPID={os.getpid()}", "WATCHDOG=1", "WATCHDOG=1",
                   "STATUS=restarting", "STOPPING=1\nSTATUS=shutdown requested"]
    notifier.close()


def test_a_watchdog_meant_for_another_process_is_ignored(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"})
    notifier.ready("up")
    notifier.tick(100.0)
    notifier.stopping("bye")
    assert sock.recv(4096).startswith(b"READY=1")
    assert sock.recv(4096).startswith(b"STOPPING=1")  # no WATCHDOG=1 between them
    notifier.close()


def test_an_abstract_socket_address() -> None:
    name = f"supervise-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5.0)
    try:
        notifier = Notifier.from_environ({"NOTIFY_SOCKET": "@" + name})
        notifier.status("hello")
        assert sock.recv(4096) == b"STATUS=hello"
        notifier.close()
    finally:
        sock.close()


def test_a_vanished_notify_socket_is_warned_about_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier(str(tmp_path / "gone"))
    notifier.status("a")
    notifier.status("b")
    warnings = [r for r in caplog.records if "notifications dropped" in r.getMessage()]
    assert len(warnings) == 1
    notifier.close()


def test_a_receiver_that_does_not_read_never_blocks_the_sender(listener: tuple[socket.socket, str],
                                                                caplog: pytest.LogCaptureFixture) -> None:
    _, path = listener
    notifier = Notifier(path, watchdog_usec=2)  # a ping every microsecond, and nobody reads
    notifier.ready("up")
    for n in range(1000):  # far beyond the receiver's queue (net.unix.max_dgram_qlen, 10 by default)
        notifier.tick(float(n))
    assert [r.getMessage() for r in caplog.records if "notifications dropped" in r.getMessage()] == [
        f"systemd notify socket {path}: its queue is full; notifications dropped"]
    notifier.close()


def test_the_units_reload_command_sends_sighup_to_the_main_process(tmp_path: Path) -> None:
    unit = unit_file(name="shop", exec_start=["/usr/bin/python3", "-m", "supervisor_tree.cli", "start", "app.toml"],
                     working_directory=str(tmp_path), watchdog_sec=30, stop_timeout_sec=40)
    service = unit.split("[Service]\n", 1)[1].split("\n\n", 1)[0].splitlines()
    reload = [line.removeprefix("ExecReload=") for line in service if line.startswith("ExecReload=")]
    assert reload == ["/bin/kill -HUP $MAINPID"]
    # What systemd runs for `systemctl reload`, $MAINPID being a process that waits for SIGHUP.
    got = tmp_path / "got"
    main = subprocess.Popen([sys.executable, "-c", "import signal, sys; "
                             f"signal.signal(signal.SIGHUP, lambda *_: open({str(got)!r}, 'w').close() or sys.exit(0)); "
                             "print('ready', flush=True); signal.pause()"], stdout=subprocess.PIPE, text=True)
    with main:
        try:
            assert main.stdout is not None and main.stdout.readline() == "ready\n"
            argv = shlex.split(reload[0].replace("$MAINPID", str(main.pid)))
            assert subprocess.run(argv, timeout=10).returncode == 0
            assert main.wait(10) == 0 and got.exists()
        finally:
            main.kill()
