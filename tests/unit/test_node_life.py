"""The node's ending in words (node/life.py): pure bookkeeping over the reports the node writes."""

from __future__ import annotations

import signal

from supervisor_tree.node.life import Life
from supervisor_tree.node.systemd import Notifier
from supervisor_tree.otp import supervisor as sv
from supervisor_tree.spec import SHUTDOWN, NodeSpec, SupervisorSpec, shutdown_with

R = sv.ReportKind


class Words(Life):
    """Life with the state node.Node gives it, and a list for what it feeds the root."""

    def __init__(self) -> None:
        self.spec = NodeSpec(tree=SupervisorSpec())
        self.sups = {"root": object()}  # type: ignore[dict-item]
        self.events = None
        self.notifier = Notifier(None)
        self.started, self.stopping, self.exit_reason = True, False, None
        self._signals: list[int] = []
        self.fed: list[object] = []
        self.killed = False
        self._init_life()

    def feed(self, path: str, event: object) -> None:
        self.fed.append((path, event))

    def _kill_all(self) -> None:
        self.killed = True


def test_intensity_reports_get_the_last_exit_and_the_limit_and_nest() -> None:
    w = Words()
    w.describe_report("root/mid", R.EXITED, "p", "{error,boom}", None)
    reason, detail = w.describe_report("root/mid", R.REACHED_MAX_RESTART_INTENSITY, "p", None,
                                       {"intensity": 1, "period": 10})
    assert reason == "{error,boom}" and detail == {"intensity": 1, "period": 10, "limit": "1 restart in 10 s"}
    w.describe_report("root", R.EXITED, "mid", SHUTDOWN, None)
    w.describe_report("root", R.REACHED_MAX_RESTART_INTENSITY, "mid", None, {"intensity": 3, "period": 5})
    w._on_root_exit(SHUTDOWN)
    assert w.ending == ('supervisor root reached its restart limit (3 restarts in 5 s): child "mid" last exited '
                        'shutdown; supervisor root/mid reached its restart limit (1 restart in 10 s): child "p" '
                        "last exited {error,boom}")
    assert not w.ended_on_request


def test_a_start_failure_names_the_child() -> None:
    w = Words()
    w.started = False
    w._on_root_exit(shutdown_with("failed_to_start_child,db,ConnectionRefusedError()"))
    assert w.ending == 'the tree failed to start: failed_to_start_child "db": ConnectionRefusedError()'


def test_a_stop_request_is_a_success_and_a_second_signal_adds_to_it() -> None:
    w = Words()
    w._signals.append(signal.SIGINT)
    w._handle_signals()
    assert (w.ending, w.ended_on_request, w.stopping) == ("shutdown requested (SIGINT received)", True, True)
    assert w.fed == [("root", sv.StopRequested(SHUTDOWN))]
    w._signals.append(signal.SIGINT)
    w._handle_signals()
    assert w.killed and w.ending == "shutdown requested (SIGINT received); then a second SIGINT: every worker killed"


def test_the_first_ending_wins() -> None:
    w = Words()
    w._stop_tree("fork_server_lost: gone for good")
    w.request_stop()  # a user's stop after the failure is no success
    w._on_root_exit(SHUTDOWN)
    assert (w.ending, w.ended_on_request) == ("fork_server_lost: gone for good", False)
